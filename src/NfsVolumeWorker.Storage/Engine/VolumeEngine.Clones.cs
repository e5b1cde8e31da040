using System.Security.Cryptography;
using Microsoft.Win32.SafeHandles;
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
        if (journal)
        {
            Journal(share, Intent(snapshotId is null ? PendingOperationKind.CloneVolume : PendingOperationKind.CreateVolumeFromSnapshot,
                volumeId, snapshotId, newVolumeId, targetFormat, newSizeBytes, targetShareName, baseFormat));
            Step(OperationSteps.CloneJournaled, volumeId);
        }
        RemoveTempFilesOf(target, targetName, newVolumeId);
        var temp = target.PathOf(DurableFile.TempName(targetName));
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
                    OutOfOrderWrites: true, Coroutines: _options.CopyCoroutines), ct).ConfigureAwait(false);
                request = await CopyAsync(request, copy, ct).ConfigureAwait(false);
                howCopied = request.CopyOffload ? "copied server-side (copy_file_range)" : request.DirectIo ? "copied with O_DIRECT" : "copied through the page cache";
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
    /// Builds a clone of <paramref name="source"/> in <paramref name="temp"/> at the cost of what changed since the
    /// base: the base's extents are shared (FICLONE), then what the overlays from the bottom up to the source hold is
    /// applied (the source chain is only read): natively for a raw base (<see cref="ApplyOverlayExtents"/>), otherwise
    /// by <c>qemu-img commit</c>. Returns how it was applied, or null when extents could not be shared after all (then
    /// nothing is left behind and the caller copies).
    /// </summary>
    private async Task<AppliedOverlays?> ShareBaseAndApplyOverlaysAsync(Share share, VolumeChain chain, ChainImage source, string temp, string targetName,
        IProgress<double>? progress, CancellationToken ct)
    {
        var layers = new List<ChainImage> { source };
        while (layers[0].BackingFile is { } below)
        {
            layers.Insert(0, chain.Find(below) ?? throw chain.Broken($"{layers[0].FileName} names {below}, which is not in the chain"));
        }
        // Read before anything is written: whether the overlays can be applied natively is known from the map alone.
        var extents = layers.Count > 1 && layers[0].Format == ImageFormat.Raw
            ? await _qemuImg.MapAsync(chain.PathOf(source.FileName), source.Format, ct).ConfigureAwait(false)
            : null;
        var notNative = extents is null ? null : WhyNotNative(extents, layers.Count - 1);
        if (!ExtentSharing.TryClone(chain.PathOf(layers[0].FileName), temp, FileMode))
        {
            return null;
        }
        if (layers[0].VirtualSize < source.VirtualSize)
        {
            // After an extend the overlays are larger than the base: grow the copy first, so their tails apply.
            await _qemuImg.ResizeAsync(temp, layers[0].Format, source.VirtualSize, ct).ConfigureAwait(false);
        }
        if (layers.Count == 1)
        {
            return new AppliedOverlays(0, 0, 0, 0, null);
        }
        if (extents is not null && notNative is null)
        {
            return ApplyOverlayExtents(chain, layers, extents, temp, progress, ct);
        }
        EngineLog.OverlaysByQemuImgCommit(_logger, source.FileName, notNative ?? $"the base is {layers[0].Format.ToQemuName()}");
        // The overlays' shared-extent scratch copies are chained onto the clone (each re-pointed at the one below,
        // the lowest at the clone) and committed into it by one qemu-img call, not one commit per overlay.
        long applied = 0;
        var scratches = new List<string>();
        try
        {
            var below = Path.GetFileName(temp);
            var belowFormat = layers[0].Format;
            for (var i = 1; i < layers.Count; i++)
            {
                var layerPath = chain.PathOf(layers[i].FileName);
                var scratch = share.PathOf(DurableFile.TempName(targetName));
                scratches.Add(scratch);
                if (!ExtentSharing.TryClone(layerPath, scratch, FileMode))
                {
                    File.Copy(layerPath, scratch, overwrite: false);
                }
                await _qemuImg.RebaseUnsafeAsync(scratch, below, belowFormat, ct).ConfigureAwait(false);
                (below, belowFormat) = (Path.GetFileName(scratch), ImageFormat.Qcow2);
                applied += FileOwnership.AllocatedBytes(layerPath);
            }
            await _qemuImg.CommitAsync(new CommitRequest(scratches[^1], Base: temp), progress, ct).ConfigureAwait(false);
        }
        finally
        {
            foreach (var scratch in scratches)
            {
                DurableFile.TryDelete(scratch);
            }
        }
        return new AppliedOverlays(applied, 0, applied, 0, "qemu-img commit");
    }

    /// <summary>Why the overlays of a raw base cannot be applied from the source's map: null when every range an
    /// overlay provides is either stored data at a known offset in its file or reads as zeroes.</summary>
    private static string? WhyNotNative(IReadOnlyList<MapExtent> extents, int baseDepth)
    {
        if (extents.FirstOrDefault(e => e.Depth > baseDepth) is { } deeper)
        {
            // Not expected (the engine read the same backing names): a map it cannot place is not applied by hand.
            return $"qemu-img maps {deeper.Length} bytes at {deeper.Start} to depth {deeper.Depth}, below the base at depth {baseDepth}";
        }
        return extents.FirstOrDefault(e => e.Depth < baseDepth && !(e.Data ? e.Offset is not null : e.Zero)) is { } e
            ? $"the image at depth {e.Depth} of the source's chain holds {e.Length} bytes at {e.Start} that qemu-img maps to no offset in its file (compressed or encrypted)"
            : null;
    }

    /// <summary>
    /// Applies to the raw clone <paramref name="temp"/> (the base's extents shared) every range the overlays provide,
    /// as the source's <c>qemu-img map</c> says, top-down resolved: stored data is shared from the overlay's file
    /// (FICLONERANGE: a qcow2 data cluster sits cluster-aligned in its file, so whole clusters share; nothing is read
    /// or written) or, where a range cannot share, copied from there (copy_file_range, else read and write); a range
    /// an overlay marks as zeroes is punched. The caller fsyncs the clone. The source chain is only read.
    /// </summary>
    private AppliedOverlays ApplyOverlayExtents(VolumeChain chain, List<ChainImage> layers, IReadOnlyList<MapExtent> extents, string temp,
        IProgress<double>? progress, CancellationToken ct)
    {
        var baseDepth = layers.Count - 1;
        var ranges = extents.Where(e => e.Depth < baseDepth).ToList();
        var total = Math.Max(1, ranges.Sum(e => e.Length));
        long shared = 0, copied = 0, zeroed = 0;
        var files = new Dictionary<int, SafeFileHandle>();
        try
        {
            using var target = File.OpenHandle(temp, System.IO.FileMode.Open, FileAccess.ReadWrite);
            foreach (var e in ranges)
            {
                ct.ThrowIfCancellationRequested();
                if (!e.Data)
                {
                    Holes.Zero(target, e.Start, e.Length);
                    zeroed += e.Length;
                }
                else
                {
                    if (!files.TryGetValue(e.Depth, out var overlay))
                    {
                        overlay = File.OpenHandle(chain.PathOf(layers[baseDepth - e.Depth].FileName), System.IO.FileMode.Open, FileAccess.Read);
                        files.Add(e.Depth, overlay);
                    }
                    if (ExtentSharing.TryCloneRange(overlay, e.Offset!.Value, target, e.Start, e.Length))
                    {
                        shared += e.Length;
                    }
                    else
                    {
                        ServerSideCopy.CopyRange(overlay, e.Offset!.Value, target, e.Start, e.Length);
                        copied += e.Length;
                    }
                }
                progress?.Report((double)(shared + copied + zeroed) / total);
            }
        }
        finally
        {
            foreach (var file in files.Values)
            {
                file.Dispose();
            }
        }
        EngineLog.OverlaysApplied(_logger, layers[^1].FileName, ranges.Count, shared, copied, zeroed);
        return new AppliedOverlays(shared + copied + zeroed, shared, copied, zeroed, null);
    }

    /// <summary>What applying the overlays to a sharing clone did: bytes of overlay ranges in all, of them shared
    /// with the overlays' files, copied (written), and zeroed; <paramref name="By"/> names the tool when not native.</summary>
    private sealed record AppliedOverlays(long Bytes, long Shared, long Copied, long Zeroed, string? By)
    {
        public string Describe() => By is not null
            ? $"applied {Bytes} bytes of overlay data with {By}"
            : $"applied {Bytes} bytes of overlay data ({Shared} shared with the overlays, {Copied} copied, {Zeroed} zeroed)";
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
        catch (StorageException)
        {
            return false; // not a chain this clone could have made: VolumeExists
        }
    }

    /// <summary>
    /// How a full copy runs: within one share that copies itself, server-side (<c>convert -C</c>, through the page
    /// cache: the data need not come back to this host, and the caller's fsync makes it durable); otherwise in the
    /// pinned mode, or the one measured faster on the target share (measured now when due). A measurement that fails
    /// leaves O_DIRECT, the former default, and is tried again at the next copy.
    /// </summary>
    private async Task<ConvertRequest> FullCopyRequestAsync(Share source, Share target, ConvertRequest request, CancellationToken ct)
    {
        if (_options.ServerSideCopy && source.LocalPath == target.LocalPath && ShareCapabilities.Of(target).ServerSideCopy)
        {
            return request with { CopyOffload = true, DirectIo = false };
        }
        if (_options.CopyWithDirectIo is { } pinned)
        {
            return request with { DirectIo = pinned };
        }
        var before = CopyModeProbe.Latest(target);
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
