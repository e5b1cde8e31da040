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
