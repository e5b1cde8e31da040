using System.Collections.Concurrent;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Broker;
using NfsVolumeWorker.Configuration;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Storage.Inbox;
using NfsVolumeWorker.Storage.Shares;
using NfsVolumeWorker.Telemetry;

namespace NfsVolumeWorker.Execution;

/// <summary>
/// Runs the commands waiting in volume inboxes (and short commands inline, <see cref="TryRunInlineAsync"/>): one
/// drain loop per volume (commands of one volume one at a time, in arrival order), loops of different volumes in parallel up to
/// <see cref="WorkerOptions.MaxParallelVolumes"/>. A loop holds the volume's drain lock on the share, so
/// across all instances only one runs a given volume's commands.
/// </summary>
public sealed class VolumeExecutor : IAsyncDisposable
{
    private readonly CommandRunner _runner;
    private readonly ILogger<VolumeExecutor> _logger;
    private readonly SemaphoreSlim _slots;
    private readonly ConcurrentDictionary<(string Share, Guid Volume), Task> _loops = new();
    private readonly ConcurrentDictionary<(string Share, Guid Volume), DrainFailure> _failing = new();
    private readonly CancellationTokenSource _stopping = new();
    private volatile bool _accepting = true;

    public VolumeExecutor(CommandRunner runner, IOptions<WorkerOptions> options, ILogger<VolumeExecutor> logger)
    {
        _runner = runner;
        _logger = logger;
        _slots = new SemaphoreSlim(options.Value.MaxParallelVolumes);
    }

    /// <summary>Volumes with a running drain loop in this instance.</summary>
    public int ActiveVolumes => _loops.Count;

    /// <summary>True while this instance's drain loop for the volume runs (or waits for a slot).</summary>
    public bool IsDraining(Share share, Guid volumeId)
    {
        ArgumentNullException.ThrowIfNull(share);
        return _loops.ContainsKey((share.LocalPath, volumeId));
    }

    /// <summary>Volumes whose drain loop failed for a reason outside any command (the share, the broker) and
    /// waits out its back-off before the next attempt; empty when all is well. Health reports them.</summary>
    public IReadOnlyCollection<DrainFailure> FailingVolumes => _failing.Values.ToList();

    /// <summary>Makes sure the volume's inbox is being drained (by this instance or another), unless its drain
    /// loop is waiting out a back-off after a failure: then the retry is already planned.</summary>
    public void Schedule(Share share, Guid volumeId)
    {
        if (!_accepting)
        {
            return;
        }
        var key = (share.LocalPath, volumeId);
        if (_loops.ContainsKey(key) || (_failing.TryGetValue(key, out var failure) && failure.NextAttemptAt > DateTimeOffset.UtcNow))
        {
            return;
        }
        var start = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Task loop;
        // The loop outlives the call that scheduled it and runs other commands: it must not carry that call's
        // log scope (command id) or trace context along, or every later command's lines would name the first.
        using (ExecutionContext.SuppressFlow())
        {
            loop = Task.Run(() => RunLoopAsync(share, volumeId, key, start.Task));
        }
        if (_loops.TryAdd(key, loop))
        {
            start.SetResult();
        }
        else
        {
            start.SetCanceled();
        }
    }

    /// <summary>
    /// Runs a short command now, in the caller, without an inbox entry, when nothing of its volume waits or runs:
    /// no drain loop of this instance, the drain lock taken at once, and under that lock an empty inbox. It takes no
    /// <see cref="WorkerOptions.MaxParallelVolumes"/> slot: those bound the long work of the drain loops, and an inline
    /// run is short and at most one per partition this instance owns (with a slot required, a storm whose partitions
    /// all ran inline at once sent the rest through the inbox, two syncs dearer, and a short command waited while long
    /// copies held every slot). The drain lock keeps the volume's order across instances: a drainer elsewhere holds it while it
    /// works through entries, and entries appended by another instance (after a hand-over) are seen under it.
    /// Appends that land while this runs (possible only when the partition moved meanwhile) are drained after it.
    /// </summary>
    /// <returns>True when the command ended (outcome recorded, terminal event confirmed); false when it did not run
    /// or did not end (its first attempt failed transiently, or this instance is stopping): the caller queues it.</returns>
    public async Task<bool> TryRunInlineAsync(Share share, VolumeCommand command, int partition, string? traceParent, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(share);
        ArgumentNullException.ThrowIfNull(command);
        var key = (share.LocalPath, command.VolumeId);
        if (!_accepting || _failing.ContainsKey(key))
        {
            return false;
        }
        // Claimed like a drain loop (same map), so that no loop of this instance starts for the volume meanwhile,
        // IsDraining and ActiveVolumes count it, and StopAsync waits for it.
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        if (!_loops.TryAdd(key, done.Task))
        {
            return false;
        }
        var ran = false;
        try
        {
            if (!_accepting)
            {
                return false;
            }
            using var drain = VolumeInbox.TryTakeDrain(share, command.VolumeId);
            if (drain is null || VolumeInbox.List(share, command.VolumeId).Count > 0)
            {
                return false; // drained elsewhere, or entries wait: behind them, through the inbox
            }
            WorkerLog.RunningInline(_logger, command.GetType().Name, command.CommandId, command.VolumeId, partition);
            WorkerTelemetry.ActiveVolumes.Add(1);
            try
            {
                using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _stopping.Token);
                ran = await _runner.RunInlineAsync(share, command, partition, traceParent, linked.Token).ConfigureAwait(false);
                return ran;
            }
            catch (OperationCanceledException) when (_stopping.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
            {
                return false; // the grace period ran out: queued, the next owner resumes it from the journal
            }
            finally
            {
                WorkerTelemetry.ActiveVolumes.Add(-1);
            }
        }
        finally
        {
            _loops.TryRemove(key, out _);
            done.SetResult();
            // A drain loop that found the drain lock taken meanwhile left its entries to the holder: this run, which
            // does not loop. Look once more now that the lock is free.
            if (ran && _accepting && HasEntries(share, command.VolumeId))
            {
                Schedule(share, command.VolumeId);
            }
        }
    }

