using NfsVolumeWorker.Storage.Info;
using NfsVolumeWorker.Storage.Layout;

namespace NfsVolumeWorker.Storage.Recovery;

/// <summary>How bad a finding is.</summary>
public enum FindingSeverity
{
    /// <summary>Worth knowing, not a problem (e.g. an operation is running now).</summary>
    Info,
    /// <summary>The volume works, but something is left over or not recorded.</summary>
    Warning,
    /// <summary>The volume cannot be used (by the worker or by Cinder) until this is fixed.</summary>
    Error,
}

/// <summary>What <see cref="ShareCheck"/> found. Names are part of the CLI's JSON: add, never rename.</summary>
public enum FindingKind
{
    /// <summary>The .info file is empty, truncated or not an info file.</summary>
    InfoFileCorrupt,
    /// <summary>The .info file names an active file that does not exist.</summary>
    ActiveMissing,
    /// <summary>An image names a backing file that does not exist (Cinder's middle-delete crash).</summary>
    BackingFileMissing,
    /// <summary>The chain is broken in a way no header proves how to fix (loop, wrong base...).</summary>
    ChainBroken,
    /// <summary>An overlay file that neither the chain nor the .info file reaches.</summary>
    OrphanOverlay,
    /// <summary>A snapshot recorded in .info whose overlay is not in the chain.</summary>
    StaleSnapshotRecord,
    /// <summary>An overlay in the chain that no snapshot in .info names.</summary>
    UnrecordedOverlay,
    /// <summary>A hidden temp file left by an interrupted write.</summary>
    TempFile,
    /// <summary>A journaled operation that has not finished.</summary>
    PendingOperation,
    /// <summary>A security rule refused a file (symlink, foreign backing file, foreign name in .info). Never repaired.</summary>
    SecurityRefusal,
    /// <summary>A qcow2 image with the dirty flag set (not closed cleanly).</summary>
    DirtyImage,
    /// <summary>An image header is malformed, marked corrupt, encrypted or unsupported.</summary>
    ImageUnusable,
    /// <summary>Files of the volume exist but neither its base image nor its .info file does.</summary>
    VolumeIncomplete,
    /// <summary>Another process holds the volume's lock now: findings may be a running operation's intermediate state.</summary>
    VolumeBusy,
}

/// <summary>One problem (or note) about one volume on one share.</summary>
/// <param name="Share">The share's export.</param>
/// <param name="VolumeId">The volume.</param>
/// <param name="Severity">How bad it is.</param>
/// <param name="Kind">What it is.</param>
/// <param name="Message">One sentence for the operator.</param>
/// <param name="Repairable">True when <c>--repair</c> can fix it from what the headers prove.</param>
/// <param name="File">The file concerned, when there is one.</param>
public sealed record CheckFinding(string Share, Guid VolumeId, FindingSeverity Severity, FindingKind Kind, string Message, bool Repairable, string? File = null)
{
    /// <summary>How --repair would fix it (null when not repairable).</summary>
    internal RepairPlan? Plan { get; init; }

    /// <summary>True for findings that make the check fail (everything but <see cref="FindingSeverity.Info"/>).</summary>
    public bool IsProblem => Severity != FindingSeverity.Info;
}

/// <summary>A repair that was attempted.</summary>
/// <param name="Share">The share's export.</param>
/// <param name="VolumeId">The volume.</param>
/// <param name="Kind">The finding it addressed.</param>
/// <param name="Action">What was done (or tried), in words.</param>
/// <param name="Succeeded">Whether it worked.</param>
/// <param name="Error">Why it failed.</param>
public sealed record RepairAction(string Share, Guid VolumeId, FindingKind Kind, string Action, bool Succeeded, string? Error = null);

/// <summary>The result of a check (and repair) run.</summary>
/// <param name="Findings">What the first diagnosis found.</param>
/// <param name="Repairs">Repairs attempted (empty without --repair).</param>
/// <param name="Remaining">What a diagnosis after the repairs still finds (equal to <paramref name="Findings"/> without --repair).</param>
public sealed record CheckReport(IReadOnlyList<CheckFinding> Findings, IReadOnlyList<RepairAction> Repairs, IReadOnlyList<CheckFinding> Remaining)
{
    public bool Healthy => Remaining.All(f => !f.IsProblem);

    public bool AnyRepairFailed => Repairs.Any(r => !r.Succeeded);
}

/// <summary>How a finding is repaired.</summary>
internal abstract record RepairPlan
{
    /// <summary>Finish the journaled operation through the engine.</summary>
    internal sealed record FinishJournal : RepairPlan;

    /// <summary>Write a new .info built from the headers.</summary>
    internal sealed record WriteInfo(VolumeInfo Info, string Why) : RepairPlan;

    /// <summary><c>qemu-img rebase -u</c> an image onto another, then drop .info keys whose overlay is gone.</summary>
    internal sealed record Repoint(string Image, string NewBacking, ImageFormat NewBackingFormat, IReadOnlyList<Guid> DropKeys) : RepairPlan;

    /// <summary>Delete a file nothing references.</summary>
    internal sealed record RemoveFile(string FileName) : RepairPlan;
}
