using NfsVolumeWorker.Storage.Chains;
using NfsVolumeWorker.Storage.Diagnostics;
using NfsVolumeWorker.Storage.Durability;
using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.QemuImg;
using NfsVolumeWorker.Storage.Shares;

namespace NfsVolumeWorker.Storage.Engine;

public sealed partial class VolumeEngine
{
    /// <summary>Creates an empty volume: written under a temp name, synced, renamed into place.</summary>
    public Task<OperationResult> CreateVolumeAsync(CreateVolumeRequest request, CancellationToken cancellationToken = default)
    {
        RequirePositiveSize(request.SizeBytes, "volume size");
        var format = request.Format ?? (_options.Qcow2Volumes ? ImageFormat.Qcow2 : ImageFormat.Raw);
        return RunLockedAsync("create-volume", request, null, async (share, ct) =>
        {
            RequireFits(share, request.SizeBytes, format, "volume size", request.VolumeId);
            var name = VolumeFileNames.Base(request.VolumeId);
            var path = share.PathOf(name);
            DurableFile.EnsureNotSymlink(path);
            if (File.Exists(path) || File.Exists(share.PathOf(VolumeFileNames.Info(request.VolumeId))))
            {
                var chain = VolumeChainReader.Read(share, request.VolumeId, format);
                // A repeated create (a redelivery) finds the base it made, possibly with snapshots on it since.
                if (chain.Base.FileName == name && chain.Base.Format == format && chain.Base.VirtualSize == request.SizeBytes)
                {
                    return OperationResult.Already($"volume {request.VolumeId} already exists ({format.ToQemuName()}, {request.SizeBytes} bytes)", chain.Active.FileName);
                }
                throw new StorageException(StorageErrorCode.VolumeExists,
                    $"Volume {request.VolumeId} already exists on {share.Export} with a different shape (base {chain.Base.Format.ToQemuName()}, {chain.Base.VirtualSize} bytes); nothing was changed.") { VolumeId = request.VolumeId };
            }
            RemoveTempFilesOf(share, name, request.VolumeId);
            var temp = share.PathOf(DurableFile.TempName(name));
            try
            {
                if (format == ImageFormat.Raw && _options.SparsedVolumes)
                {
                    using var stream = new FileStream(temp, new FileStreamOptions { Mode = System.IO.FileMode.CreateNew, Access = FileAccess.Write, UnixCreateMode = FileMode });
                    stream.SetLength(request.SizeBytes);
                    DurableFile.Flush(stream);
                }
                else
                {
                    var preallocation = _options.SparsedVolumes ? null : "falloc";
                    await _qemuImg.CreateAsync(new CreateImageRequest(temp, format, request.SizeBytes, Preallocation: preallocation), ct).ConfigureAwait(false);
                    DurableFile.FsyncFile(temp);
                }
                SetPermissions(temp, null);
                Step(OperationSteps.CreateVolumeTempWritten, request.VolumeId);
                File.Move(temp, path, overwrite: false);
            }
            catch
            {
                DurableFile.TryDelete(temp);
                throw;
            }
            DurableFile.FsyncDirectory(share.LocalPath);
            Step(OperationSteps.CreateVolumeRenamed, request.VolumeId);
            return OperationResult.Done($"created {format.ToQemuName()} volume {request.VolumeId} of {request.SizeBytes} bytes", name);
        }, cancellationToken);
    }

    /// <summary>Deletes every file of a volume: the .info file first (so it never names a deleted image), then
    /// images from the top of the chain down (so no file ever names a missing backing file), then leftovers.</summary>
    public Task<OperationResult> DeleteVolumeAsync(DeleteVolumeRequest request, CancellationToken cancellationToken = default)
    {
        var intent = Intent(PendingOperationKind.DeleteVolume, request.VolumeId);
        return RunLockedAsync("delete-volume", request, intent, (share, ct) => DeleteVolumeLockedAsync(share, request.VolumeId, ct), cancellationToken);
    }

