using System.Security.Cryptography;
using NfsVolumeWorker.Storage.Chains;
using NfsVolumeWorker.Storage.Diagnostics;
using NfsVolumeWorker.Storage.Durability;
using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Locking;
using NfsVolumeWorker.Storage.QemuImg;
using NfsVolumeWorker.Storage.Shares;

namespace NfsVolumeWorker.Storage.Engine;

public sealed partial class VolumeEngine
{
    /// <summary>Creates a new volume as a full, independent copy of a snapshot's data.</summary>
    public Task<OperationResult> CreateVolumeFromSnapshotAsync(CreateVolumeFromSnapshotRequest request, IProgress<OperationProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        Ids.Require(request.SnapshotId, "snapshot id");
        Ids.Require(request.NewVolumeId, "new volume id");
        var intent = Intent(PendingOperationKind.CreateVolumeFromSnapshot, request.VolumeId, request.SnapshotId, request.NewVolumeId, request.TargetFormat, request.NewSizeBytes, request.TargetShare, request.BaseFormat);
        return RunLockedAsync("create-volume-from-snapshot", request, intent,
            (share, ct) => CloneLockedAsync(share, request.VolumeId, request.SnapshotId, request.NewVolumeId, request.TargetFormat, request.NewSizeBytes, request.TargetShare, progress, ct, request.BaseFormat),
            cancellationToken);
    }

    /// <summary>Creates a new volume as a full copy of a volume's current data; when the volume has
    /// snapshots, through a temporary snapshot as Cinder does (deleted after the copy).</summary>
    public Task<OperationResult> CloneVolumeAsync(CloneVolumeRequest request, IProgress<OperationProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        Ids.Require(request.NewVolumeId, "new volume id");
        var intent = Intent(PendingOperationKind.CloneVolume, request.VolumeId, null, request.NewVolumeId, request.TargetFormat, request.NewSizeBytes, request.TargetShare, request.BaseFormat);
        return RunLockedAsync("clone-volume", request, intent,
            (share, ct) => CloneLockedAsync(share, request.VolumeId, null, request.NewVolumeId, request.TargetFormat, request.NewSizeBytes, request.TargetShare, progress, ct, request.BaseFormat),
            cancellationToken);
    }

    /// <summary>The id of the temporary snapshot a clone into <paramref name="newVolumeId"/> takes: derived
    /// from the new volume's id (a name-based UUID), so a resumed clone finds the one it made.</summary>
    public static Guid TemporarySnapshotId(Guid newVolumeId)
    {
        Span<byte> input = stackalloc byte[32];
        newVolumeId.TryWriteBytes(input, bigEndian: true, out _);
        "tmp-snap"u8.CopyTo(input[16..]);
#pragma warning disable CA5350 // SHA-1 derives a name-based UUID (RFC 9562 v5 style); not a security use.
        Span<byte> hash = stackalloc byte[20];
        SHA1.HashData(input[..24], hash);
#pragma warning restore CA5350
        hash[6] = (byte)((hash[6] & 0x0F) | 0x50);
        hash[8] = (byte)((hash[8] & 0x3F) | 0x80);
        return new Guid(hash[..16], bigEndian: true);
    }

