using System.Globalization;
using NfsVolumeWorker.Testing;
using Xunit.Abstractions;

namespace NfsVolumeWorker.Tests.Support.Chaos;

/// <summary>Keeps <c>workers</c> worker processes running and, at random intervals (seeded), <c>kill -9</c>s a random
/// one and starts a replacement at once. Every process it ever started stays in <see cref="All"/> (their logs).</summary>
internal sealed class ChaosMonkey(Random random, Func<string, WorkerProcess> start, int workers, TimeSpan minInterval, TimeSpan maxInterval, ITestOutputHelper output)
{
    private readonly List<WorkerProcess> _all = [];
    private readonly List<WorkerProcess> _alive = [];
    private readonly HashSet<WorkerProcess> _killed = [];
    private int _started;

    public int Kills { get; private set; }

    public IReadOnlyList<WorkerProcess> All
    {
        get
        {
            lock (_all)
            {
                return [.. _all];
            }
        }
    }

    /// <summary>Worker processes that exited without being killed: a crash of the worker itself.</summary>
    public IReadOnlyList<WorkerProcess> DiedUnasked
    {
        get
        {
            lock (_all)
            {
                return _all.Where(w => w.HasExited && !_killed.Contains(w)).ToList();
            }
        }
    }

    public IReadOnlyList<string> StartInitial() => Enumerable.Range(0, workers).Select(_ => StartOne().InstanceName).ToList();

    private WorkerProcess StartOne()
    {
        var w = start($"w{++_started}");
        lock (_all)
        {
            _all.Add(w);
            _alive.Add(w);
        }
        return w;
    }

    private static TimeSpan UpTime(WorkerProcess w)
    {
        try
        {
            using var p = System.Diagnostics.Process.GetProcessById(w.Pid);
            return DateTime.Now - p.StartTime;
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException)
        {
            return TimeSpan.Zero; // already gone: DiedUnasked reports it
        }
    }

    /// <summary>Kills until <paramref name="kills"/> are done or <paramref name="abort"/> fires.</summary>
    public async Task RunAsync(int kills, CancellationToken abort)
    {
        while (Kills < kills && !abort.IsCancellationRequested)
        {
            var wait = minInterval + ((maxInterval - minInterval) * random.NextDouble());
            try
            {
                await Task.Delay(wait, abort);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            WorkerProcess victim;
            lock (_all)
            {
                victim = _alive[random.Next(_alive.Count)];
                _alive.Remove(victim);
                if (!victim.HasExited)
                {
                    _killed.Add(victim); // one that exited by itself stays out of this set: DiedUnasked reports it
                }
            }
            var up = UpTime(victim);
            victim.KillHard();
            Kills++;
            var replacement = StartOne();
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{DateTime.UtcNow:HH:mm:ss.fff} kill -9 #{Kills}: {victim.InstanceName} (pid {victim.Pid}, up {up.TotalSeconds:0.0} s) after {wait.TotalSeconds:0.0} s; started {replacement.InstanceName}"));
        }
    }
}
