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

/// <summary>A failure to answer a call as a Cinder exception (class in cinder.exception).</summary>
public sealed class OsloServiceException : Exception
{
    public OsloServiceException() : this("InvalidVolume", "error") { }
    public OsloServiceException(string message) : this("InvalidVolume", message) { }
    public OsloServiceException(string message, Exception inner) : base(message, inner) => CinderClass = "InvalidVolume";
    public OsloServiceException(string cinderClass, string message) : base(message) => CinderClass = cinderClass;

    /// <summary>e.g. <c>InvalidVolume</c>, <c>VolumeNotFound</c>.</summary>
    public string CinderClass { get; }
}
