namespace NfsVolumeWorker.Storage.Engine;

/// <summary>How an operation ended.</summary>
public enum OperationOutcome
{
    /// <summary>The operation changed the disk and is complete and durable.</summary>
    Completed,
    /// <summary>The disk already was in the requested state (a repeated or redelivered request); nothing changed.</summary>
    AlreadyDone,
    /// <summary>Not started, nothing changed: the request allowed only a metadata-only run and this one would have moved
    /// data (<see cref="DeleteSnapshotRequest.OnlyIfNothingToMove"/>). The caller runs it again without that limit.</summary>
    NotStarted,
}

/// <summary>The result of a successful operation.</summary>
/// <param name="Outcome">Whether work was done.</param>
/// <param name="Message">One sentence for logs and operators.</param>
/// <param name="ActiveFile">The volume's active file after the operation (for clones: the new volume's file), when it exists.</param>
/// <param name="FinishedInterrupted">Interrupted operations on the volume that were finished first (from the journal).</param>
public sealed record OperationResult(OperationOutcome Outcome, string Message, string? ActiveFile, IReadOnlyList<string> FinishedInterrupted)
{
    public static OperationResult Done(string message, string? active) => new(OperationOutcome.Completed, message, active, []);

    public static OperationResult Already(string message, string? active) => new(OperationOutcome.AlreadyDone, message, active, []);

    public static OperationResult NotStarted(string message, string? active) => new(OperationOutcome.NotStarted, message, active, []);
}

/// <summary>What Cinder's NFS driver returns from initialize_connection.</summary>
/// <param name="DriverVolumeType">Always <c>nfs</c>.</param>
/// <param name="Export">The share, e.g. <c>192.0.2.10:/export</c>.</param>
/// <param name="Name">The active file name.</param>
/// <param name="Format"><c>raw</c> or <c>qcow2</c>.</param>
/// <param name="Options">Mount options, or null.</param>
/// <param name="MountPointBase">The directory the share is mounted under.</param>
/// <param name="VirtualSize">Virtual size of the active image in bytes.</param>
public sealed record ConnectionInfo(string DriverVolumeType, string Export, string Name, string Format, string? Options, string MountPointBase, long VirtualSize);

/// <summary>Progress of a long copy or merge.</summary>
/// <param name="VolumeId">The volume being worked on.</param>
/// <param name="Phase">e.g. <c>copy</c>, <c>merge</c>.</param>
/// <param name="Fraction">0..1.</param>
/// <param name="BytesDone">Bytes of <paramref name="BytesTotal"/> done (the fraction of it), when the total is known.</param>
/// <param name="BytesTotal">What the operation goes through: the data a copy copies, the virtual size a merge scans.</param>
/// <param name="TimeLeft">Estimated from the rate so far; null until it can be (see <see cref="EstimateTimeLeft"/>).</param>
public sealed record OperationProgress(Guid VolumeId, string Phase, double Fraction, long? BytesDone = null, long? BytesTotal = null, TimeSpan? TimeLeft = null)
{
    /// <summary>Below this much elapsed time or done fraction the rate says little (qemu-img's first reports
    /// come before the copy has settled), so no estimate is given.</summary>
    public static readonly TimeSpan MinimumElapsedForEstimate = TimeSpan.FromSeconds(1);

    public const double MinimumFractionForEstimate = 0.01;

    /// <summary>Time left at the average rate so far: elapsed × (1 − f) / f; null while too little is done to tell.</summary>
    public static TimeSpan? EstimateTimeLeft(TimeSpan elapsed, double fraction)
    {
        if (double.IsNaN(fraction) || fraction < MinimumFractionForEstimate || elapsed < MinimumElapsedForEstimate)
        {
            return null;
        }
        if (fraction >= 1)
        {
            return TimeSpan.Zero;
        }
        return TimeSpan.FromMilliseconds(Math.Round(elapsed.TotalMilliseconds * (1 - fraction) / fraction));
    }
}