    private async Task<OperationResult> CloneLockedAsync(
        Share share, Guid volumeId, Guid? snapshotId, Guid newVolumeId, ImageFormat? targetFormat, long? newSizeBytes, string? targetShareName,
        IProgress<OperationProgress>? progress, CancellationToken ct, ImageFormat? baseFormat = null)
    {
        if (newVolumeId == volumeId)
        {
            throw new StorageException(StorageErrorCode.InvalidRequest, $"A volume cannot be cloned onto itself ({volumeId}).") { VolumeId = volumeId };
        }
        var target = targetShareName is null ? share : ShareFor(targetShareName);
        var format = targetFormat ?? (_options.Qcow2Volumes ? ImageFormat.Qcow2 : ImageFormat.Raw);
        var targetName = VolumeFileNames.Base(newVolumeId);
        var targetPath = target.PathOf(targetName);
        DurableFile.EnsureNotSymlink(targetPath);
        var tempSnapshot = snapshotId is null ? TemporarySnapshotId(newVolumeId) : (Guid?)null;
        var what = snapshotId is null ? $"volume {volumeId}" : $"snapshot {snapshotId}";

        using var targetLock = await VolumeLock.AcquireAsync(target, newVolumeId, _options.LockTimeout, ct).ConfigureAwait(false);
        var journaled = OperationJournal.Read(share, volumeId);
        var resuming = journaled is not null && journaled.NewVolumeId == newVolumeId;

        if (File.Exists(targetPath) || File.Exists(target.PathOf(VolumeFileNames.Info(newVolumeId))))
        {
            if (!resuming && await IsFinishedCopyAsync(share, volumeId, snapshotId, target, newVolumeId, format, newSizeBytes, baseFormat, ct).ConfigureAwait(false))
            {
                return OperationResult.Already($"volume {newVolumeId} already is a copy of {what}", targetName);
            }
            if (!resuming)
            {
                throw new StorageException(StorageErrorCode.VolumeExists,
                    $"Volume {newVolumeId} already exists on {target.Export}; not overwriting it with a copy of {what}.") { VolumeId = newVolumeId };
            }
            // The copy was renamed into place before a crash: only the temporary snapshot may be left.
            await DropTemporarySnapshotAsync(share, volumeId, tempSnapshot, ct).ConfigureAwait(false);
            OperationJournal.Clear(share, volumeId);
            return OperationResult.Done($"volume {newVolumeId} was already copied from {what}; finished the clean-up", targetName);
        }

        var chain = VolumeChainReader.Read(share, volumeId, baseFormat);
        chain.EnsureHealthy();
        var sourceSize = snapshotId is { } s0 ? chain.SnapshotData(s0).VirtualSize : chain.Active.VirtualSize;
        var size = newSizeBytes ?? sourceSize;
        if (size < sourceSize)
        {
            throw new StorageException(StorageErrorCode.ShrinkNotAllowed,
                $"The new volume ({size} bytes) would be smaller than {what} ({sourceSize} bytes). Nothing was done.") { VolumeId = volumeId };
        }
        RequireFits(target, size, format, "the new volume's size", volumeId);
        // Same file system, same format as the base, and extents can be shared: the clone shares the base's
        // extents and gets only what the overlays hold written into it. Otherwise a full copy.
        var sharing = _options.ShareExtents && target.LocalPath == share.LocalPath && format == chain.Base.Format && ShareCapabilities.Of(share).ExtentSharing;
        if (!resuming)
        {
            var sourceImage = snapshotId is { } s1 ? chain.SnapshotData(s1) : chain.Active;
            var data = chain.AllocatedBytesFrom(sourceImage) - (sharing ? FileOwnership.AllocatedBytes(chain.PathOf(chain.Base.FileName)) : 0);
            ShareSpace.Require(target, ShareSpace.Needed(data), $"Copying {what} of volume {volumeId} to new volume {newVolumeId}", volumeId);
        }

        // A clone of the base alone by extent sharing changes nothing of the source and is one FICLONE into a temp file,
        // then a rename: a crash leaves the temp file, which the re-run (the command is still in its inbox, or its
        // message unacked) removes, or the finished copy, which it recognises. Nothing to resume, so no journal entry
        // (3 syncs: as much again as the clone itself).
        var fromBase = snapshotId is { } s2 ? chain.SnapshotData(s2).FileName == chain.Base.FileName : !chain.HasSnapshots;
        var journal = !(sharing && fromBase && !resuming);
        string temp;
        if (journal)
        {
            Journal(share, Intent(snapshotId is null ? PendingOperationKind.CloneVolume : PendingOperationKind.CreateVolumeFromSnapshot,
                volumeId, snapshotId, newVolumeId, targetFormat, newSizeBytes, targetShareName, baseFormat));
            Step(OperationSteps.CloneJournaled, volumeId);
            RemoveTempFilesOf(target, targetName, newVolumeId);
            temp = target.PathOf(DurableFile.TempName(targetName));
        }
        else
        {
            // Without a journal entry the temp file's name comes from the new volume's id, so a re-run after a crash
            // removes it by name instead of listing the share's directory (an entry per volume file: cold, or on NFS,
            // many round trips; cp reads one name).
            temp = target.PathOf($".{targetName}.tmp-{newVolumeId:N}");
            DurableFile.EnsureNotSymlink(temp);
            RemoveLeftover(temp, newVolumeId);
        }
        var howCopied = "copied";
        try
        {
            ChainImage source;
            if (snapshotId is { } sid)
            {
                source = chain.SnapshotData(sid);
            }
            else if (chain.HasSnapshots)
            {
                await CreateSnapshotLockedAsync(share, volumeId, tempSnapshot!.Value, baseFormat, ct).ConfigureAwait(false);
                chain = VolumeChainReader.Read(share, volumeId, baseFormat);
                source = chain.SnapshotData(tempSnapshot.Value);
            }
            else
            {
                source = chain.Active;
            }

            var sourcePath = chain.PathOf(source.FileName);
            // Progress in bytes: a commit of the sharing clone scans the virtual range, a convert the data it copies.
            if (sharing && await ShareBaseAndApplyOverlaysAsync(share, chain, source, temp, targetName,
                    ForwardingProgress.For(progress, newVolumeId, "copy", source.VirtualSize), ct).ConfigureAwait(false) is { } applied)
            {
                howCopied = $"shared the base's extents, {applied.Describe()}";
                StorageTelemetry.DataWritten.Add(applied.Copied, new KeyValuePair<string, object?>("kind", "copy"));
            }
            else
            {
                var copy = ForwardingProgress.For(progress, newVolumeId, "copy", chain.AllocatedBytesFrom(source));
                var request = await FullCopyRequestAsync(share, target, new ConvertRequest(sourcePath, source.Format, temp, format,
                    OutOfOrderWrites: true, Coroutines: _options.CopyCoroutines, BytesPerSecond: _options.CopyBytesPerSecond > 0 ? _options.CopyBytesPerSecond : null),
                    chain.AllocatedBytesFrom(source), ct).ConfigureAwait(false);
                request = await CopyAsync(request, copy, ct).ConfigureAwait(false);
                howCopied = request.CopyOffload ? "copied server-side (copy_file_range)" : request.DirectIo ? "copied with O_DIRECT" : "copied through the page cache";
                if (request.BytesPerSecond is not null)
                {
                    howCopied += ", " + _options.CopyLimitDescription;
                }
                StorageTelemetry.DataWritten.Add(FileOwnership.AllocatedBytes(temp), new KeyValuePair<string, object?>("kind", "copy"));
            }
            DurableFile.FsyncFile(temp);
            Step(OperationSteps.CloneCopied, volumeId);
            if (size > source.VirtualSize)
            {
                await _qemuImg.ResizeAsync(temp, format, size, ct).ConfigureAwait(false);
                DurableFile.FsyncFile(temp);
                Step(OperationSteps.CloneResized, volumeId);
            }
            SetPermissions(temp, sourcePath);
            File.Move(temp, targetPath, overwrite: false);
            DurableFile.FsyncDirectory(target.LocalPath);
            Step(OperationSteps.CloneRenamed, volumeId);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // A failure (not a crash, not a shutdown) undoes the clone, so that the source volume is
            // not left with a journal entry that every later operation would trip over.
            DurableFile.TryDelete(temp);
            await DropTemporarySnapshotAsync(share, volumeId, tempSnapshot, CancellationToken.None).ConfigureAwait(false);
            if (journal)
            {
                OperationJournal.Clear(share, volumeId);
            }
            throw;
        }

        await DropTemporarySnapshotAsync(share, volumeId, tempSnapshot, ct).ConfigureAwait(false);
        if (journal)
        {
            OperationJournal.Clear(share, volumeId);
        }
        return OperationResult.Done($"created volume {newVolumeId} ({format.ToQemuName()}, {size} bytes) from {what}: {howCopied}", targetName);
    }

