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
/// <summary>Snapshot deletes: the chain edit, the commit-down direction and the leftovers of an interrupted delete.
/// Which way data moves, and the pull-up direction, are in VolumeEngine.Merges.cs.</summary>
public sealed partial class VolumeEngine
{
    /// <summary>
    /// Deletes a snapshot anywhere in the chain. The overlay's data is merged into its backing file
    /// (<c>qemu-img commit</c>), the image above is re-pointed at the backing file (middle snapshots),
    /// the .info file is written, and only then is the overlay removed, so that no file ever names a
    /// missing backing file (Cinder deletes the overlay before re-pointing). The intent is journaled first. When the
    /// overlay maps no data the commit is skipped (<see cref="MergeDirection.NothingToMove"/>), and deleting the newest
    /// snapshot then needs no journal: its two changes each leave a healthy chain.
    /// </summary>
    public Task<OperationResult> DeleteSnapshotAsync(DeleteSnapshotRequest request, IProgress<OperationProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        Ids.Require(request.SnapshotId, "snapshot id");
        var intent = Intent(PendingOperationKind.DeleteSnapshot, request.VolumeId, request.SnapshotId, baseFormat: request.BaseFormat);
        return RunLockedAsync("delete-snapshot", request, intent,
            (share, ct) => DeleteSnapshotLockedAsync(share, request.VolumeId, request.SnapshotId, progress, ct, request.BaseFormat, onlyIfNothingToMove: request.OnlyIfNothingToMove), cancellationToken);
    }

