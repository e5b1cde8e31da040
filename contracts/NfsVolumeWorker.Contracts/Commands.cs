namespace NfsVolumeWorker.Contracts;

/// <summary>What every command carries. The worker routes a command by <see cref="VolumeId"/> (its partition key).</summary>
public interface IVolumeCommand
{
    /// <summary>Unique id of this command, chosen by the sender. A redelivered or re-sent command with the
    /// same id runs at most once; its terminal event's message id is derived from it.</summary>
    Guid CommandId { get; }

    /// <summary>The volume whose chain the command reads or changes (for clones: the source). Also the partition key.</summary>
    Guid VolumeId { get; }

    /// <summary>The share as Cinder names it (<c>host:/export</c>); null when the worker serves exactly one share.</summary>
    string? Share { get; }
}

/// <summary>Fields a Cinder volume may carry that make the worker refuse the command.</summary>
public abstract record VolumeCommand : IVolumeCommand
{
    /// <inheritdoc/>
    public required Guid CommandId { get; init; }

    /// <inheritdoc/>
    public required Guid VolumeId { get; init; }

    /// <inheritdoc/>
    public string? Share { get; init; }

    /// <summary>Cinder's <c>encryption_key_id</c>; a volume that has one is refused (no key manager here).</summary>
    public string? EncryptionKeyId { get; init; }

    /// <summary>True when the volume is attached to an instance; refused (no hypervisor to coordinate with).</summary>
    public bool Attached { get; init; }

    /// <summary>The base image's format when known (Cinder's admin metadata <c>format</c>); null to read it from the header.</summary>
    public VolumeFormat? BaseFormat { get; init; }
}

/// <summary>Create an empty volume.</summary>
public sealed record CreateVolume : VolumeCommand
{
    /// <summary>Size in bytes.</summary>
    public required long SizeBytes { get; init; }

    /// <summary>Format; null for the worker's configured default.</summary>
    public VolumeFormat? Format { get; init; }
}

/// <summary>Delete every file of a volume.</summary>
public sealed record DeleteVolume : VolumeCommand;

/// <summary>Take a snapshot of a volume.</summary>
public sealed record CreateSnapshot : VolumeCommand
{
    /// <summary>The new snapshot's id.</summary>
    public required Guid SnapshotId { get; init; }

    /// <summary>The volume's size as the caller's records declare it (Cinder's <c>volume.size</c> in bytes): the new
    /// overlay gets this virtual size, as Cinder's driver makes it, so a volume whose file is smaller than its
    /// declared size still passes Cinder's size check afterwards. Null: the active image's size. Never smaller
    /// than the active image.</summary>
    public long? VolumeSizeBytes { get; init; }
}

/// <summary>Delete a snapshot (any position in the chain; an unknown snapshot succeeds with nothing done).</summary>
public sealed record DeleteSnapshot : VolumeCommand
{
    /// <summary>The snapshot to delete.</summary>
    public required Guid SnapshotId { get; init; }
}

/// <summary>Create a new volume as a full, independent copy of a snapshot.</summary>
public sealed record CreateVolumeFromSnapshot : VolumeCommand
{
    /// <summary>The snapshot to copy.</summary>
    public required Guid SnapshotId { get; init; }

    /// <summary>The new volume's id.</summary>
    public required Guid NewVolumeId { get; init; }

    /// <summary>The new volume's format; null for the configured default.</summary>
    public VolumeFormat? TargetFormat { get; init; }

    /// <summary>The new volume's size in bytes; null for the snapshot's size.</summary>
    public long? NewSizeBytes { get; init; }

    /// <summary>The share for the new volume; null for the source's share.</summary>
    public string? TargetShare { get; init; }
}

/// <summary>Create a new volume as a full copy of a volume's current data.</summary>
public sealed record CloneVolume : VolumeCommand
{
    /// <summary>The new volume's id.</summary>
    public required Guid NewVolumeId { get; init; }

    /// <summary>The new volume's format; null for the configured default.</summary>
    public VolumeFormat? TargetFormat { get; init; }

    /// <summary>The new volume's size in bytes; null for the source's size.</summary>
    public long? NewSizeBytes { get; init; }

    /// <summary>The share for the new volume; null for the source's share.</summary>
    public string? TargetShare { get; init; }
}

/// <summary>Discard every change since the newest snapshot.</summary>
public sealed record RevertToSnapshot : VolumeCommand
{
    /// <summary>The newest snapshot of the volume.</summary>
    public required Guid SnapshotId { get; init; }
}

/// <summary>Grow a volume.</summary>
public sealed record ExtendVolume : VolumeCommand
{
    /// <summary>The new size in bytes (not smaller than the current one).</summary>
    public required long NewSizeBytes { get; init; }
}

/// <summary>List the byte ranges of a volume that may differ between two points of its history (for incremental
/// backup). Writes nothing; answered by <see cref="ChangedExtentsListed"/>.</summary>
public sealed record GetChangedExtents : VolumeCommand
{
    /// <summary>The older point: a snapshot, or null for the volume's base.</summary>
    public Guid? FromSnapshotId { get; init; }

    /// <summary>The newer point: a snapshot, or null for the volume as it is now.</summary>
    public Guid? ToSnapshotId { get; init; }
}
