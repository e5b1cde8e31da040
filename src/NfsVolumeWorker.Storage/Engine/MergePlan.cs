using System.Text.Json.Serialization;
using NfsVolumeWorker.Storage.Chains;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Shares;

namespace NfsVolumeWorker.Storage.Engine;

/// <summary>Which way a snapshot delete merges the snapshot's overlay with the image below it.</summary>
public enum MergeDirection
{
    /// <summary><c>qemu-img commit</c>: the overlay's data is written into the image below (what Cinder does). Costs the overlay's allocation.</summary>
    CommitDown,

    /// <summary><c>qemu-img rebase</c> (safe mode) of the overlay onto the lower image's backing file: the lower image's
    /// data is written into the overlay, which then takes the lower image's name. Costs the lower image's allocation.</summary>
    PullUp,

    /// <summary>The overlay maps no guest data (<see cref="Qcow2.ImageAllocationReader"/>): a commit would write nothing,
    /// so the merge is only the chain edit a commit leaves (the image above re-pointed, the .info file, the overlay
    /// removed). Costs no data, no qemu-img commit, and for the newest snapshot no journal entry.</summary>
    NothingToMove,
}

/// <summary>How the engine picks a <see cref="MergeDirection"/> (<see cref="VolumeEngineOptions.MergePlanning"/>).</summary>
public enum MergePlanning
{
    /// <summary>The direction that moves fewer bytes, among those that fit on the share; no move at all when the overlay
    /// maps no data (<see cref="MergeDirection.NothingToMove"/>).</summary>
    ByCost,

    /// <summary>Always commit down with qemu-img, as Cinder does (planning off, the nothing-to-move shortcut too).</summary>
    AlwaysCommitDown,

    /// <summary>Pull up wherever the layout allows it (not onto a raw base); for tests and benchmarks.</summary>
    PullUpWherePossible,
}

