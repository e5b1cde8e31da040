using Microsoft.Extensions.Options;
using NfsVolumeWorker.Configuration;
using NfsVolumeWorker.Storage.Inbox;
using NfsVolumeWorker.Storage.Shares;
using NfsVolumeWorker.Telemetry;

namespace NfsVolumeWorker.Execution;

/// <summary>
/// Finds inboxes that have waiting commands and no drainer — what an instance that died (kill -9, power
/// loss) or was stopped leaves — and drains them. The drain lock on the share makes this safe to run on
/// every instance at once. Also prunes old outcome records, and leaves the backlog it saw for the metrics
/// (<see cref="InboxBacklog"/>).
/// </summary>
public sealed class InboxSweeper(ShareMap shares, VolumeExecutor executor, InboxBacklog backlog, IOptions<WorkerOptions> options, ILogger<InboxSweeper> logger) : BackgroundService
{
    private readonly HashSet<string> _unavailable = new(StringComparer.Ordinal);
    private DateTimeOffset _lastPrune = DateTimeOffset.MinValue;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(options.Value.SweepInterval);
        do
        {
            Sweep();
        }
        while (await timer.WaitForNextTickAsync(stoppingToken).ConfigureAwait(false));
    }

    internal void Sweep()
    {
        foreach (var share in shares.All)
        {
            // A share that is gone is said once, when it goes, and once when it is back: not every sweep.
            if (!ShareMarker.IsAvailable(share, out var problem))
            {
                if (_unavailable.Add(share.Export))
                {
                    WorkerLog.ShareUnavailable(logger, share.Export, problem!);
                }
                continue;
            }
            if (_unavailable.Remove(share.Export))
            {
                WorkerLog.ShareAvailableAgain(logger, share.Export);
            }
            try
            {
                var survey = VolumeInbox.Survey(share, VolumeInbox.RemovalBatch, VolumeInbox.IdleGrace);
                int volumes = 0, commands = 0;
                var deepest = new PriorityQueue<Guid, int>(); // the shallowest of the deepest on top
                foreach (var (volumeId, waiting) in survey.Waiting)
                {
                    volumes++;
                    commands += waiting;
                    executor.Schedule(share, volumeId);
                    deepest.Enqueue(volumeId, waiting);
                    if (deepest.Count > InboxBacklog.DeepestKept)
                    {
                        deepest.Dequeue();
                    }
                }
                var listed = deepest.UnorderedItems.OrderByDescending(d => d.Priority).ThenBy(d => d.Element).Select(d => (d.Element, d.Priority)).ToList();
                backlog.Update(share, volumes, commands, listed);
                // After the waiting volumes are scheduled: directories empty for a while (a format-1 share has one
                // per volume that ever got a command) go in bounded batches, so the sweep's cost falls to the waiting work.
                if (survey.Empty.Count > 0 || survey.Leftovers.Count > 0)
                {
                    var removed = VolumeInbox.RemoveEmpty(share, survey);
                    if (removed > 0)
                    {
                        WorkerLog.RemovedEmptyInboxes(logger, removed, share.Export, survey.EmptyLeft);
                    }
                }
                if (DateTimeOffset.UtcNow - _lastPrune > TimeSpan.FromHours(1))
                {
                    var pruned = CommandOutcomes.Prune(share, options.Value.OutcomeRetention)
                        + Storage.Engine.ChangedExtentsFile.Prune(share, options.Value.OutcomeRetention);
                    if (pruned > 0)
                    {
                        WorkerLog.PrunedOutcomes(logger, pruned, share.Export);
                    }
                }
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or Storage.Errors.StorageException)
            {
                backlog.Forget(share);
                WorkerLog.SweepFailed(logger, share.Export, e.Message);
            }
        }
        if (DateTimeOffset.UtcNow - _lastPrune > TimeSpan.FromHours(1))
        {
            _lastPrune = DateTimeOffset.UtcNow;
        }
    }
}

/// <summary>
/// Graceful shutdown of the executor. Registered before the bus, so it stops after the bus has stopped
/// taking messages: running operations get <see cref="WorkerOptions.ShutdownTimeout"/> to finish; a second
/// SIGTERM/SIGINT, or the timeout, cancels them (their inbox entries stay, and the next owner resumes them).
/// </summary>
public sealed class ExecutorLifetime(VolumeExecutor executor, IOptions<WorkerOptions> options, ILogger<ExecutorLifetime> logger) : IHostedService, IDisposable
{
    private readonly CancellationTokenSource _secondSignal = new();
    private readonly List<System.Runtime.InteropServices.PosixSignalRegistration> _signals = [];
    private int _signalCount;

    public Task StartAsync(CancellationToken cancellationToken)
    {
        foreach (var signal in new[] { System.Runtime.InteropServices.PosixSignal.SIGTERM, System.Runtime.InteropServices.PosixSignal.SIGINT })
        {
            _signals.Add(System.Runtime.InteropServices.PosixSignalRegistration.Create(signal, context =>
            {
                if (Interlocked.Increment(ref _signalCount) >= 2)
                {
                    WorkerLog.SecondSignal(logger);
                    _secondSignal.Cancel();
                }
                context.Cancel = false; // let the host's own handler start the graceful stop
            }));
        }
        return Task.CompletedTask;
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        WorkerLog.Draining(logger, executor.ActiveVolumes, options.Value.ShutdownTimeout.TotalSeconds);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _secondSignal.Token);
        await executor.StopAsync(options.Value.ShutdownTimeout, linked.Token).ConfigureAwait(false);
    }

    public void Dispose()
    {
        foreach (var s in _signals)
        {
            s.Dispose();
        }
        _secondSignal.Dispose();
    }
}
