using System.Collections.Concurrent;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Configuration;
using NfsVolumeWorker.Storage.Inbox;
using NfsVolumeWorker.Storage.Shares;
using NfsVolumeWorker.Telemetry;

namespace NfsVolumeWorker.Execution;

/// <summary>
/// Runs the commands waiting in volume inboxes: one drain loop per volume (commands of one volume one
/// at a time, in arrival order), loops of different volumes in parallel up to
/// <see cref="WorkerOptions.MaxParallelVolumes"/>. A loop holds the volume's drain lock on the share, so
/// across all instances only one runs a given volume's commands.
/// </summary>
public sealed class VolumeExecutor : IAsyncDisposable
{
    private readonly CommandRunner _runner;
    private readonly ILogger<VolumeExecutor> _logger;
    private readonly SemaphoreSlim _slots;
    private readonly ConcurrentDictionary<(string Share, Guid Volume), Task> _loops = new();
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

    /// <summary>Makes sure the volume's inbox is being drained (by this instance or another).</summary>
    public void Schedule(Share share, Guid volumeId)
    {
        if (!_accepting)
        {
            return;
        }
        var key = (share.LocalPath, volumeId);
        if (_loops.ContainsKey(key))
        {
            return;
        }
        var start = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var loop = RunLoopAsync(share, volumeId, key, start.Task);
        if (_loops.TryAdd(key, loop))
        {
            start.SetResult();
        }
        else
        {
            start.SetCanceled();
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
        try
        {
            await _slots.WaitAsync(_stopping.Token).ConfigureAwait(false);
            try
            {
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
            WorkerLog.DrainFailed(_logger, volumeId, share.Export, e);
        }
        finally
        {
            _loops.TryRemove(key, out _);
            // An append may have landed after the last look at the inbox; look again now that this loop is gone.
            if (ranSome && _accepting && VolumeInbox.List(share, volumeId).Count > 0)
            {
                Schedule(share, volumeId);
            }
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
