using NfsVolumeWorker.Storage.Chains;
using NfsVolumeWorker.Storage.Diagnostics;
using NfsVolumeWorker.Storage.Durability;
using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Storage.Info;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Qcow2;
using NfsVolumeWorker.Storage.QemuImg;
using NfsVolumeWorker.Storage.Shares;

namespace NfsVolumeWorker.Storage.Engine;

/// <summary>Merges planned by cost (see docs/merges.md): which way a snapshot delete moves data, and the pull-up
/// direction's steps. The delete itself, and the commit-down direction, are in VolumeEngine.SnapshotDeletes.cs.</summary>
public sealed partial class VolumeEngine
{
    private static string Describe(MergePlan plan) => plan.Direction switch
    {
        MergeDirection.PullUp => $"pull-up of {plan.Lower} into {plan.Upper} ({plan.UpBytes} bytes, against {plan.DownBytes} to commit down: {plan.Reason})",
        MergeDirection.NothingToMove => $"chain edit alone, no data moved ({plan.Reason})",
        _ => $"commit of {plan.Upper} into {plan.Lower} ({plan.DownBytes} bytes, against {plan.UpBytes} to pull up: {plan.Reason})",
    };

    /// <summary>The <see cref="MergeDirection.NothingToMove"/> plan when the snapshot's overlay maps no guest data and is
    /// the size of the image below it; null (logged, with why) when data may have to move.</summary>
    private MergePlan? PlanNothingToMove(VolumeChain chain, ChainImage upper, Guid snapshotId)
    {
        if (_options.MergePlanning != MergePlanning.ByCost)
        {
            // A forced direction is forced: Cinder's commit always, or the pull-up under test.
            return null;
        }
        var lower = chain.Find(upper.BackingFile!)!;
        var upperPath = chain.PathOf(upper.FileName);
        string why;
        if (upper.Format != ImageFormat.Qcow2 || upper.VirtualSize != lower.VirtualSize)
        {
            why = $"{upper.FileName} is {upper.VirtualSize} bytes and {lower.FileName} {lower.VirtualSize}: a commit grows the lower image first";
        }
        else if (ImageAllocationReader.HoldsNoGuestData(upperPath, chain.HeaderOf(upper), out why))
        {
            var plan = MergePlan.NothingToMove(upper, lower, FileOwnership.AllocatedBytes(upperPath), FileOwnership.AllocatedBytes(chain.PathOf(lower.FileName)), why);
            EngineLog.MergePlanned(_logger, chain.VolumeId, snapshotId, plan.Direction, plan.Bytes, upper.FileName, plan.DownBytes, lower.FileName, plan.UpBytes, plan.Reason);
            return plan;
        }
        EngineLog.DataToMove(_logger, chain.VolumeId, snapshotId, upper.FileName, why);
        return null;
    }

    /// <summary>Measures both directions from the two images' allocation and picks one (<see cref="MergePlan.Choose"/>);
    /// refuses with NoSpace, before anything is changed, when neither fits on the share.</summary>
    /// <param name="lowerMapsNothing">For a pull-up, whether the lower image maps no guest data (<see cref="LowerMapsNothing"/>),
    /// for <see cref="PullUpLockedAsync"/> to act on without reading the lower image's tables again; else null.</param>
    private MergePlan PlanMerge(Share share, VolumeChain chain, ChainImage upper, Guid snapshotId, out bool? lowerMapsNothing)
    {
        lowerMapsNothing = null;
        if (PlanNothingToMove(chain, upper, snapshotId) is { } nothing)
        {
            return nothing;
        }
        var lower = chain.Find(upper.BackingFile!)!;
        var upperBytes = FileOwnership.AllocatedBytes(chain.PathOf(upper.FileName));
        var lowerBytes = FileOwnership.AllocatedBytes(chain.PathOf(lower.FileName));
        var available = ShareSpace.Available(share);
        var hardLinks = ShareCapabilities.Of(share).HardLinks;
        var plan = MergePlan.Choose(upper, lower, upperBytes, lowerBytes, available, _options.MergePlanning, hardLinks);
        if (plan is null)
        {
            // Neither fits: the message names the cheaper one's need, the least space that would do.
            var least = _options.MergePlanning == MergePlanning.AlwaysCommitDown || lower.Format != ImageFormat.Qcow2 || !hardLinks ? upperBytes : Math.Min(upperBytes, lowerBytes);
            ShareSpace.Require(share, ShareSpace.Needed(least),
                $"Deleting snapshot {snapshotId} (merging {upper.FileName}, {upperBytes} bytes allocated, with {lower.FileName}, {lowerBytes} bytes)", chain.VolumeId);
            // Space was freed between the two looks: plan again with what is free now.
            return MergePlan.Choose(upper, lower, upperBytes, lowerBytes, ShareSpace.Available(share), _options.MergePlanning, hardLinks)
                ?? throw new StorageException(StorageErrorCode.NoSpace, $"Deleting snapshot {snapshotId} does not fit on share {share.Export}; nothing was changed.") { VolumeId = chain.VolumeId };
        }
        if (plan.Direction == MergeDirection.PullUp)
        {
            lowerMapsNothing = LowerMapsNothing(chain, plan);
            if (lowerMapsNothing == true)
            {
                plan = plan with { Reason = plan.Reason + $"; {lower.FileName} holds no guest data, so the pull-up only re-points {upper.FileName} (rebase -u)" };
            }
        }
        EngineLog.MergePlanned(_logger, chain.VolumeId, snapshotId, plan.Direction, plan.Bytes, upper.FileName, upperBytes, lower.FileName, lowerBytes, plan.Reason);
        return plan;
    }