    /// <param name="journaled">False when the caller's own journal entry covers this delete (a clone's temporary
    /// snapshot): the entry must stay the caller's, or a crash here would leave a re-run of the caller nothing to resume.</param>
    /// <param name="onlyIfNothingToMove"><see cref="DeleteSnapshotRequest.OnlyIfNothingToMove"/>.</param>
    private async Task<OperationResult> DeleteSnapshotLockedAsync(Share share, Guid volumeId, Guid snapshotId, IProgress<OperationProgress>? progress, CancellationToken ct, ImageFormat? baseFormat = null, bool journaled = true, bool onlyIfNothingToMove = false)
    {
        var info = VolumeChainReader.ReadInfo(share, volumeId);
        if (info is null || !info.Snapshots.TryGetValue(snapshotId, out var overlayName))
        {
            var removed = RemoveUnrecordedOverlay(share, volumeId, info, VolumeFileNames.Overlay(volumeId, snapshotId), baseFormat);
            if (journaled)
            {
                OperationJournal.Clear(share, volumeId);
            }
            if (info is null && !File.Exists(share.PathOf(VolumeFileNames.Base(volumeId))))
            {
                throw new StorageException(StorageErrorCode.VolumeNotFound, $"Volume {volumeId} has no files on {share.Export}.") { VolumeId = volumeId };
            }
            return removed
                ? OperationResult.Done($"snapshot {snapshotId} was already unrecorded; removed its leftover overlay", info?.Active)
                : OperationResult.Already($"snapshot {snapshotId} is not recorded for volume {volumeId}; nothing to do", info?.Active);
        }

        // Read (and so validate) the chain before journaling: a refused delete must leave no journal entry
        // behind, or every later operation on the volume would trip over it. From the .info read above (the lock is held).
        var chain = VolumeChainReader.Read(share, volumeId, info, baseFormat);
        var intent = Intent(PendingOperationKind.DeleteSnapshot, volumeId, snapshotId, baseFormat: baseFormat);
        MergePlan? plan = null;
        bool? lowerMapsNothing = null;
        var resumed = false;
        if (journaled)
        {
            var pending = OperationJournal.Read(share, volumeId);
            if (pending?.SameAs(intent) == true)
            {
                // A resumed delete follows the decision it journaled (an entry without one predates planning: it
                // was committing down); the allocation the plan came from has changed since.
                resumed = true;
                plan = pending.Merge;
                if (plan is not null)
                {
                    EngineLog.MergeResumed(_logger, volumeId, snapshotId, plan.Direction);
                }
            }
            else if (chain.Find(overlayName) is { BackingFile: not null } upper)
            {
                // Before the merge starts, not halfway through it.
                plan = PlanMerge(share, chain, upper, snapshotId, out lowerMapsNothing);
            }
        }
        else if (chain.Find(overlayName) is { BackingFile: not null } upper)
        {
            // A clone's temporary snapshot (not journaled here) commits down, or skips the commit when its overlay maps
            // nothing (the usual case): its caller's resume re-plans nothing, and either way leaves the same names.
            plan = PlanNothingToMove(chain, upper, snapshotId);
        }
        // Deleting the newest snapshot with nothing to move is two changes, each leaving a chain that the engine and
        // Cinder read as healthy: the .info file names the lower image active (the overlay is then an unrecorded file
        // outside the chain, which a re-run removes), then the overlay goes. No journal entry is needed for that. A
        // middle snapshot's re-point and .info write are two files that disagree in between, so it keeps the journal.
        var metadataOnly = plan is { Direction: MergeDirection.NothingToMove } && !resumed && overlayName == chain.Active.FileName;
        if (onlyIfNothingToMove && !metadataOnly)
        {
            return OperationResult.NotStarted(plan is null
                ? $"deleting snapshot {snapshotId} is not a metadata-only edit (a resumed or unusual delete); not started"
                : $"deleting snapshot {snapshotId} would be a {plan.Direction} of {plan.Bytes} bytes, not a metadata-only edit; not started", chain.Active.FileName);
        }
        var journal = journaled && !metadataOnly;
        if (journal)
        {
            Journal(share, intent with { Merge = plan });
            Step(OperationSteps.DeleteSnapshotJournaled, volumeId);
        }
        if (plan is { Direction: MergeDirection.PullUp })
        {
            var pulled = await PullUpLockedAsync(share, chain, snapshotId, plan, lowerMapsNothing, progress, ct).ConfigureAwait(false);
            return FinishDelete(share, volumeId, snapshotId, overlayName, pulled, journal, plan);
        }
        var overlayPath = share.PathOf(overlayName);
        VolumeInfo newInfo;

        var overlay = chain.Find(overlayName);
        if (overlay is null)
        {
            if (!File.Exists(overlayPath))
            {
                // Recorded but gone: only the record is left to remove.
                newInfo = info.WithoutSnapshot(snapshotId);
            }
            else
            {
                // Not in the chain, so the chain read did not read it: its one header read in this delete.
                var header = ImageHeaderReader.Read(overlayPath);
                var backing = header.Qcow2?.BackingFile;
                if (backing is null)
                {
                    EngineLog.StaleSnapshot(_logger, volumeId, snapshotId, overlayName);
                    newInfo = info.WithoutSnapshot(snapshotId);
                }
                else if (chain.Find(backing) is not null && chain.Above(backing) is not null)
                {
                    // An interrupted middle delete after the re-point: commit and rebase are done.
                    newInfo = info.WithoutSnapshot(snapshotId);
                }
                else
                {
                    throw chain.Broken($"snapshot {snapshotId}'s overlay {overlayName} is not in the active chain and does not look like an interrupted delete");
                }
            }
        }
        else
        {
            if (overlay.BackingFile is null)
            {
                throw chain.Broken($"snapshot {snapshotId}'s overlay {overlayName} has no backing file but other images depend on it");
            }
            var baseImage = chain.Find(overlay.BackingFile)!;
            var basePath = chain.PathOf(baseImage.FileName);
            // The commit would write nothing: skipped, and what follows is the chain edit it leaves, step for step. A
            // resumed plan is checked again: the journal says what was decided, the overlay says what holds now (its
            // tables, read now; its header, from this run's chain read: nothing has written the overlay since).
            var nothingToMove = plan is { Direction: MergeDirection.NothingToMove } && baseImage.VirtualSize == overlay.VirtualSize
                && (!resumed || ImageAllocationReader.HoldsNoGuestData(overlayPath, chain.HeaderOf(overlay), out _));
            if (!nothingToMove && baseImage.VirtualSize < overlay.VirtualSize)
            {
                // After an extend the overlay is larger than its backing file; grow the backing file first
                // so the merge keeps the tail. The backing file holds only this snapshot's data, which is going.
                await _qemuImg.ResizeAsync(basePath, baseImage.Format, overlay.VirtualSize, ct).ConfigureAwait(false);
                DurableFile.FsyncFile(basePath);
                Step(OperationSteps.DeleteSnapshotBaseGrown, volumeId);
            }
            if (!nothingToMove)
            {
                var merge = ForwardingProgress.For(progress, volumeId, "merge", overlay.VirtualSize); // commit scans the whole virtual range
                var merged = FileOwnership.AllocatedBytes(overlayPath);
                await _qemuImg.CommitAsync(new CommitRequest(overlayPath), merge, ct).ConfigureAwait(false);
                DurableFile.FsyncFile(basePath);
                StorageTelemetry.DataWritten.Add(merged, new KeyValuePair<string, object?>("kind", "merge"));
                Step(OperationSteps.DeleteSnapshotCommitted, volumeId);
            }

            if (overlayName == chain.Active.FileName)
            {
                newInfo = info.WithoutSnapshot(snapshotId) with { Active = baseImage.FileName };
            }
            else
            {
                var higher = chain.Above(overlayName)!;
                var higherPath = chain.PathOf(higher.FileName);
                await _qemuImg.RebaseUnsafeAsync(higherPath, baseImage.FileName, baseImage.Format, ct).ConfigureAwait(false);
                DurableFile.FsyncFile(higherPath);
                Step(OperationSteps.DeleteSnapshotRebased, volumeId);
                newInfo = info.WithoutSnapshot(snapshotId);
            }
        }

        return FinishDelete(share, volumeId, snapshotId, overlayName, newInfo, journal, plan);
    }

