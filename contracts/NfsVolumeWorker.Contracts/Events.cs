using System.Security.Cryptography;

namespace NfsVolumeWorker.Contracts;

/// <summary>What every event carries.</summary>
public interface IVolumeEvent
{
    /// <summary>The command this event answers.</summary>
    Guid CommandId { get; }

    /// <summary>The volume the command concerned (for clones: the source).</summary>
    Guid VolumeId { get; }

    /// <summary>When the worker published the event (UTC).</summary>
    DateTimeOffset Timestamp { get; }
}

/// <summary>The one event that ends a command: a success event or <see cref="CommandFailed"/>.</summary>
public interface ITerminalEvent : IVolumeEvent
{
    /// <summary>True when the disk already was in the requested state (a repeated command): nothing changed.</summary>
    bool AlreadyDone { get; }
}

/// <summary>Base of success events.</summary>
public abstract record VolumeEvent : ITerminalEvent
{
    /// <inheritdoc/>
    public required Guid CommandId { get; init; }

    /// <inheritdoc/>
    public required Guid VolumeId { get; init; }

    /// <summary>The share the volume is on.</summary>
    public required string Share { get; init; }

    /// <inheritdoc/>
    public required DateTimeOffset Timestamp { get; init; }

    /// <inheritdoc/>
    public bool AlreadyDone { get; init; }

    /// <summary>The volume's active file afterwards (for clones: the new volume's file), when it exists.</summary>
    public string? ActiveFile { get; init; }

    /// <summary>A sentence for people.</summary>
    public string? Message { get; init; }
}

/// <summary>The byte ranges of a volume that may differ between two points (answers <see cref="GetChangedExtents"/>):
/// what the images written in between hold, plus any growth; exact while the snapshots in between exist, a safe
/// superset after merges.</summary>
public sealed record ChangedExtentsListed : VolumeEvent
{
    /// <summary>The older point: a snapshot, or null for the base.</summary>
    public Guid? FromSnapshotId { get; init; }

    /// <summary>The newer point: a snapshot, or null for the volume as it is now.</summary>
    public Guid? ToSnapshotId { get; init; }

    /// <summary>The volume's size at the newer point.</summary>
    public required long VirtualSize { get; init; }

    /// <summary>Bytes in all ranges.</summary>
    public required long TotalBytes { get; init; }

    /// <summary>Number of ranges.</summary>
    public required int ExtentCount { get; init; }

    /// <summary>The ranges, sorted and merged, when there are at most <see cref="MaxInlineExtents"/>; else null, and
    /// <see cref="ExtentsFile"/> names a JSON file on the share that holds them.</summary>
    public IReadOnlyList<ExtentRange>? Extents { get; init; }

    /// <summary>Path relative to the share of a JSON array of <see cref="ExtentRange"/>, for long lists.</summary>
    public string? ExtentsFile { get; init; }

    /// <summary>Longer lists go to a file, keeping the event small.</summary>
    public const int MaxInlineExtents = 4096;
}

/// <summary>A range of bytes of a volume.</summary>
/// <param name="Offset">Byte offset.</param>
/// <param name="Length">Bytes.</param>
public sealed record ExtentRange(long Offset, long Length);

/// <summary>A volume was created.</summary>
public sealed record VolumeCreated : VolumeEvent;

/// <summary>A volume's files were deleted.</summary>
public sealed record VolumeDeleted : VolumeEvent;

/// <summary>A snapshot was created.</summary>
public sealed record SnapshotCreated : VolumeEvent
{
    /// <summary>The snapshot.</summary>
    public required Guid SnapshotId { get; init; }
}

/// <summary>A snapshot was deleted (or was not recorded).</summary>
public sealed record SnapshotDeleted : VolumeEvent
{
    /// <summary>The snapshot.</summary>
    public required Guid SnapshotId { get; init; }
}

/// <summary>A new volume was created from a snapshot or cloned from a volume.</summary>
public sealed record VolumeCloned : VolumeEvent
{
    /// <summary>The new volume.</summary>
    public required Guid NewVolumeId { get; init; }