    private Task<OperationResult> DeleteVolumeLockedAsync(Share share, Guid volumeId, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var files = FilesOf(share, volumeId);
        if (files.Count == 0)
        {
            OperationJournal.Clear(share, volumeId);
            return Task.FromResult(OperationResult.Already($"volume {volumeId} has no files on {share.Export}", null));
        }
        Journal(share, Intent(PendingOperationKind.DeleteVolume, volumeId));
        Step(OperationSteps.DeleteVolumeJournaled, volumeId);

        // Top of the chain first when it can be read; a chain that cannot be read (or is hostile) is
        // still deleted by name: deleting never follows a backing reference.
        var order = new List<string>();
        try
        {
            order.AddRange(VolumeChainReader.Read(share, volumeId).Images.Select(i => i.FileName));
        }
        catch (StorageException)
        {
        }
        var info = VolumeFileNames.Info(volumeId);
        order.AddRange(files.Where(f => f != info && !order.Contains(f)).OrderByDescending(f => f.Length).ThenBy(f => f, StringComparer.Ordinal));
        var deleted = 0;
        // The .info file goes first: left behind, it would name the deleted active image and make the rest of
        // the volume unreadable. Without it the remaining files are the base with unrecorded overlays on it.
        if (DurableFile.TryDelete(share.PathOf(info)))
        {
            deleted++;
            DurableFile.FsyncDirectory(share.LocalPath);
            Step(OperationSteps.DeleteVolumeInfoDeleted, volumeId);
        }
        foreach (var file in order)
        {
            if (DurableFile.TryDelete(share.PathOf(file)))
            {
                deleted++;
                DurableFile.FsyncDirectory(share.LocalPath);
                Step(OperationSteps.DeleteVolumeFileDeleted, volumeId);
            }
        }
        OperationJournal.Clear(share, volumeId);
        return Task.FromResult(OperationResult.Done($"deleted {deleted} file(s) of volume {volumeId}", null));
    }

    /// <summary>Every file on the share that belongs to the volume: images, .info, hidden temp files.</summary>
    internal static List<string> FilesOf(Share share, Guid volumeId)
    {
        var baseName = VolumeFileNames.Base(volumeId);
        var result = new List<string>();
        foreach (var path in Directory.EnumerateFiles(share.LocalPath, "*" + baseName + "*"))
        {
            var name = Path.GetFileName(path);
            if (VolumeFileNames.IsImageOf(volumeId, name) || name == VolumeFileNames.Info(volumeId)
                || (DurableFile.IsTempName(name) && name.StartsWith("." + baseName, StringComparison.Ordinal)))
            {
                result.Add(name);
            }
        }
        return result;
    }

    /// <summary>Grows the volume. Unlike Cinder's driver, resizes the <em>active</em> image, so the volume
    /// really grows when snapshots exist and every snapshot still reads back what it held.</summary>
    public Task<OperationResult> ExtendVolumeAsync(ExtendVolumeRequest request, CancellationToken cancellationToken = default)
    {
        RequirePositiveSize(request.NewSizeBytes, "new size");
        return RunLockedAsync("extend-volume", request, null, async (share, ct) =>
        {
            var chain = VolumeChainReader.Read(share, request.VolumeId, request.BaseFormat);
            chain.EnsureHealthy();
            var active = chain.Active;
            if (request.NewSizeBytes < active.VirtualSize)
            {
                throw new StorageException(StorageErrorCode.ShrinkNotAllowed,
                    $"Volume {request.VolumeId} is {active.VirtualSize} bytes; it cannot shrink to {request.NewSizeBytes}. Nothing was changed.") { VolumeId = request.VolumeId };
            }
            if (request.NewSizeBytes == active.VirtualSize)
            {
                return OperationResult.Already($"volume {request.VolumeId} already is {active.VirtualSize} bytes", active.FileName);
            }
            RequireFits(share, request.NewSizeBytes, active.Format, "new size", request.VolumeId);
            var path = chain.PathOf(active.FileName);
            await _qemuImg.ResizeAsync(path, active.Format, request.NewSizeBytes, ct).ConfigureAwait(false);
            DurableFile.FsyncFile(path);
            Step(OperationSteps.ExtendResized, request.VolumeId);
            return OperationResult.Done($"extended {active.FileName} from {active.VirtualSize} to {request.NewSizeBytes} bytes", active.FileName);
        }, cancellationToken);
    }

    /// <summary>Connection info, after Cinder's checks: the active image is raw or qcow2 (read from its
    /// header, never probed) and its virtual size is the one the caller expects.</summary>
    public ConnectionInfo GetConnectionInfo(ConnectionInfoRequest request)
    {
        Ids.Require(request.VolumeId, "volume id");
        Guard(request);
        var share = ShareFor(request.Share);
        var chain = VolumeChainReader.Read(share, request.VolumeId, request.BaseFormat);
        var active = chain.Active;
        if (request.ExpectedSizeBytes is { } expected && expected != active.VirtualSize)
        {
            throw new StorageException(StorageErrorCode.SizeMismatch,
                $"Volume {request.VolumeId}: the active image {active.FileName} is {active.VirtualSize} bytes but the volume should be {expected}; refusing to connect it (Cinder treats this as a possible exploit).") { VolumeId = request.VolumeId };
        }
        var mountBase = Path.GetDirectoryName(share.LocalPath) ?? share.LocalPath;
        return new ConnectionInfo("nfs", share.Export, active.FileName, active.Format.ToQemuName(), share.MountOptions, mountBase, active.VirtualSize);
    }
}
