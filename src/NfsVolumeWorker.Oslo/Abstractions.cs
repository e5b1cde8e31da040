using NfsVolumeWorker.Contracts;

namespace NfsVolumeWorker.Oslo;

/// <summary>Puts a native command into the worker's partitioned pipeline. Returns once the broker has
/// confirmed it (the adapter acknowledges the oslo message only then); throws when it has not.</summary>
public interface ICommandPipeline
{
    Task SubmitAsync(VolumeCommand command, CancellationToken cancellationToken);
}

/// <summary>Where volumes and snapshots live, for requests that do not say (Cinder's create_snapshot carries
/// only the Snapshot; create_volume from a snapshot carries only the snapshot id). Implemented by the host.</summary>
public interface IVolumeLocator
{
    /// <summary>The configured shares, as Cinder names them.</summary>
    IReadOnlyList<string> Shares { get; }

    /// <summary>The share that holds <paramref name="volumeId"/>'s files, or null when none does.</summary>
    string? ShareOfVolume(Guid volumeId);

    /// <summary>The volume and share of a snapshot, or null when it is not known.</summary>
    (Guid VolumeId, string Share)? VolumeOfSnapshot(Guid snapshotId);

    /// <summary>Records where a volume is (from requests and events), so the next lookup costs nothing.</summary>
    void RememberVolume(Guid volumeId, string share);

    /// <summary>Records a snapshot's volume and share (persistently, where the implementation can).</summary>
    void RememberSnapshot(Guid snapshotId, Guid volumeId, string share);

    /// <summary>The share for a new volume of <paramref name="sizeBytes"/> (the one with most free space).</summary>
    string ChooseShareForNewVolume(long sizeBytes);
}

/// <summary>What Cinder's NFS driver returns from initialize_connection, after its format and size checks.</summary>
public sealed record OsloConnectionInfo(string Export, string Name, string Format, string? MountOptions, string MountPointBase);

/// <summary>Reads a volume's chain to answer initialize_connection. Implemented by the host.</summary>
public interface IConnectionInfoProvider
{
    /// <exception cref="OsloServiceException">The volume cannot be connected (Cinder's InvalidVolume / VolumeNotFound).</exception>
    OsloConnectionInfo Connect(string share, Guid volumeId, long expectedSizeBytes, VolumeFormat? baseFormat);

    /// <summary>Total and free capacity of all shares in GiB (Cinder's volume stats).</summary>
    (double TotalGb, double FreeGb) Capacity();
}

/// <summary>A failure to answer a call, with its code: answered as Cinder's <c>VolumeNotFound</c> for
/// <see cref="ErrorCodes.VolumeNotFound"/>, else as <c>InvalidVolume</c>.</summary>
public sealed class OsloServiceException : Exception
{
    public OsloServiceException() : this(ErrorCodes.InternalError, "error") { }
    public OsloServiceException(string message) : this(ErrorCodes.InternalError, message) { }
    public OsloServiceException(string message, Exception inner) : base(message, inner) => Code = ErrorCodes.InternalError;
    public OsloServiceException(ErrorCode code, string message) : base(message) => Code = code;

    /// <summary>Why the call failed.</summary>
    public ErrorCode Code { get; }
}

/// <summary>
/// The durable copy, on the shares, of what the adapter needs to send a command's <c>.end</c>/<c>.error</c>
/// notification, so that it survives a restart and whichever instance sees the outcome can send it.
/// Implemented by the host (<c>.nfsvolumeworker/oslo-pending/&lt;command-id&gt;.json</c>).
/// </summary>
public interface IPendingNotificationStore
{
    /// <summary>Writes <paramref name="record"/> for <paramref name="commandId"/> on <paramref name="share"/>,
    /// atomically and durably, replacing an earlier one. Throws when it cannot.</summary>
    void Save(string share, Guid commandId, ReadOnlySpan<byte> record);

    /// <summary>Takes the record of <paramref name="commandId"/> for this caller alone (an atomic rename on the
    /// share: of several claimers, exactly one gets it). Looks on <paramref name="share"/> first when given, then
    /// on the other shares: one file-system operation per share. Null when no share holds it (never written, or
    /// sent already) or another claimer took it first.</summary>
    IPendingNotificationClaim? TryClaim(Guid commandId, string? share);

    /// <summary>The records waiting on every share (one listing of the folder per share), for start-up. Claims
    /// older than <paramref name="staleClaimAge"/> (their claimer died before sending) are given back first.</summary>
    IReadOnlyList<(string Share, Guid CommandId)> ListPending(TimeSpan staleClaimAge);
}

/// <summary>A record taken by <see cref="IPendingNotificationStore.TryClaim"/>. Disposing it without
/// <see cref="Complete"/> gives it back (for another attempt).</summary>
public interface IPendingNotificationClaim : IDisposable
{
    /// <summary>The share that held the record.</summary>
    string Share { get; }

    /// <summary>The record as saved.</summary>
    byte[] Record { get; }

    /// <summary>Deletes the record: call once the notification is confirmed by the broker.</summary>
    void Complete();
}

/// <summary>The terminal event the host recorded for a command (its outcome record on the share), if any.
/// Implemented by the host.</summary>
public interface ICommandOutcomeSource
{
    /// <summary>The command's terminal event, or null when it has not finished (or its record was pruned).</summary>
    ITerminalEvent? OutcomeOf(string share, Guid commandId);
}

/// <summary>
/// Who serves a backend's Cinder queues when several instances run the adapter: exactly one at a time, the one
/// that holds the lease. The others wait as standbys and take over when the holder dies or stops (a queue
/// consumed by two adapters at once could run two casts for one volume out of order). Implemented by the host.
/// </summary>
public interface IAdapterLease
{
    /// <summary>Waits until this instance holds the lease for <paramref name="host"/>; disposing the result gives it up.</summary>
    Task<IDisposable> AcquireAsync(string host, CancellationToken cancellationToken);
}

/// <summary>The lease when the host provides none: granted at once (one adapter per backend).</summary>
internal sealed class UncontestedAdapterLease : IAdapterLease
{
    public Task<IDisposable> AcquireAsync(string host, CancellationToken cancellationToken) => Task.FromResult<IDisposable>(new Released());

    private sealed class Released : IDisposable
    {
        public void Dispose()
        {
        }
    }
}
