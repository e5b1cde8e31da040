using System.Collections.Concurrent;
using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Storage.Chains;
using NfsVolumeWorker.Storage.Diagnostics;
using NfsVolumeWorker.Storage.Durability;
using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Locking;
using NfsVolumeWorker.Storage.Qcow2;
using NfsVolumeWorker.Storage.QemuImg;
using NfsVolumeWorker.Storage.Shares;

namespace NfsVolumeWorker.Storage.Engine;

/// <summary>
/// The volume operations of Cinder's NFS driver, made crash-safe: every operation holds the volume's
/// lock on the share, changes the disk in steps that each leave a readable chain, makes each change
/// durable before the next, and can be run again from any intermediate state to finish the job.
/// </summary>
public sealed partial class VolumeEngine
{
    private readonly ShareMap _shares;
    private readonly QemuImgRunner _qemuImg;
    private readonly VolumeEngineOptions _options;
    private readonly ILogger _logger;
    private readonly IStepObserver _steps;
    private readonly ConcurrentDictionary<(string Share, Guid Volume), string> _running = new();
    private long _overlaps;

    public VolumeEngine(ShareMap shares, QemuImgRunner qemuImg, IOptions<VolumeEngineOptions> options, ILogger<VolumeEngine> logger, IStepObserver? steps = null)
    {
        _shares = shares;
        _qemuImg = qemuImg;
        _options = options.Value;
        _logger = logger;
        _steps = steps ?? NoStepObserver.Instance;
    }

    /// <summary>Times an operation started on a volume while another ran on it: in this process, or in another
    /// live process of this host (see <see cref="RunningMarker"/>). Must stay 0: the lock prevents it.</summary>
    public long OverlapsDetected => Interlocked.Read(ref _overlaps);

    public ShareMap Shares => _shares;

    /// <summary>Reads a volume's chain (for inspection; takes no lock).</summary>
    public VolumeChain ReadChain(string? share, Guid volumeId, ImageFormat? baseFormat = null) =>
        VolumeChainReader.Read(_shares.Resolve(share), Ids.Require(volumeId, "volume id"), baseFormat);

    private UnixFileMode FileMode => _options.NewFileMode;

    /// <summary>Runs <paramref name="body"/> under the volume's lock, after the request's guards and after
    /// finishing any interrupted operation the journal records for the volume.</summary>
    private async Task<OperationResult> RunLockedAsync(
        string operation, VolumeRequest request, PendingOperation? intent,
        Func<Share, CancellationToken, Task<OperationResult>> body, CancellationToken cancellationToken)
    {
        Ids.Require(request.VolumeId, "volume id");
        Guard(request);
        var share = ShareFor(request.Share);
        var started = Stopwatch.GetTimestamp();
        using var activity = StorageTelemetry.ActivitySource.StartActivity("volume " + operation);
        activity?.SetTag("nfsvol.volume_id", request.VolumeId.ToString());
        activity?.SetTag("nfsvol.share", share.Export);
        using var scope = _logger.BeginScope(new LogScope(new("VolumeId", request.VolumeId), new("Operation", operation)));
        EngineLog.OperationStarted(_logger, operation, request.VolumeId, share.Export);
        try
        {
            // Only advice, so safe before the lock: nearly every operation reads the .info and the base's header under
            // it; with a cold cache their reads then overlap the lock's, the marker's and the journal's round trips.
            ImageHeaderReader.Prefetch([share.PathOf(VolumeFileNames.Info(request.VolumeId)), share.PathOf(VolumeFileNames.Base(request.VolumeId))]);
            using var volumeLock = await VolumeLock.AcquireAsync(share, request.VolumeId, request.LockTimeout ?? _options.LockTimeout, cancellationToken).ConfigureAwait(false);
            var key = (share.LocalPath, request.VolumeId);
            var inProcess = !_running.TryAdd(key, operation);
            try
            {
                // Inside the try: a marker that cannot be written (the share failing) must not leave the key behind.
                var otherProcess = RunningMarker.Enter(volumeLock, operation);
                if (inProcess || otherProcess is not null)
                {
                    Interlocked.Increment(ref _overlaps);
                    StorageTelemetry.Overlaps.Add(1);
                    EngineLog.OverlapDetected(_logger, request.VolumeId, otherProcess ?? _running.GetValueOrDefault(key) ?? "?", operation);
                }
                var finished = await FinishInterruptedAsync(share, request.VolumeId, intent, operation, cancellationToken).ConfigureAwait(false);
                var result = await body(share, cancellationToken).ConfigureAwait(false);
                if (finished.Count > 0)
                {
                    result = result with { FinishedInterrupted = finished };
                }
                EngineLog.OperationFinished(_logger, operation, request.VolumeId, result.Outcome.ToString(), (long)Stopwatch.GetElapsedTime(started).TotalMilliseconds, result.Message);
                activity?.SetTag("nfsvol.outcome", result.Outcome.ToString());
                StorageTelemetry.OperationDuration.Record(Stopwatch.GetElapsedTime(started).TotalSeconds,
                    new KeyValuePair<string, object?>("operation", operation), new KeyValuePair<string, object?>("outcome", result.Outcome.ToString()));
                return result;
            }
            finally
            {
                RunningMarker.Exit(volumeLock);
                _running.TryRemove(key, out _);
            }
        }
        catch (StorageException e) when (e.Code != StorageErrorCode.ShareUnavailable && ShareMarker.IsGone(share, out var gone))
        {
            // The share went away under the operation: whatever it then failed on (a file not found in the empty
            // mount point, say) is not the volume's state. Transient: it runs again when the share is back.
            var mapped = new StorageException(StorageErrorCode.ShareUnavailable, $"{gone} ({operation} stopped: {e.Message})", e) { VolumeId = request.VolumeId };
            EngineLog.OperationFailed(_logger, operation, request.VolumeId, mapped.Code.ToString(), mapped.Message);
            activity?.SetStatus(ActivityStatusCode.Error, mapped.Code.ToString());
            throw mapped;
        }
        catch (StorageException e)
        {
            EngineLog.OperationFailed(_logger, operation, request.VolumeId, e.Code.ToString(), e.Message);
            activity?.SetStatus(ActivityStatusCode.Error, e.Code.ToString());
            StorageTelemetry.OperationDuration.Record(Stopwatch.GetElapsedTime(started).TotalSeconds,
                new KeyValuePair<string, object?>("operation", operation), new KeyValuePair<string, object?>("outcome", e.Code.ToString()));
            throw;
        }
        catch (IOException e)
        {
            var mapped = !ShareMarker.IsGone(share, out var gone)
                ? MapIo(e, request.VolumeId)
                : new StorageException(StorageErrorCode.ShareUnavailable, $"{gone} ({operation} stopped: {e.Message})", e) { VolumeId = request.VolumeId };
            EngineLog.OperationFailed(_logger, operation, request.VolumeId, mapped.Code.ToString(), mapped.Message);
            activity?.SetStatus(ActivityStatusCode.Error, mapped.Code.ToString());
            throw mapped;
        }
        catch (UnauthorizedAccessException e)
        {
            var mapped = new StorageException(StorageErrorCode.ShareUnavailable, $"Permission denied on {share.Export}: {e.Message}", e) { VolumeId = request.VolumeId };
            EngineLog.OperationFailed(_logger, operation, request.VolumeId, mapped.Code.ToString(), mapped.Message);
            throw mapped;
        }
    }

