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

public sealed partial class VolumeEngine
{
    /// <summary>
    /// Takes a snapshot: a new qcow2 overlay on the active image (written natively under its final name, or made by
    /// qemu-img under a temp name and renamed into place), then the .info file. A crash before the .info write leaves
    /// an unrecorded overlay that the same request keeps if it is whole, or writes again.
    /// </summary>
    public Task<OperationResult> CreateSnapshotAsync(CreateSnapshotRequest request, CancellationToken cancellationToken = default)
    {
        Ids.Require(request.SnapshotId, "snapshot id");
        return RunLockedAsync("create-snapshot", request, null,
            (share, ct) => CreateSnapshotLockedAsync(share, request.VolumeId, request.SnapshotId, request.BaseFormat, ct, request.VolumeSizeBytes), cancellationToken);
    }

    private async Task<OperationResult> CreateSnapshotLockedAsync(Share share, Guid volumeId, Guid snapshotId, ImageFormat? baseFormat, CancellationToken ct, long? declaredSize = null)
    {
        var chain = VolumeChainReader.Read(share, volumeId, baseFormat);
        var info = chain.Info;
        if (info.Snapshots.TryGetValue(snapshotId, out var recorded))
        {
            return chain.Find(recorded) is not null
                ? OperationResult.Already($"snapshot {snapshotId} already exists ({recorded})", chain.Active.FileName)
                : throw chain.Broken($"snapshot {snapshotId} is recorded as {recorded}, which is not in the active chain");
        }
        chain.EnsureHealthy();
        var active = chain.Active;
        // Cinder's driver sizes the overlay from its database ("%dG" % volume.size), not from the backing file: a
        // volume whose file is smaller than declared (an imported or hand-made one) then grows to its declared size
        // here, and initialize_connection's size check passes. Smaller than the active image would hide data.
        var size = declaredSize ?? active.VirtualSize;
        if (size < active.VirtualSize)
        {
            throw new StorageException(StorageErrorCode.ShrinkNotAllowed,
                $"Volume {volumeId} is declared as {size} bytes but its active image {active.FileName} is {active.VirtualSize}; an overlay of the declared size would hide data. Nothing was done.") { VolumeId = volumeId };
        }
        RequireFits(share, size, ImageFormat.Qcow2, "volume size", volumeId);
        var overlayName = VolumeFileNames.Overlay(volumeId, snapshotId);
        var overlayPath = share.PathOf(overlayName);
        DurableFile.EnsureNotSymlink(overlayPath);

        var native = NativeOverlay(size, active.FileName, active.Format, volumeId, overlayName);
        if (native is not null)
        {
            // Written under its final name (O_CREAT|O_EXCL) and fsynced: one sync instead of a temp file's fsync, rename
            // and directory fsync. The .info write below (temp fsync, rename, fsync of this same directory) then makes
            // the overlay's name durable too, and nothing names the overlay until then. Order: on ext4, xfs and btrfs
            // an fsync of a new file also commits its directory entry, and on NFS the CREATE is synchronous at the
            // server; besides, a journaling file system commits the directory's changes in order, so the .info rename
            // cannot become durable without the overlay's entry. A crash before the .info write leaves an unrecorded
            // file at the final name, which is kept only when its bytes are exactly this overlay.
            if (!native.Matches(overlayPath))
            {
                RemoveLeftover(share.PathOf(overlayName), volumeId); // an unrecorded file under the new overlay's name
                try
                {
                    native.Create(overlayPath, FileMode);
                    StorageTelemetry.OverlaysCreated.Add(1, new KeyValuePair<string, object?>("writer", "native"));
                }
                catch when (File.Exists(overlayPath))
                {
                    // A torn file (no space, say) must not stay under the overlay's name.
                    DurableFile.TryDelete(overlayPath);
                    throw;
                }
            }
            else
            {
                // Whole and right, but maybe never fsynced (the process died before): fsynced below like a new one.
                EngineLog.AdoptedOverlay(_logger, volumeId, overlayName);
            }
            SetPermissions(overlayPath, chain.PathOf(active.FileName));
            DurableFile.FsyncFile(overlayPath);
            Step(OperationSteps.CreateSnapshotOverlayCreated, volumeId);
            if (!File.Exists(overlayPath))
            {
                // What the temp file's rename used to catch: a share unmounted under the create leaves an empty mount
                // point that would take the .info write. (Mapped to ShareUnavailable when the share marker is gone.)
                throw new StorageException(StorageErrorCode.ChainBroken, $"Volume {volumeId}: the new overlay {overlayName} vanished before the .info file recorded it; nothing was recorded.") { VolumeId = volumeId };
            }
        }
        else if (!IsUnrecordedOverlayOn(overlayPath, active, size))
        {
            // qemu-img's file is known only once it exists: made under a temp name and renamed into place whole.
            RemoveLeftover(share.PathOf(overlayName), volumeId); // an unrecorded file under the new overlay's name
            RemoveTempFilesOf(share, overlayName, volumeId);
            var temp = share.PathOf(DurableFile.TempName(overlayName));
            try
            {
                await _qemuImg.CreateAsync(new CreateImageRequest(temp, ImageFormat.Qcow2, size, active.FileName, active.Format), ct).ConfigureAwait(false);
                StorageTelemetry.OverlaysCreated.Add(1, new KeyValuePair<string, object?>("writer", "qemu-img"));
                SetPermissions(temp, chain.PathOf(active.FileName));
                DurableFile.FsyncFile(temp);
                Step(OperationSteps.CreateSnapshotOverlayCreated, volumeId);
                File.Move(temp, overlayPath, overwrite: false);
            }
            catch
            {
                DurableFile.TryDelete(temp);
                throw;
            }
            DurableFile.FsyncDirectory(share.LocalPath);
            Step(OperationSteps.CreateSnapshotOverlayRenamed, volumeId);
        }

        InfoFile.Write(share.PathOf(VolumeFileNames.Info(volumeId)), info.WithSnapshot(snapshotId, overlayName), FileMode);
        Step(OperationSteps.CreateSnapshotInfoWritten, volumeId);
        return OperationResult.Done(size == active.VirtualSize
            ? $"created snapshot {snapshotId}: {overlayName} on {active.FileName}"
            : $"created snapshot {snapshotId}: {overlayName} on {active.FileName}, {size} bytes as declared (the active image is {active.VirtualSize})", overlayName);
    }