    /// <summary>True when the pull-up has nothing to move: the lower image is an overlay that maps no guest data and is
    /// not smaller than its own backing file (else the backing file's tail would show through after the re-point). From
    /// the lower image's header as the chain read it: nothing in a delete writes the lower image before the pull-up.</summary>
    private static bool LowerMapsNothing(VolumeChain chain, MergePlan plan) =>
        plan.LowerBacking is not null
        && chain.Find(plan.Lower) is { Format: ImageFormat.Qcow2 } lower
        && chain.Find(plan.LowerBacking) is { } lowerBacking
        && lower.VirtualSize >= lowerBacking.VirtualSize
        && ImageAllocationReader.HoldsNoGuestData(chain.PathOf(lower.FileName), chain.HeaderOf(lower), out _);

    /// <summary>
    /// Merges by pulling the lower image up into the snapshot's overlay, leaving the names a commit leaves. Each step
    /// is durable before the next and leaves a readable chain, and a re-run starts at the first step not yet done
    /// (read from the headers and inodes, with the names the journaled plan recorded):
    /// <list type="number">
    /// <item>safe rebase of the overlay onto the lower image's backing file (or none), write-through, so that a kill
    /// anywhere in it leaves the overlay reading as before: the overlay now holds the lower image's data too; the lower
    /// image is untouched and still reads as before (a re-run that finds the overlay re-pointed before step 2
    /// re-points it back and pulls up again, for pull-ups left by a worker whose rebase was not write-through);</item>
    /// <item>the lower image's name is replaced by a hard link to the overlay (atomic rename), so that name, which
    /// the .info file and Cinder expect, now holds the merged image;</item>
    /// <item>the image above (if any) is re-pointed at that name.</item>
    /// </list>
    /// The caller then writes the .info file and removes the overlay's name.
    /// </summary>
    /// <param name="lowerMapsNothing">What planning saw of the lower image (<see cref="PlanMerge"/>) in this run, or null
    /// (a resumed delete) to look now.</param>
    /// <returns>The .info content to write.</returns>
    private async Task<VolumeInfo> PullUpLockedAsync(Share share, VolumeChain chain, Guid snapshotId, MergePlan plan, bool? lowerMapsNothing, IProgress<OperationProgress>? progress, CancellationToken ct)
    {
        var volumeId = chain.VolumeId;
        var info = chain.Info;
        var upperPath = share.PathOf(plan.Upper);
        var lowerPath = share.PathOf(plan.Lower);
        DurableFile.EnsureNotSymlink(lowerPath);
        var upper = chain.Find(plan.Upper);
        if (upper is null)
        {
            // Step 3 is done: the image above names the lower image's name, which is the merged image.
            if (chain.Find(plan.Lower) is null || (File.Exists(upperPath) && FileOwnership.InodeOf(upperPath) != FileOwnership.InodeOf(lowerPath)))
            {
                throw chain.Broken($"snapshot {snapshotId}'s overlay {plan.Upper} is not in the active chain and {plan.Lower} is not the image pulled up into it");
            }
            return info.WithoutSnapshot(snapshotId);
        }

        if (upper.BackingFile == plan.LowerBacking && File.Exists(lowerPath) && FileOwnership.InodeOf(upperPath) != FileOwnership.InodeOf(lowerPath))
        {
            // Re-pointed, but maybe not pulled up: with qemu's default write-back cache, qemu-img rebase writes the new
            // backing file into the header before the cluster tables it keeps in memory, so a kill in between left the
            // overlay naming the new backing file without the clusters it copied. The engine's rebase is write-through
            // now (RebaseAsync), but a pull-up interrupted by an older worker looks the same as a finished one, so point
            // the overlay back at the lower image (metadata only; what was pulled up is a copy of what the lower image
            // shows, so it reads as before) and pull up again. After a crash only, so it costs a normal run nothing.
            EngineLog.PullUpRedone(_logger, volumeId, snapshotId, plan.Upper, plan.Lower);
            await _qemuImg.RebaseUnsafeAsync(upperPath, plan.Lower, ImageFormat.Qcow2, ct).ConfigureAwait(false);
            DurableFile.FsyncFile(upperPath);
            upper = upper with { BackingFile = plan.Lower };
        }

        if (upper.BackingFile == plan.Lower)
        {
            var backingFormat = ImageFormatNames.TryParse(plan.LowerBackingFormat, out var f) ? f : (ImageFormat?)null;
            // Planning in this run looked already, and the lower image is unchanged since (the re-point above writes only
            // the overlay). A resumed delete's plan comes from the journal: it looks now, at the chain read after the crash.
            if (backingFormat is { } lowerBackingFormat && (lowerMapsNothing ?? LowerMapsNothing(chain, plan)))
            {
                // Nothing to pull up: every read of the lower image falls through to its backing file, so re-pointing the
                // overlay there (metadata only) leaves it reading exactly as before, without the safe rebase's
                // comparison of the whole virtual range.
                await _qemuImg.RebaseUnsafeAsync(upperPath, plan.LowerBacking!, lowerBackingFormat, ct).ConfigureAwait(false);
                DurableFile.FsyncFile(upperPath);
            }
            else
            {
                var merge = ForwardingProgress.For(progress, volumeId, "merge");
                await _qemuImg.RebaseAsync(upperPath, plan.LowerBacking, plan.LowerBacking is null ? null : backingFormat, merge, ct).ConfigureAwait(false);
                DurableFile.FsyncFile(upperPath);
                StorageTelemetry.DataWritten.Add(plan.UpBytes, new KeyValuePair<string, object?>("kind", "merge"));
            }
            Step(OperationSteps.DeleteSnapshotPulledUp, volumeId);
        }
        else if (upper.BackingFile != plan.LowerBacking)
        {
            throw chain.Broken($"snapshot {snapshotId}'s overlay {plan.Upper} is backed by {upper.BackingFile ?? "nothing"}, neither {plan.Lower} nor {plan.LowerBacking ?? "nothing"} as the journaled pull-up expects");
        }

        if (FileOwnership.InodeOf(upperPath) != FileOwnership.InodeOf(lowerPath))
        {
            // The merged image keeps the lower image's mode and owner, as a commit into it would.
            File.SetUnixFileMode(upperPath, File.GetUnixFileMode(lowerPath));
            FileOwnership.CopyOwner(lowerPath, upperPath);
            DurableFile.FsyncFile(upperPath);
            RemoveTempFilesOf(share, plan.Lower, volumeId);
            DurableFile.ReplaceWithLink(upperPath, lowerPath);
            Step(OperationSteps.DeleteSnapshotLowerReplaced, volumeId);
        }

        if (chain.Above(plan.Upper) is { } higher)
        {
            var higherPath = chain.PathOf(higher.FileName);
            await _qemuImg.RebaseUnsafeAsync(higherPath, plan.Lower, ImageFormat.Qcow2, ct).ConfigureAwait(false);
            DurableFile.FsyncFile(higherPath);
            Step(OperationSteps.DeleteSnapshotRebased, volumeId);
            return info.WithoutSnapshot(snapshotId);
        }
        return info.WithoutSnapshot(snapshotId) with { Active = plan.Lower };
    }
}