    /// <summary>The snapshot copied, or null for a clone of the volume's current data.</summary>
    public Guid? SnapshotId { get; init; }
}

/// <summary>A volume was reverted to its newest snapshot.</summary>
public sealed record VolumeReverted : VolumeEvent
{
    /// <summary>The snapshot.</summary>
    public required Guid SnapshotId { get; init; }
}

/// <summary>A volume was extended.</summary>
public sealed record VolumeExtended : VolumeEvent
{
    /// <summary>The new size in bytes.</summary>
    public required long NewSizeBytes { get; init; }
}

/// <summary>A command failed. Nothing was changed unless <see cref="ErrorCode"/> says an operation was interrupted.</summary>
public sealed record CommandFailed : ITerminalEvent
{
    /// <inheritdoc/>
    public required Guid CommandId { get; init; }

    /// <inheritdoc/>
    public required Guid VolumeId { get; init; }

    /// <inheritdoc/>
    public required DateTimeOffset Timestamp { get; init; }

    /// <summary>Always false.</summary>
    public bool AlreadyDone => false;

    /// <summary>The command's message type, e.g. <c>CreateSnapshot</c>.</summary>
    public required string CommandType { get; init; }

    /// <summary>A stable, machine-readable code: the <see cref="Contracts.ErrorCode.Name"/> of an entry of
    /// <see cref="ErrorCodes"/> (e.g. <c>SnapshotNotFound</c>, <c>InvalidBackingFile</c>, <c>InvalidRequest</c>).</summary>
    public required string ErrorCode { get; init; }

    /// <summary>What went wrong, for people.</summary>
    public required string Message { get; init; }

    /// <summary>True when the failure may pass (the worker already retried it with back-off): the code's
    /// <see cref="Contracts.ErrorCode.IsTransient"/>.</summary>
    public bool IsTransient { get; init; }
}

/// <summary>Progress of a long copy or merge (several per command; not terminal).</summary>
public sealed record OperationProgressed : IVolumeEvent
{
    /// <inheritdoc/>
    public required Guid CommandId { get; init; }

    /// <inheritdoc/>
    public required Guid VolumeId { get; init; }

    /// <inheritdoc/>
    public required DateTimeOffset Timestamp { get; init; }

    /// <summary><c>copy</c> or <c>merge</c>.</summary>
    public required string Phase { get; init; }

    /// <summary>0..1.</summary>
    public required double Fraction { get; init; }

    /// <summary>Bytes of <see cref="BytesTotal"/> done (<see cref="Fraction"/> of it); null when the total is unknown.</summary>
    public long? BytesDone { get; init; }

    /// <summary>What the step goes through: the data a copy copies, the virtual size a merge scans; null when unknown.</summary>
    public long? BytesTotal { get; init; }

    /// <summary>Estimated seconds left at the rate so far; null until it can be estimated (the first second, the first percent).</summary>
    public double? SecondsLeft { get; init; }
}

/// <summary>Message ids of events, derived from command ids so a repeat is recognisable.</summary>
public static class EventIds
{
    /// <summary>The message id of a command's terminal event: a name-based UUID (SHA-1, version 5 layout) of
    /// the command id. A terminal event published twice (a crash between publishing and acking) carries the
    /// same id both times, so a subscriber drops the second.</summary>
    /// <param name="commandId">The command's id.</param>
    public static Guid TerminalEventId(Guid commandId)
    {
        Span<byte> input = stackalloc byte[24];
        commandId.TryWriteBytes(input, bigEndian: true, out _);
        "terminal"u8.CopyTo(input[16..]);
        Span<byte> hash = stackalloc byte[20];
#pragma warning disable CA5350 // name-based UUID, not a security use
        SHA1.HashData(input, hash);
#pragma warning restore CA5350
        hash[6] = (byte)((hash[6] & 0x0F) | 0x50);
        hash[8] = (byte)((hash[8] & 0x3F) | 0x80);
        return new Guid(hash[..16], bigEndian: true);
    }
}