    /// <summary>Creates the empty overlay file at <paramref name="path"/> (which must not exist), not yet synced: natively
    /// when the option allows and the input is inside what <see cref="OverlayImage"/> is proven for, else by
    /// <c>qemu-img create</c>. Both make the same bytes; the caller sets permissions, fsyncs and renames.</summary>
    internal async Task CreateOverlayFileAsync(string path, long size, string? backingFile, ImageFormat? backingFormat, Guid volumeId, CancellationToken ct)
    {
        if (backingFile is not null && backingFormat is not null && NativeOverlay(size, backingFile, backingFormat.Value, volumeId, Path.GetFileName(path)) is { } native)
        {
            native.Create(path, FileMode);
            StorageTelemetry.OverlaysCreated.Add(1, new KeyValuePair<string, object?>("writer", "native"));
            return;
        }
        await _qemuImg.CreateAsync(new CreateImageRequest(path, ImageFormat.Qcow2, size, backingFile, backingFormat), ct).ConfigureAwait(false);
        StorageTelemetry.OverlaysCreated.Add(1, new KeyValuePair<string, object?>("writer", "qemu-img"));
    }

    /// <summary>The overlay <see cref="OverlayImage"/> writes for these inputs, or null (logged, with why, when the option
    /// is on) when qemu-img must make it.</summary>
    private OverlayImage? NativeOverlay(long size, string backingFile, ImageFormat backingFormat, Guid volumeId, string? fileName = null)
    {
        if (!_options.NativeOverlayHeaders)
        {
            return null;
        }
        if (OverlayImage.Unsupported(size, backingFile, backingFormat) is { } reason)
        {
            EngineLog.OverlayByQemuImg(_logger, volumeId, fileName ?? backingFile, reason);
            return null;
        }
        return new OverlayImage(size, backingFile, backingFormat);
    }

    /// <summary>True when <paramref name="path"/> is an overlay already made for this snapshot on the current
    /// active image (left by a crash before the .info write).</summary>
    private static bool IsUnrecordedOverlayOn(string path, ChainImage active, long size)
    {
        if (!File.Exists(path))
        {
            return false;
        }
        try
        {
            var header = ImageHeaderReader.Read(path);
            return header.Qcow2 is { } q && q.BackingFile == active.FileName
                && q.BackingFormat == active.Format.ToQemuName() && (long)q.VirtualSize == size && !q.IsCorrupt;
        }
        catch (StorageException)
        {
            return false;
        }
    }

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

    /// <summary>Reverts the volume to its newest snapshot: the active overlay is replaced by a new empty
    /// overlay on the same backing file (made under a temp name, renamed over the old one).</summary>
    public Task<OperationResult> RevertToSnapshotAsync(RevertToSnapshotRequest request, CancellationToken cancellationToken = default)
    {
        Ids.Require(request.SnapshotId, "snapshot id");
        return RunLockedAsync("revert-to-snapshot", request, null, async (share, ct) =>
        {
            var chain = VolumeChainReader.Read(share, request.VolumeId, request.BaseFormat);
            chain.EnsureHealthy();
            if (!chain.Info.Snapshots.TryGetValue(request.SnapshotId, out var overlayName))
            {
                throw new StorageException(StorageErrorCode.SnapshotNotFound, $"Snapshot {request.SnapshotId} is not recorded for volume {request.VolumeId}.") { VolumeId = request.VolumeId };
            }
            var active = chain.Active;
            if (overlayName != active.FileName)
            {
                throw new StorageException(StorageErrorCode.SnapshotNotNewest,
                    $"Snapshot {request.SnapshotId} is not the newest snapshot of volume {request.VolumeId}; only the newest can be reverted to. Nothing was changed.") { VolumeId = request.VolumeId };
            }
            var activePath = chain.PathOf(active.FileName);
            RemoveTempFilesOf(share, active.FileName, request.VolumeId);
            var temp = share.PathOf(DurableFile.TempName(active.FileName));
            try
            {
                await CreateOverlayFileAsync(temp, active.VirtualSize, active.BackingFile, active.BackingFormat, request.VolumeId, ct).ConfigureAwait(false);
                SetPermissions(temp, activePath);
                DurableFile.FsyncFile(temp);
                Step(OperationSteps.RevertOverlayCreated, request.VolumeId);
                File.Move(temp, activePath, overwrite: true);
            }
            catch
            {
                DurableFile.TryDelete(temp);
                throw;
            }
            DurableFile.FsyncDirectory(share.LocalPath);
            Step(OperationSteps.RevertRenamed, request.VolumeId);
            return OperationResult.Done($"reverted volume {request.VolumeId} to snapshot {request.SnapshotId}", active.FileName);
        }, cancellationToken);
    }
}
