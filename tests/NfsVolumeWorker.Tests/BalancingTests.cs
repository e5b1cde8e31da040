using NfsVolumeWorker.Broker;
using System.Diagnostics;
using System.Globalization;
using NfsVolumeWorker.Balancing;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Testing;
using NfsVolumeWorker.Tests.Support;

namespace NfsVolumeWorker.Tests;

/// <summary>Partition balancing with real worker processes on one broker while commands flow: partitions spread
/// to at most ceil(N/K)+1 per instance as instances join, stop (SIGTERM) and die (kill -9), and every volume's
/// commands still run once each, in the order they were sent.</summary>
public sealed class BalancingTests(ITestOutputHelper output)
{
    private const int N = 16;
    private static readonly TimeSpan Settle = TimeSpan.FromSeconds(60);

    private static int Ceil(int n, int k) => (n + k - 1) / k;

    /// <summary>Waits until exactly <paramref name="instances"/> consume every partition, each partition has one
    /// active consumer, and none holds more than ceil(N/K)+1.</summary>
    private async Task<TimeSpan> WaitBalancedAsync(ManagementClient management, IReadOnlyCollection<string> instances, IEnumerable<WorkerProcess> workers)
    {
        var sw = Stopwatch.StartNew();
        var limit = Ceil(N, instances.Count) + 1;
        var last = "";
        while (sw.Elapsed < Settle)
        {
            var s = await management.GetConsumersAsync(N, CancellationToken.None);
            var activePerPartition = Enumerable.Range(0, N).Select(p => s.Consumers.Count(c => c.Partition == p && c.Active)).ToList();
            var held = instances.ToDictionary(i => i, i => s.ActiveOf(i).Count);
            last = $"instances [{string.Join(", ", s.Instances)}], held {{{string.Join(", ", held.Select(h => $"{h.Key}: {h.Value}"))}}}, active per partition [{string.Join(",", activePerPartition)}]";
            if (s.Instances.Order().SequenceEqual(instances.Order()) && activePerPartition.All(a => a == 1) && held.Values.All(h => h <= limit)
                && s.Consumers.Count == N * instances.Count)
            {
                output.WriteLine($"balanced over {instances.Count} in {sw.Elapsed.TotalSeconds:0.0} s: {last}");
                return sw.Elapsed;
            }
            await Task.Delay(250);
        }
        Assert.Fail($"not balanced over {instances.Count} instances (limit {limit}) within {Settle}: {last}\n"
            + string.Join("\n", workers.Select(w => $"--- {w.InstanceName}\n{w.Output}")));
        return sw.Elapsed;
    }