    /// <summary>Refuses what the engine must not touch, before anything is read or locked.</summary>
    private static void Guard(VolumeRequest request)
    {
        if (!string.IsNullOrEmpty(request.EncryptionKeyId))
        {
            throw new StorageException(StorageErrorCode.VolumeEncrypted,
                $"Volume {request.VolumeId} is encrypted (encryption key {request.EncryptionKeyId}); there is no key manager here, so nothing was done.") { VolumeId = request.VolumeId };
        }
        if (request.Attached)
        {
            throw new StorageException(StorageErrorCode.VolumeAttached,
                $"Volume {request.VolumeId} is attached to an instance; snapshots of attached volumes need the hypervisor (Nova), which this worker does not drive. Nothing was done.") { VolumeId = request.VolumeId };
        }
    }

    private Share ShareFor(string? export)
    {
        var share = _shares.Resolve(export);
        ShareMarker.EnsureAvailable(share);
        return share;
    }

    private void Step(string step, Guid volumeId)
    {
        EngineLog.Step(_logger, volumeId, step);
        Activity.Current?.AddEvent(new ActivityEvent(step));
        _steps.OnStep(step, volumeId);
    }

    private async Task<IReadOnlyList<string>> FinishInterruptedAsync(Share share, Guid volumeId, PendingOperation? intent, string operation, CancellationToken cancellationToken)
    {
        var pending = OperationJournal.Read(share, volumeId);
        if (pending is null || (intent is not null && pending.SameAs(intent)))
        {
            return [];
        }
        EngineLog.ResumingInterrupted(_logger, volumeId, pending.Describe(), pending.StartedAt, operation);
        await ResumeAsync(share, pending, cancellationToken).ConfigureAwait(false);
        return [pending.Describe()];
    }