    /// <summary>
    /// True when the new volume is exactly what this clone makes: a lone image (no .info file, no backing file) of
    /// the format and size asked for that reads the same as the source. A clone whose journal entry was cleared
    /// but whose outcome was never recorded (the worker killed in between) runs again and finds its own copy
    /// here: AlreadyDone, not VolumeExists. The source cannot have changed since: the volume's commands run in
    /// order and this one has not ended. Read through the chain reader, so a hostile file is refused, not opened.
    /// </summary>
    private async Task<bool> IsFinishedCopyAsync(
        Share share, Guid volumeId, Guid? snapshotId, Share target, Guid newVolumeId, ImageFormat format, long? newSizeBytes, ImageFormat? baseFormat, CancellationToken ct)
    {
        if (File.Exists(target.PathOf(VolumeFileNames.Info(newVolumeId))))
        {
            return false;
        }
        try
        {
            var made = VolumeChainReader.Read(target, newVolumeId, format);
            var source = VolumeChainReader.Read(share, volumeId, baseFormat);
            source.EnsureHealthy();
            var data = snapshotId is { } s ? source.SnapshotData(s) : source.Active;
            var copy = made.Active;
            return made.Images.Count == 1 && copy.BackingFile is null && copy.Format == format
                && copy.VirtualSize == (newSizeBytes ?? data.VirtualSize)
                && await _qemuImg.CompareAsync(source.PathOf(data.FileName), data.Format, made.PathOf(copy.FileName), copy.Format, ct).ConfigureAwait(false);
        }
        // Only what says "not a chain this clone could have made" answers VolumeExists. A passing failure (qemu-img out
        // of time, a flaky mount) goes up as what it is: the command is retried and then finds its own copy.
        catch (StorageException e) when (!e.IsTransient && e.Code is not (StorageErrorCode.QemuImgTimeout or StorageErrorCode.QemuImgMissing
            or StorageErrorCode.ShareUnavailable or StorageErrorCode.Cancelled))
        {
            return false;
        }
    }

