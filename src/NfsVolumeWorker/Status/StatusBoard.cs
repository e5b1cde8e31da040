using System.Collections.Concurrent;
using NfsVolumeWorker.Storage.Engine;

namespace NfsVolumeWorker.Status;

/// <summary>
/// What the status page shows that nothing else keeps: the operations running in this instance with their
/// latest progress, and the recent <c>CommandFailed</c> outcomes. In memory only, bounded, cheap to write on
/// the command path (a dictionary entry per running command, a ring of <see cref="FailureCapacity"/> failures).
/// </summary>
public sealed class StatusBoard(TimeProvider time)
{
    /// <summary>Failures kept (the page shows those of the last <see cref="FailureWindow"/>).</summary>
    public const int FailureCapacity = 200;

    /// <summary>How far back the page lists failures.</summary>
    public static readonly TimeSpan FailureWindow = TimeSpan.FromHours(1);

    private readonly ConcurrentDictionary<Guid, RunningEntry> _running = new();
    private readonly Queue<FailedCommandStatus> _failures = new();
    private readonly Lock _failuresLock = new();

    public StatusBoard()
        : this(TimeProvider.System)
    {
    }

    /// <summary>A command's run began (the runner, before the engine operation).</summary>
    public void Started(Guid commandId, string commandType, string share, Guid volumeId, int partition) =>
        _running[commandId] = new RunningEntry(commandType, share, volumeId, partition, time.GetUtcNow());

    /// <summary>The latest progress of a running command (every report of the engine, not thinned out).</summary>
    public void Progressed(Guid commandId, OperationProgress progress)
    {
        ArgumentNullException.ThrowIfNull(progress);
        if (_running.TryGetValue(commandId, out var entry))
        {
            entry.Report(progress.Phase, Math.Clamp(progress.Fraction, 0, 1), time.GetUtcNow());
        }
    }

    /// <summary>The command's run ended, whatever its outcome.</summary>
    public void Ended(Guid commandId) => _running.TryRemove(commandId, out _);

    /// <summary>A <c>CommandFailed</c> was published (by the runner, or by the acceptor for a rejection).</summary>
    public void Failed(Guid commandId, string commandType, Guid volumeId, string? share, string errorCode, string message, bool transient)
    {
        var failure = new FailedCommandStatus(time.GetUtcNow(), commandId, commandType, volumeId, share, errorCode, message, transient);
        lock (_failuresLock)
        {
            _failures.Enqueue(failure);
            while (_failures.Count > FailureCapacity)
            {
                _failures.Dequeue();
            }
        }
    }

    /// <summary>Failures of the last <see cref="FailureWindow"/>, newest first.</summary>
    public IReadOnlyList<FailedCommandStatus> RecentFailures()
    {
        var since = time.GetUtcNow() - FailureWindow;
        lock (_failuresLock)
        {
            return _failures.Where(f => f.At >= since).Reverse().ToList();
        }
    }

    /// <summary>Running operations, longest running first, with the time left estimated from the progress of
    /// the current phase (its elapsed time scaled by what is left of it).</summary>
    public IReadOnlyList<RunningOperationStatus> Running()
    {
        var now = time.GetUtcNow();
        return _running.Select(r => r.Value.Snapshot(r.Key, now)).OrderBy(r => r.StartedAt).ToList();
    }

    private sealed class RunningEntry(string commandType, string share, Guid volumeId, int partition, DateTimeOffset startedAt)
    {
        private readonly Lock _lock = new();
        private string? _phase;
        private double? _fraction;
        private DateTimeOffset _phaseStartedAt; // set by the first report
        private DateTimeOffset? _updatedAt;

        public void Report(string phase, double fraction, DateTimeOffset now)
        {
            lock (_lock)
            {
                if (_phase != phase)
                {
                    _phase = phase;
                    _phaseStartedAt = _updatedAt ?? startedAt; // a phase starts where the one before ended
                }
                _fraction = fraction;
                _updatedAt = now;
            }
        }

        public RunningOperationStatus Snapshot(Guid commandId, DateTimeOffset now)
        {
            lock (_lock)
            {
                double? left = null;
                if (_fraction is { } f and > 0.005 and < 1 && _updatedAt is { } at)
                {
                    var spent = (at - _phaseStartedAt).TotalSeconds;
                    left = Math.Max(0, spent * (1 - f) / f - (now - at).TotalSeconds);
                }
                return new RunningOperationStatus(commandId, commandType, volumeId, share, partition, startedAt,
                    Math.Round((now - startedAt).TotalSeconds, 1), _phase, _fraction is { } p ? Math.Round(p * 100, 1) : null,
                    left is { } s ? Math.Round(s, 0) : null, _updatedAt);
            }
        }
    }
}