    private async Task RunLoopAsync(Share share, Guid volumeId, (string, Guid) key, Task start)
    {
        try
        {
            await start.ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            return; // another loop for this volume won the race
        }
        var ranSome = false;
        TimeSpan? retryIn = null;
        try
        {
            await _slots.WaitAsync(_stopping.Token).ConfigureAwait(false);
            try
            {
                ShareMarker.EnsureAvailable(share); // gone: back off until it returns, touching nothing
                using var drain = VolumeInbox.TryTakeDrain(share, volumeId);
                if (drain is null)
                {
                    return; // another instance drains this volume; it loops until the inbox is empty
                }
                WorkerTelemetry.ActiveVolumes.Add(1);
                try
                {
                    // After a stop request the command running finishes and the loop ends: what is left in the
                    // inbox is another instance's to run (its sweeper finds it), or this one's after a restart.
                    while (_accepting && !_stopping.IsCancellationRequested)
                    {
                        var entries = VolumeInbox.List(share, volumeId);
                        if (entries.Count == 0)
                        {
                            break;
                        }
                        ranSome = true;
                        await _runner.RunAsync(share, volumeId, entries[0], _stopping.Token).ConfigureAwait(false);
                        VolumeInbox.Remove(entries[0]);
                    }
                    _failing.TryRemove(key, out _);
                }
                finally
                {
                    WorkerTelemetry.ActiveVolumes.Add(-1);
                }
            }
            finally
            {
                _slots.Release();
            }
        }
        catch (OperationCanceledException) when (_stopping.IsCancellationRequested)
        {
            // Shutting down: what is left in the inbox is run by the next owner.
        }
        catch (Exception e)
        {
            // Commands themselves never get here (every failure of one becomes its CommandFailed): this is the
            // share or the broker. Back off, so a fault that persists costs a log line per back-off, not a spin.
            var attempt = _failing.TryGetValue(key, out var previous) ? previous.Attempts + 1 : 1;
            var delay = RetryBackoff.Delay(attempt);
            _failing[key] = new DrainFailure(share.Export, volumeId, attempt, e.GetType().Name + ": " + e.Message, DateTimeOffset.UtcNow + delay);
            WorkerTelemetry.DrainFailures.Add(1);
            WorkerLog.DrainFailed(_logger, volumeId, share.Export, attempt, delay.TotalSeconds, e);
            retryIn = delay;
        }
        finally
        {
            _loops.TryRemove(key, out _);
            if (retryIn is { } delay)
            {
                _ = RetryAfterAsync(share, volumeId, delay);
            }
            // An append may have landed after the last look at the inbox; look again now that this loop is gone.
            else if (ranSome && _accepting && HasEntries(share, volumeId))
            {
                Schedule(share, volumeId);
            }
        }
    }

    private async Task RetryAfterAsync(Share share, Guid volumeId, TimeSpan delay)
    {
        try
        {
            await Task.Delay(delay, _stopping.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            return;
        }
        Schedule(share, volumeId);
    }

    private static bool HasEntries(Share share, Guid volumeId)
    {
        try
        {
            return VolumeInbox.List(share, volumeId).Count > 0;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or Storage.Errors.StorageException)
        {
            return false; // the share is failing: the sweeper looks again
        }
    }

    /// <summary>Stops taking new work and waits up to <paramref name="grace"/> for running operations; then cancels them.</summary>
    public async Task StopAsync(TimeSpan grace, CancellationToken hardStop)
    {
        _accepting = false;
        var all = Task.WhenAll(_loops.Values);
        var finished = await Task.WhenAny(all, Task.Delay(grace, hardStop)).ConfigureAwait(false) == all;
        if (!finished)
        {
            WorkerLog.ShutdownCancelling(_logger, _loops.Count);
            await _stopping.CancelAsync().ConfigureAwait(false);
            await Task.WhenAny(all, Task.Delay(TimeSpan.FromSeconds(30), CancellationToken.None)).ConfigureAwait(false);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stopping.CancelAsync().ConfigureAwait(false);
        _stopping.Dispose();
        _slots.Dispose();
    }
}

/// <summary>A volume whose drain loop failed outside any command, and when it is tried again.</summary>
/// <param name="Share">The share, as named in the configuration.</param>
/// <param name="VolumeId">The volume.</param>
/// <param name="Attempts">Failed attempts in a row.</param>
/// <param name="LastError">The last failure's type and message.</param>
/// <param name="NextAttemptAt">When the drain loop runs again.</param>
public sealed record DrainFailure(string Share, Guid VolumeId, int Attempts, string LastError, DateTimeOffset NextAttemptAt);