    /// <summary>Runs a journaled operation again (the lock on its volume is held).</summary>
    private Task<OperationResult> ResumeAsync(Share share, PendingOperation pending, CancellationToken cancellationToken)
    {
        ImageFormat? format = ImageFormatNames.TryParse(pending.TargetFormat, out var f) ? f : null;
        ImageFormat? baseFormat = ImageFormatNames.TryParse(pending.BaseFormat, out var b) ? b : null;
        return pending.Kind switch
        {
            PendingOperationKind.DeleteSnapshot => DeleteSnapshotLockedAsync(share, pending.VolumeId, pending.SnapshotId!.Value, null, cancellationToken, baseFormat),
            PendingOperationKind.DeleteVolume => DeleteVolumeLockedAsync(share, pending.VolumeId, cancellationToken),
            PendingOperationKind.CreateVolumeFromSnapshot => CloneLockedAsync(share, pending.VolumeId, pending.SnapshotId, pending.NewVolumeId!.Value, format, pending.NewSizeBytes, pending.TargetShare, null, cancellationToken, baseFormat),
            PendingOperationKind.CloneVolume => CloneLockedAsync(share, pending.VolumeId, null, pending.NewVolumeId!.Value, format, pending.NewSizeBytes, pending.TargetShare, null, cancellationToken, baseFormat),
            _ => throw new StorageException(StorageErrorCode.InfoFileCorrupt, $"Unknown journal entry kind {pending.Kind}."),
        };
    }

    /// <summary>Finishes whatever the journal records for a volume (used by check --repair).</summary>
    public async Task<string?> FinishInterruptedAsync(string? share, Guid volumeId, CancellationToken cancellationToken = default)
    {
        var s = ShareFor(share);
        using var volumeLock = await VolumeLock.AcquireAsync(s, volumeId, _options.LockTimeout, cancellationToken).ConfigureAwait(false);
        var pending = OperationJournal.Read(s, volumeId);
        if (pending is null)
        {
            return null;
        }
        EngineLog.ResumingInterrupted(_logger, volumeId, pending.Describe(), pending.StartedAt, "check --repair");
        await ResumeAsync(s, pending, cancellationToken).ConfigureAwait(false);
        return pending.Describe();
    }

    private static PendingOperation Intent(PendingOperationKind kind, Guid volumeId, Guid? snapshotId = null, Guid? newVolumeId = null,
        ImageFormat? targetFormat = null, long? newSize = null, string? targetShare = null, ImageFormat? baseFormat = null) =>
        new(kind, volumeId, snapshotId, newVolumeId, targetFormat?.ToQemuName(), newSize, targetShare, DateTimeOffset.UtcNow, baseFormat?.ToQemuName());

    private void Journal(Share share, PendingOperation intent)
    {
        var existing = OperationJournal.Read(share, intent.VolumeId);
        if (existing is null || !existing.SameAs(intent))
        {
            OperationJournal.Write(share, intent, FileMode);
        }
    }

    /// <summary>Deletes hidden temp files left next to <paramref name="target"/> by an interrupted write.</summary>
    private void RemoveTempFilesOf(Share share, string target, Guid volumeId)
    {
        foreach (var file in Directory.EnumerateFiles(share.LocalPath, "." + target + ".tmp-*"))
        {
            DurableFile.EnsureNotSymlink(file);
            File.Delete(file);
            EngineLog.RemovedLeftover(_logger, volumeId, Path.GetFileName(file));
        }
    }

    /// <summary>Removes one file a crashed run may have left, known by its name (nothing references it), and logs it.</summary>
    private void RemoveLeftover(string path, Guid volumeId)
    {
        if (DurableFile.TryDelete(path))
        {
            EngineLog.RemovedLeftover(_logger, volumeId, Path.GetFileName(path));
        }
    }

    /// <summary>Gives a new file the configured mode and (as root) the owner of the file it derives from.</summary>
    private void SetPermissions(string path, string? ownerReference)
    {
        File.SetUnixFileMode(path, FileMode);
        if (ownerReference is not null)
        {
            FileOwnership.CopyOwner(ownerReference, path);
        }
    }

    private static StorageException MapIo(IOException e, Guid volumeId)
    {
        var errno = e.HResult & 0xFFFF;
        return e.Message.Contains("No space left", StringComparison.OrdinalIgnoreCase) || errno == 28
            ? new StorageException(StorageErrorCode.NoSpace, $"No space left on the share: {e.Message}", e) { VolumeId = volumeId }
            : e.Message.Contains("Stale", StringComparison.OrdinalIgnoreCase) || e.Message.Contains("temporarily unavailable", StringComparison.OrdinalIgnoreCase)
                ? new StorageException(StorageErrorCode.TransientIo, $"Transient I/O error: {e.Message}", e) { VolumeId = volumeId }
                : new StorageException(StorageErrorCode.ShareUnavailable, $"I/O error on the share: {e.Message}", e) { VolumeId = volumeId };
    }

    /// <summary>Refuses a size the share's file system or the image format cannot hold, before anything is written.</summary>
    private static void RequireFits(Share share, long bytes, ImageFormat format, string what, Guid volumeId)
    {
        if (VolumeSizeLimit.Problem(share, bytes, format, what) is { } problem)
        {
            throw new StorageException(StorageErrorCode.InvalidRequest, $"Volume {volumeId}: {problem}. Nothing was changed.") { VolumeId = volumeId };
        }
    }

    private static long RequirePositiveSize(long bytes, string what) => bytes > 0
        ? bytes
        : throw new StorageException(StorageErrorCode.InvalidRequest, $"The {what} must be a positive number of bytes; got {bytes}.");
}
