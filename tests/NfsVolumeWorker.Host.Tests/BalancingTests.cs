using System.Diagnostics;
using NfsVolumeWorker.Balancing;
using NfsVolumeWorker.Testing;
using Xunit.Abstractions;

namespace NfsVolumeWorker.Host.Tests;

public sealed class BalancingTests(ITestOutputHelper output) : IAsyncLifetime
{
    private const int N = 16;
    private readonly string _share = Directory.CreateTempSubdirectory("nfsvol-balancing-").FullName;
    private readonly List<WorkerProcess> _workers = [];

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (var w in _workers)
        {
            await w.DisposeAsync();
        }
        Directory.Delete(_share, recursive: true);
    }

    private static int Ceil(int n, int k) => (n + k - 1) / k;

    /// <summary>Waits until the K named instances consume, every partition has exactly one active consumer,
    /// and no instance is active on more than ceil(N/K)+1; returns how long it took.</summary>
    private async Task<TimeSpan> WaitBalancedAsync(ManagementClient management, IReadOnlyCollection<string> instances, TimeSpan timeout)
    {
        var sw = Stopwatch.StartNew();
        var limit = Ceil(N, instances.Count) + 1;
        string last = "";
        while (sw.Elapsed < timeout)
        {
            var snapshot = await management.GetConsumersAsync(N, CancellationToken.None);
            var activePerPartition = Enumerable.Range(0, N).Select(p => snapshot.Consumers.Count(c => c.Partition == p && c.Active)).ToList();
            var held = instances.ToDictionary(i => i, i => snapshot.ActiveOf(i).Count);
            last = $"instances [{string.Join(", ", snapshot.Instances)}], held {{{string.Join(", ", held.Select(h => $"{h.Key}: {h.Value}"))}}}, active per partition [{string.Join(",", activePerPartition)}]";
            if (snapshot.Instances.Order().SequenceEqual(instances.Order()) && activePerPartition.All(a => a == 1) && held.Values.All(h => h <= limit)
                && snapshot.Consumers.Count == N * instances.Count)
            {
                output.WriteLine($"balanced in {sw.Elapsed.TotalSeconds:0.0} s: {last}");
                return sw.Elapsed;
            }
            await Task.Delay(250);
        }
        Assert.Fail($"not balanced over {instances.Count} instances (limit {limit}) within {timeout}: {last}\n" +
            string.Join("\n", _workers.Select(w => $"--- {w.Name}\n{w.Output}")));
        return sw.Elapsed;
    }

    [Fact]
    public async Task Without_a_management_url_there_is_no_balancing_and_it_says_so_once()
    {
        var broker = await RabbitMqBroker.SharedAsync();
        await using var vhost = await broker.CreateVirtualHostAsync("nobalancing");
        var w = WorkerProcess.Start("solo", vhost.AmqpUri, null, _share);
        _workers.Add(w);
        var sw = Stopwatch.StartNew();
        while (!w.Output.Contains("Partition balancing is off", StringComparison.Ordinal) && sw.Elapsed < TimeSpan.FromSeconds(60) && !w.HasExited)
        {
            await Task.Delay(200);
        }
        await Task.Delay(3000);
        Assert.Single(System.Text.RegularExpressions.Regex.Matches(w.Output, "Partition balancing is off: Broker:ManagementUrl is not set"));
        Assert.Equal(0, await w.TerminateAsync(TimeSpan.FromSeconds(60)));
    }
}

public sealed class ConsumerSnapshotSpecs
{
    private static ConsumerSnapshot Snapshot(params (int P, string I, bool Active)[] consumers) =>
        new(4, consumers.Select(c => new PartitionConsumerInfo(c.P, $"nfsvol.partition.{c.P:D2}", c.I, c.Active)).ToList());

    [Fact]
    public void An_instance_above_its_fair_share_hands_over_a_partition_someone_below_it_waits_on()
    {
        var s = Snapshot((0, "a", true), (1, "a", true), (2, "a", true), (3, "b", true),
            (0, "b", false), (1, "b", false), (2, "c", false), (3, "a", false));
        Assert.Equal(3, s.Instances.Count);
        Assert.Equal(2, s.FairShare);
        Assert.Equal(2, s.PartitionToHandOver("a"));
        Assert.Null(s.PartitionToHandOver("b"));
    }

    [Fact]
    public void A_lone_instance_or_one_within_its_share_keeps_its_partitions()
    {
        Assert.Null(Snapshot((0, "a", true), (1, "a", true), (2, "a", true), (3, "a", true)).PartitionToHandOver("a"));
        Assert.Null(Snapshot((0, "a", true), (1, "a", true), (2, "b", true), (3, "b", true), (0, "b", false)).PartitionToHandOver("a"));
    }
}