    [Fact]
    public async Task Partitions_spread_as_instances_join_stop_and_die_while_every_volume_keeps_its_order()
    {
        var broker = await RabbitMqBroker.SharedAsync();
        Assert.True(broker.ManagementUri is not null, "the test broker has no management API: balancing cannot be tested");
        await using var vhost = await broker.CreateVirtualHostAsync("balance");
        using var root = new TempDirectory();
        var share = Directory.CreateDirectory(Path.Combine(root.Path, "share")).FullName;
        using var management = new ManagementClient(broker.ManagementUri, BrokerAddress.Parse(vhost.AmqpUri.ToString()), TimeSpan.FromSeconds(10));
        var settings = new Dictionary<string, string?>
        {
            ["Worker:PartitionCount"] = N.ToString(CultureInfo.InvariantCulture),
            ["Broker:ManagementUrl"] = broker.ManagementUri.ToString(),
            ["Balancing:Interval"] = "00:00:01",
        };
        var workers = new List<WorkerProcess>();
        WorkerProcess Start(string name)
        {
            var w = WorkerProcess.Start(vhost.AmqpUri, share, name, settings);
            workers.Add(w);
            return w;
        }

        await using var events = await EventCollector.StartAsync(vhost.AmqpUri);
        await using var producer = await CommandBus.StartAsync(vhost.AmqpUri, "balance-producer");
        var scripts = new List<(Guid Volume, List<VolumeCommand> Commands)>();
        using var stopTraffic = new CancellationTokenSource();
        try
        {
            var a = Start("a");
            await WaitBalancedAsync(management, ["a"], workers);
            // The router's queue must be bound before the first publish (the producer publishes mandatory and
            // would fail on an unroutable command rather than lose it).
            await Eventually.WaitAsync(async () => (await vhost.ListConsumersAsync()).Any(x => x.Queue == Messaging.Topology.IngressQueue),
                bound => bound, TimeSpan.FromSeconds(30));

            // Traffic through every join and leave: batches of 8 volumes, each volume's 20 commands sent one step
            // at a time across the batch, so one volume's commands are spread over seconds.
            var traffic = Task.Run(async () =>
            {
                while (!stopTraffic.IsCancellationRequested)
                {
                    var batch = Enumerable.Range(0, 8).Select(_ => Guid.NewGuid()).Select(v => (v, LoadTests.Script(v))).ToList();
                    lock (scripts)
                    {
                        scripts.AddRange(batch);
                    }
                    for (var step = 0; step < 20; step++)
                    {
                        foreach (var (_, commands) in batch)
                        {
                            await LoadTests.Publish(producer, commands[step]);
                        }
                        await Task.Delay(200);
                    }
                }
            });

            Start("b");
            var joinTwo = await WaitBalancedAsync(management, ["a", "b"], workers);
            var c = Start("c");
            var joinThree = await WaitBalancedAsync(management, ["a", "b", "c"], workers);

            var stop = Stopwatch.StartNew();
            Assert.Equal(0, await a.TerminateAsync(TimeSpan.FromSeconds(60)));
            output.WriteLine($"a stopped (SIGTERM) in {stop.Elapsed.TotalSeconds:0.0} s");
            Assert.Contains($"Released {N} partitions", a.Output, StringComparison.Ordinal);
            var afterTerm = await WaitBalancedAsync(management, ["b", "c"], workers);

            Start("d");
            await WaitBalancedAsync(management, ["b", "c", "d"], workers);
            workers.Single(w => w.InstanceName == "b").KillHard();
            var afterKill = await WaitBalancedAsync(management, ["c", "d"], workers);

            await stopTraffic.CancelAsync();
            await traffic;
            output.WriteLine($"rebalancing (1 s rounds): 2nd joins {joinTwo.TotalSeconds:0.0} s, 3rd joins {joinThree.TotalSeconds:0.0} s, after SIGTERM {afterTerm.TotalSeconds:0.0} s, after kill -9 {afterKill.TotalSeconds:0.0} s");

            var all = scripts.SelectMany(s => s.Commands).ToList();
            await events.WaitForAllAsync(all.Select(x => x.CommandId).ToList(), TimeSpan.FromMinutes(3));
            var repeats = events.AssertOneTerminalEventEach(all.Select(x => x.CommandId));
            var failures = events.Terminal.Where(e => e.Type == nameof(CommandFailed)).ToList();
            var violations = events.OrderingViolations(scripts.Select(s => s.Commands));
            output.WriteLine($"{all.Count} commands over {scripts.Count} volumes during the changes: ordering violations {violations}, failures {failures.Count}, repeated terminal events {repeats} (a kill -9 may repeat one)");
            Assert.True(failures.Count == 0, string.Join(Environment.NewLine, failures.Take(5)));
            Assert.Equal(0, violations);
            Assert.Empty(Directory.EnumerateFiles(share, "volume-*"));
            Assert.Equal("", await Tools.CheckShareAsync(share));
            Assert.DoesNotContain("BackgroundService failed", string.Concat(workers.Select(w => w.Output)), StringComparison.Ordinal);
        }
        finally
        {
            await stopTraffic.CancelAsync();
            await Task.WhenAll(workers.Select(w => w.DisposeAsync().AsTask()));
            foreach (var w in workers)
            {
                await File.WriteAllTextAsync(Path.Combine(Path.GetTempPath(), $"nfsvol-worker-{vhost.Name}-{w.InstanceName}.log"), w.Output);
            }
        }
    }
}