/// <summary>
/// The merge a snapshot delete will do, decided before the first change and journaled with the delete, so that a
/// resumed delete goes on the same way (the allocation it was measured from changes as the merge runs).
/// </summary>
/// <param name="Direction">The chosen direction.</param>
/// <param name="Upper">The deleted snapshot's overlay.</param>
/// <param name="Lower">Its backing file: the file whose name the merged image has afterwards.</param>
/// <param name="LowerBacking">The lower image's own backing file, or null when the lower image is the base.</param>
/// <param name="LowerBackingFormat">Its format (qemu name), or null.</param>
/// <param name="DownBytes">Bytes a commit down writes (the overlay's allocation).</param>
/// <param name="UpBytes">Bytes a pull up writes (the lower image's allocation).</param>
/// <param name="Reason">Why this direction, in words (logged, and in the operation's result).</param>
public sealed record MergePlan(
    MergeDirection Direction,
    string Upper,
    string Lower,
    string? LowerBacking,
    string? LowerBackingFormat,
    long DownBytes,
    long UpBytes,
    string Reason)
{
    /// <summary>By cost, a pull-up must write at least this much less than a commit: below that the two cost the same
    /// (the pull-up also reads what it compares, and links and renames), and the commit, Cinder's own way, has fewer steps.</summary>
    public const long PullUpMarginBytes = 1024 * 1024;

    /// <summary>Bytes the chosen direction writes.</summary>
    [JsonIgnore]
    public long Bytes => Direction switch
    {
        MergeDirection.PullUp => UpBytes,
        MergeDirection.NothingToMove => 0,
        _ => DownBytes,
    };

    /// <summary>The plan for an overlay that maps no guest data, the same size as the image below it (a larger one
    /// would need the lower image grown first, which the commit path does): the names a commit leaves, nothing written.</summary>
    /// <param name="upper">The overlay of the snapshot being deleted.</param>
    /// <param name="lower">Its backing image.</param>
    /// <param name="upperAllocated">Bytes the overlay holds on disk (its metadata).</param>
    /// <param name="lowerAllocated">Bytes the lower image holds on disk.</param>
    /// <param name="why">How the overlay was seen to map nothing.</param>
    public static MergePlan NothingToMove(ChainImage upper, ChainImage lower, long upperAllocated, long lowerAllocated, string why)
    {
        ArgumentNullException.ThrowIfNull(upper);
        ArgumentNullException.ThrowIfNull(lower);
        return new(MergeDirection.NothingToMove, upper.FileName, lower.FileName, lower.BackingFile, lower.BackingFormat?.ToQemuName(),
            upperAllocated, lowerAllocated, $"{upper.FileName} holds no guest data ({why}): only the chain is edited");
    }

    /// <summary>
    /// Picks the direction. Pulling up is possible only when the lower image is qcow2 (a raw base cannot take a
    /// qcow2 image under its name: Cinder and the engine would read it as raw), not larger than the overlay, and the
    /// share has hard links.
    /// By cost, the direction that writes fewer bytes wins if it fits in <paramref name="availableBytes"/>, else the
    /// other one if that fits; null when the allowed directions all need more than is free.
    /// </summary>
    /// <param name="upper">The overlay of the snapshot being deleted.</param>
    /// <param name="lower">Its backing image.</param>
    /// <param name="upperAllocated">Bytes the overlay holds on disk.</param>
    /// <param name="lowerAllocated">Bytes the lower image holds on disk.</param>
    /// <param name="availableBytes">Free bytes on the share.</param>
    /// <param name="planning">The configured planning.</param>
    /// <param name="hardLinks">The share's file system gives a file a second name (<see cref="ShareCapabilities.HardLinks"/>).</param>
    public static MergePlan? Choose(ChainImage upper, ChainImage lower, long upperAllocated, long lowerAllocated, long availableBytes, MergePlanning planning, bool hardLinks = true)
    {
        ArgumentNullException.ThrowIfNull(upper);
        ArgumentNullException.ThrowIfNull(lower);
        var pullUpBlocked = !hardLinks
            ? "the share has no hard links, which the pull-up needs to give the merged image the lower image's name"
            : lower.Format != ImageFormat.Qcow2
            ? $"{lower.FileName} is {lower.Format.ToQemuName()}, so only a commit keeps it readable under its name"
            : lower.VirtualSize > upper.VirtualSize
                ? $"{lower.FileName} is larger than {upper.FileName}"
                : null;
        var downFits = ShareSpace.Needed(upperAllocated) <= availableBytes;
        var upFits = ShareSpace.Needed(lowerAllocated) <= availableBytes;

        MergePlan Plan(MergeDirection direction, string reason) =>
            new(direction, upper.FileName, lower.FileName, lower.BackingFile, lower.BackingFormat?.ToQemuName(), upperAllocated, lowerAllocated, reason);

        switch (planning)
        {
            case MergePlanning.AlwaysCommitDown:
                return downFits ? Plan(MergeDirection.CommitDown, "planning is off (Engine:MergePlanning=AlwaysCommitDown)") : null;
            case MergePlanning.PullUpWherePossible when pullUpBlocked is null:
                return upFits ? Plan(MergeDirection.PullUp, "pull-up forced (Engine:MergePlanning=PullUpWherePossible)") : null;
            case MergePlanning.PullUpWherePossible:
                return downFits ? Plan(MergeDirection.CommitDown, $"pull-up forced but impossible: {pullUpBlocked}") : null;
        }

        if (pullUpBlocked is not null)
        {
            return downFits ? Plan(MergeDirection.CommitDown, $"pull-up impossible: {pullUpBlocked}") : null;
        }
        var upCheaper = lowerAllocated + PullUpMarginBytes < upperAllocated;
        return (upCheaper, upFits, downFits) switch
        {
            (true, true, _) => Plan(MergeDirection.PullUp, "pulling up moves fewer bytes"),
            (true, false, true) => Plan(MergeDirection.CommitDown, "pulling up moves fewer bytes but does not fit on the share; committing down does"),
            (false, _, true) => Plan(MergeDirection.CommitDown, "committing down moves no more bytes (or under 1 MiB more)"),
            (false, true, false) => Plan(MergeDirection.PullUp, "committing down moves fewer bytes but does not fit on the share; pulling up does"),
            _ => null,
        };
    }
}