    /// <summary>The end of every delete: the .info file without the snapshot, then the overlay's name goes (after a
    /// pull-up it is a second name of the merged image, which keeps the lower image's name), then the journal entry.</summary>
    private OperationResult FinishDelete(Share share, Guid volumeId, Guid snapshotId, string overlayName, VolumeInfo newInfo, bool journaled, MergePlan? plan)
    {
        InfoFile.Write(share.PathOf(VolumeFileNames.Info(volumeId)), newInfo, FileMode);
        Step(OperationSteps.DeleteSnapshotInfoWritten, volumeId);
        if (DurableFile.TryDelete(share.PathOf(overlayName)))
        {
            DurableFile.FsyncDirectory(share.LocalPath);
            Step(OperationSteps.DeleteSnapshotOverlayDeleted, volumeId);
        }
        if (journaled)
        {
            OperationJournal.Clear(share, volumeId);
        }
        var how = plan is null ? "" : $"; merged by {Describe(plan)}";
        return OperationResult.Done($"deleted snapshot {snapshotId} ({overlayName}); active is {newInfo.Active}{how}", newInfo.Active);
    }

    /// <summary>Removes an overlay file the .info file does not record, if no image of the chain uses it
    /// (what a crash between the .info write and the file delete leaves). <paramref name="info"/> is the .info file as
    /// read under the lock held now (null: none).</summary>
    private bool RemoveUnrecordedOverlay(Share share, Guid volumeId, VolumeInfo? info, string overlayName, ImageFormat? baseFormat)
    {
        var path = share.PathOf(overlayName);
        DurableFile.EnsureNotSymlink(path);
        if (!File.Exists(path))
        {
            return false;
        }
        var chain = VolumeChainReader.Read(share, volumeId, info, baseFormat);
        if (chain.Find(overlayName) is not null)
        {
            return false;
        }
        File.Delete(path);
        DurableFile.FsyncDirectory(share.LocalPath);
        EngineLog.RemovedLeftover(_logger, volumeId, overlayName);
        return true;
    }
}