    /// <summary>
    /// How a full copy runs: within one share whose server copies itself, server-side (<c>convert -C</c>, through the
    /// page cache: the data need not come back to this host, and the caller's fsync makes it durable; on a local file
    /// system only with <see cref="VolumeEngineOptions.LocalKernelCopy"/>); otherwise in the
    /// pinned mode, or the one measured faster on the target share (measured now when due). A measurement that fails
    /// leaves O_DIRECT, the former default, and is tried again at the next copy. A copy of less than the probe's size
    /// is not worth a measurement, which writes seven times the probe: it takes the share's latest one, or O_DIRECT.
    /// </summary>
    private async Task<ConvertRequest> FullCopyRequestAsync(Share source, Share target, ConvertRequest request, long copyBytes, CancellationToken ct)
    {
        if (_options.ServerSideCopy && source.LocalPath == target.LocalPath && ShareCapabilities.Of(target) is { ServerSideCopy: true } copies
            && (copies.CopiesOnServer || _options.LocalKernelCopy))
        {
            return request with { CopyOffload = true, DirectIo = false };
        }
        if (_options.CopyWithDirectIo is { } pinned)
        {
            return request with { DirectIo = pinned };
        }
        var before = CopyModeProbe.Latest(target);
        if (copyBytes < _options.CopyModeProbeBytes)
        {
            return request with { DirectIo = before is null || before.Fastest == CopyMode.DirectIo };
        }
        try
        {
            var measured = await CopyModeProbe.MeasureAsync(target, _qemuImg, _options.CopyModeProbeBytes, _options.CopyCoroutines,
                _options.CopyModeRemeasureAfter, TimeProvider.System, ct).ConfigureAwait(false);
            if (!ReferenceEquals(before, measured))
            {
                EngineLog.CopyModeMeasured(_logger, target.Export, measured.Describe());
            }
            return request with { DirectIo = measured.Fastest == CopyMode.DirectIo };
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or StorageException)
        {
            EngineLog.CopyModeNotMeasured(_logger, target.Export, e.Message);
            return request with { DirectIo = true };
        }
    }

    /// <summary>Copies with O_DIRECT when asked; a file system that refuses O_DIRECT (tmpfs, some FUSE)
    /// gets the page-cache copy instead, which the caller fsyncs: durable either way. Returns the request that ran.</summary>
    private async Task<ConvertRequest> CopyAsync(ConvertRequest request, IProgress<double>? progress, CancellationToken ct)
    {
        try
        {
            await _qemuImg.ConvertAsync(request, progress, ct).ConfigureAwait(false);
            return request;
        }
        catch (QemuImgException e) when (request.DirectIo && e.Code == StorageErrorCode.QemuImgFailed
            && (e.StandardError.Contains("Invalid argument", StringComparison.Ordinal) || e.StandardError.Contains("O_DIRECT", StringComparison.Ordinal)))
        {
            EngineLog.DirectIoRefused(_logger, request.Target, e.StandardError);
            DurableFile.TryDelete(request.Target);
            var paged = request with { DirectIo = false };
            await _qemuImg.ConvertAsync(paged, progress, ct).ConfigureAwait(false);
            return paged;
        }
    }

    private async Task DropTemporarySnapshotAsync(Share share, Guid volumeId, Guid? tempSnapshot, CancellationToken ct)
    {
        if (tempSnapshot is { } t)
        {
            var info = VolumeChainReader.ReadInfo(share, volumeId);
            if (info is not null && info.Snapshots.ContainsKey(t) || File.Exists(share.PathOf(VolumeFileNames.Overlay(volumeId, t))))
            {
                await DeleteSnapshotLockedAsync(share, volumeId, t, null, ct, journaled: false).ConfigureAwait(false);
            }
        }
    }
}
