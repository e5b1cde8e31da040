using NfsVolumeWorker.Storage.Layout;

namespace NfsVolumeWorker.Storage.Engine;

/// <summary>What every engine request names: the share and the volume whose chain is read or changed,
/// plus what the caller knows about the volume that the engine must refuse.</summary>
/// <param name="Share">The share as Cinder names it (<c>host:/export</c>) or null for the only configured share.</param>
/// <param name="VolumeId">The volume (for clones: the source).</param>
public abstract record VolumeRequest(string? Share, Guid VolumeId)
{
    /// <summary>Cinder's <c>encryption_key_id</c>; any value makes the engine refuse the request.</summary>
    public string? EncryptionKeyId { get; init; }

    /// <summary>True when the volume is attached to an instance; the engine refuses (no hypervisor to coordinate with).</summary>
    public bool Attached { get; init; }

    /// <summary>The base image's format when the caller knows it (e.g. from volume admin metadata).</summary>
    public ImageFormat? BaseFormat { get; init; }

    /// <summary>How long to wait for the volume's lock before <see cref="Errors.StorageErrorCode.VolumeBusy"/>; null:
    /// <see cref="VolumeEngineOptions.LockTimeout"/>. Zero tries once: a caller that must not wait behind another
    /// operation (the worker's inline path, which holds a partition meanwhile).</summary>
    public TimeSpan? LockTimeout { get; init; }
}

/// <summary>Create an empty volume of <paramref name="SizeBytes"/>.</summary>
/// <param name="Format">raw or qcow2; null for the configured default (<see cref="VolumeEngineOptions.Qcow2Volumes"/>).</param>
public sealed record CreateVolumeRequest(string? Share, Guid VolumeId, long SizeBytes, ImageFormat? Format = null) : VolumeRequest(Share, VolumeId);

/// <summary>Delete every file of a volume.</summary>
public sealed record DeleteVolumeRequest(string? Share, Guid VolumeId) : VolumeRequest(Share, VolumeId);

/// <summary>Take snapshot <paramref name="SnapshotId"/> of a volume.</summary>
/// <param name="VolumeSizeBytes">The volume's declared size (Cinder's <c>volume.size</c>): the overlay's virtual size,
/// as Cinder's driver makes it; null for the active image's size.</param>
public sealed record CreateSnapshotRequest(string? Share, Guid VolumeId, Guid SnapshotId, long? VolumeSizeBytes = null) : VolumeRequest(Share, VolumeId);

/// <summary>Delete snapshot <paramref name="SnapshotId"/> (any position in the chain).</summary>
public sealed record DeleteSnapshotRequest(string? Share, Guid VolumeId, Guid SnapshotId) : VolumeRequest(Share, VolumeId)
{
    /// <summary>Delete only when it is a metadata-only edit of a few syncs (the newest snapshot, whose overlay maps no
    /// data: <see cref="MergeDirection.NothingToMove"/>, no journal, no qemu-img); any other delete ends
    /// <see cref="OperationOutcome.NotStarted"/> before anything is written. For a caller that holds something else
    /// meanwhile (the worker's inline path, which holds a partition).</summary>
    public bool OnlyIfNothingToMove { get; init; }
}

/// <summary>Create volume <paramref name="NewVolumeId"/> as a full, independent copy of snapshot <paramref name="SnapshotId"/>.</summary>
/// <param name="TargetFormat">null for the configured default.</param>
/// <param name="NewSizeBytes">null to keep the snapshot's size; larger grows the copy.</param>
/// <param name="TargetShare">null for the source's share.</param>
public sealed record CreateVolumeFromSnapshotRequest(
    string? Share, Guid VolumeId, Guid SnapshotId, Guid NewVolumeId,
    ImageFormat? TargetFormat = null, long? NewSizeBytes = null, string? TargetShare = null) : VolumeRequest(Share, VolumeId);

/// <summary>Create volume <paramref name="NewVolumeId"/> as a full copy of volume <see cref="VolumeRequest.VolumeId"/> now.</summary>
public sealed record CloneVolumeRequest(
    string? Share, Guid VolumeId, Guid NewVolumeId,
    ImageFormat? TargetFormat = null, long? NewSizeBytes = null, string? TargetShare = null) : VolumeRequest(Share, VolumeId);

/// <summary>Discard every change since the newest snapshot.</summary>
public sealed record RevertToSnapshotRequest(string? Share, Guid VolumeId, Guid SnapshotId) : VolumeRequest(Share, VolumeId);

/// <summary>Grow a volume to <paramref name="NewSizeBytes"/>.</summary>
public sealed record ExtendVolumeRequest(string? Share, Guid VolumeId, long NewSizeBytes) : VolumeRequest(Share, VolumeId);

/// <summary>Connection info for attaching the volume, after Cinder's format and size checks.</summary>
/// <param name="ExpectedSizeBytes">The volume size the caller expects; the active image must have exactly this virtual size.</param>
public sealed record ConnectionInfoRequest(string? Share, Guid VolumeId, long? ExpectedSizeBytes = null) : VolumeRequest(Share, VolumeId);
