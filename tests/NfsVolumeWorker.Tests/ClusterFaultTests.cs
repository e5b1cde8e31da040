using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Partitions;
using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Tests.Support;

namespace NfsVolumeWorker.Tests;

/// <summary>One 3-node RabbitMQ cluster on loopback for the whole class (about 30 s to form); stopped after it.</summary>
public sealed class ClusterFixture : IAsyncLifetime
{
    private RabbitMqCluster? _cluster;

    public RabbitMqCluster Cluster => _cluster ?? throw new InvalidOperationException("the cluster did not start");

    /// <summary>Fails (and with it every test of the class) when the cluster cannot be formed.</summary>
    public async Task InitializeAsync() => _cluster = await RabbitMqCluster.StartAsync(nodes: 3);

    public async Task DisposeAsync()
    {
        if (_cluster is not null)
        {
            await _cluster.DisposeAsync();
        }
    }
}

/// <summary>
/// Broker faults under load, on a real 3-node cluster (quorum partition queues replicated on every node) and on a
/// single broker: the node leading the partition queues is stopped, or killed with <c>kill -9</c> and started again;
/// two of the three nodes stop (the quorum is lost) and come back; a single broker restarts. Each time the worker
/// regains its subscriptions, every command sent gets exactly one terminal event (none lost, none run twice with
/// different results), none fails, and each volume's commands finish in the order they were sent. Figures go to the
/// test output and to TestResults/broker-faults.txt (docs/broker-faults.md).
/// </summary>
[Trait("Category", "Cluster")]
public sealed class ClusterFaultTests(ClusterFixture fixture, ITestOutputHelper output) : IClassFixture<ClusterFixture>
{
    private const long MiB = WorkerTestBed.MiB;
    private const int Volumes = 40;
    private static readonly TimeSpan RegainWithin = TimeSpan.FromSeconds(90);

    /// <summary>10 commands for one volume that only succeed in this order: creates, snapshot creates and deletes.</summary>
    private static List<VolumeCommand> Script(Guid volume)
    {
        var s = Enumerable.Range(0, 4).Select(_ => Guid.NewGuid()).ToArray();
        VolumeCommand Create(int i) => new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = volume, SnapshotId = s[i] };
        VolumeCommand Delete(int i) => new DeleteSnapshot { CommandId = Guid.NewGuid(), VolumeId = volume, SnapshotId = s[i] };
        return
        [
            new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = volume, SizeBytes = MiB },
            Create(0), Create(1), Create(2), Delete(1), Create(3), Delete(0), Delete(2), Delete(3),
            new DeleteVolume { CommandId = Guid.NewGuid(), VolumeId = volume },
        ];
    }

    [Fact]
    public async Task When_the_node_leading_the_partition_queues_is_stopped_mid_load_the_worker_moves_to_another_node_and_loses_nothing()
    {
        var cluster = fixture.Cluster;
        var report = await RunOnClusterAsync("stop-leader", async (leader, probe, _) =>
        {
            await probe.FaultAsync($"rabbitmqctl stop_app on {leader}", () => cluster.StopAppAsync(leader.Index));
            await probe.WaitRegainedAsync();
            // Back in the cluster once the load is through, for the next test: the quorum queues catch it up.
            await probe.AfterLoadAsync(() => cluster.StartAppAsync(leader.Index));
        });
        Assert.Contains("failures 0", report, StringComparison.Ordinal);
    }

    [Fact]
    public async Task When_the_leader_nodes_Erlang_VM_is_killed_mid_load_and_started_again_nothing_is_lost_or_reordered()
    {
        var cluster = fixture.Cluster;
        var report = await RunOnClusterAsync("kill-leader", async (leader, probe, vhost) =>
        {
            await probe.FaultAsync($"kill -9 of {leader}'s beam.smp", () => cluster.KillAsync(leader.Index));
            await probe.WaitRegainedAsync();
            // Started again while the load still runs: it rejoins and its replicas catch up.
            await probe.StepAsync($"{leader} started again", () => cluster.RestartAsync(leader.Index));
            // It rejoins: every partition queue has its three replicas online again.
            await probe.StepAsync($"{leader}'s replicas online again", async () =>
            {
                var online = await Eventually.WaitAsync(async () => (await cluster.ListQueuesAsync(vhost)).Where(IsPartitionQueue).ToList(),
                    qs => qs.All(q => q.Online.Count == cluster.Nodes.Count), TimeSpan.FromSeconds(60), 500);
                Assert.All(online, q => Assert.Contains(leader.Name, q.Online));
            });
        });
        Assert.Contains("failures 0", report, StringComparison.Ordinal);
    }

    [Fact]
    public async Task When_two_of_three_nodes_die_the_quorum_is_lost_health_turns_degraded_and_once_they_return_nothing_is_lost()
    {
        var cluster = fixture.Cluster;
        using var hold = new NextStepHold();
        var report = await RunOnClusterAsync("quorum-lost", async (leader, probe, _) =>
        {
            // The worker must hold a command when the quorum goes: with nothing to publish it cannot tell (and a worker
            // that keeps up with the producer has often finished all it was sent). The next operation to change the
            // disk is held until the nodes are dead; its event then waits for a confirmation that cannot come.
            hold.Arm();
            await hold.Reached.WaitAsync(TimeSpan.FromSeconds(60)); // throws when no operation reached a step to hold
            // kill -9, both at once: the quorum goes at one instant, while commands are on their way (a stop_app takes
            // seconds per node, during which the two left still commit and the worker may finish all it holds).
            var others = cluster.Nodes.Where(n => n != leader).ToList();
            await probe.FaultAsync($"kill -9 of {string.Join(" and ", others)} (quorum lost: 1 of 3 left)",
                () => Task.WhenAll(others.Select(n => cluster.KillAsync(n.Index))));
            hold.Release();
            // Longer than PartitionHealthCheck.StalledAfter: what /health says while nothing can be committed.
            var seen = await probe.SampleHealthAsync(TimeSpan.FromSeconds(40));
            probe.Note($"/health during the quorum loss: {seen}");
            Assert.Contains("Degraded", seen, StringComparison.Ordinal);
            await probe.StepAsync("both nodes started again", () => Task.WhenAll(others.Select(n => cluster.RestartAsync(n.Index))));
        }, s => s.AddSingleton<IStepObserver>(hold));
        Assert.Contains("failures 0", report, StringComparison.Ordinal);
    }

    /// <summary>Once armed, holds the next operation that reaches a step (any volume) until released, at most a minute.</summary>
    private sealed class NextStepHold : IStepObserver, IDisposable
    {
        private readonly ManualResetEventSlim _released = new();
        private readonly TaskCompletionSource _reached = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private int _armed;

        public Task Reached => _reached.Task;

        public void Arm() => Interlocked.Exchange(ref _armed, 1);

        public void Release() => _released.Set();

        public void OnStep(string stepName, Guid volumeId)
        {
            if (Interlocked.CompareExchange(ref _armed, 0, 1) == 1)
            {
                _reached.TrySetResult();
                _released.Wait(TimeSpan.FromMinutes(1));
            }
        }

        public void Dispose()
        {
            _released.Set();
            _released.Dispose();
        }
    }

    [Fact]
    public async Task When_a_single_broker_restarts_mid_load_the_worker_subscribes_again_and_loses_nothing()
    {
        await using var broker = await RabbitMqBroker.StartDedicatedAsync();
        await using var vhost = await broker.CreateVirtualHostAsync("restart");
        var report = await RunLoadAsync("restart-single", vhost.AmqpUri, hosts: null, clientUri: vhost.AmqpUri, clientNodes: null, async probe =>
            {
                await probe.FaultAsync("broker restart (rabbitmqctl stop, start on the same state)", () => broker.RestartAsync());
                await probe.WaitRegainedAsync();
            });
        Assert.Contains("failures 0", report, StringComparison.Ordinal);
    }

    /// <summary>A fresh vhost on the cluster; the worker on node 1 with nodes 2 and 3 in Broker:Hosts; the producer and
    /// the event collector on node 3 first. Checks that every partition queue is a quorum queue with a replica on each
    /// node, then hands <paramref name="fault"/> the node that leads most of them.</summary>
    private async Task<string> RunOnClusterAsync(string name, Func<ClusterNode, LoadProbe, string, Task> fault, Action<IServiceCollection>? services = null)
    {
        var cluster = fixture.Cluster;
        var (allRunning, status) = await cluster.StatusAsync();
        Assert.True(allRunning, $"the cluster is not whole before the test: {status}");
        await cluster.AssertFormedAsync();
        var vhost = await cluster.CreateVirtualHostAsync(name);
        try
        {
            var clientNodes = new[] { cluster.Node(3), cluster.Node(2), cluster.Node(1) }.Select(n => n.Endpoint).ToList();
            return await RunLoadAsync(name, cluster.UriFor(vhost, 1), cluster.HostsExcept(1), cluster.UriFor(vhost, 3), clientNodes, services: services, fault: async probe =>
            {
                var queues = await cluster.ListQueuesAsync(vhost);
                var partitions = queues.Where(IsPartitionQueue).ToList();
                Assert.Equal(WorkerSettings.Partitions + 1, partitions.Count);
                Assert.All(partitions, q =>
                {
                    Assert.Equal("quorum", q.Type);
                    Assert.Equal(cluster.Nodes.Select(n => n.Name).Order(), q.Members.Order());
                });
                var leader = cluster.NodeNamed(partitions.GroupBy(q => q.Leader).OrderByDescending(g => g.Count()).First().Key!);
                probe.Note($"partition and ingress queues: quorum, members on all 3 nodes; {partitions.Count(q => q.Leader == leader.Name)} of {partitions.Count} led by {leader} (the worker's first node is {cluster.Node(1)})");
                await fault(leader, probe, vhost);
            });
        }
        finally
        {
            // Whatever happened, the next test gets the cluster whole again.
            var (whole, after) = await cluster.StatusAsync();
            if (!whole)
            {
                output.WriteLine($"cluster not whole after the test, healing it: {after}");
                await cluster.HealAsync();
            }
            await cluster.DeleteVirtualHostAsync(vhost);
        }
    }

    private static bool IsPartitionQueue(ClusterQueueInfo q) =>
        q.Name.StartsWith("nfsvol.partition.", StringComparison.Ordinal) || q.Name == Messaging.Topology.IngressQueue;

    private async Task<string> RunLoadAsync(string name, Uri workerUri, string? hosts, Uri clientUri, IReadOnlyList<string>? clientNodes, Func<LoadProbe, Task> fault,
        Action<IServiceCollection>? services = null)
    {
        using var root = new TempDirectory();
        var share = Directory.CreateDirectory(Path.Combine(root.Path, "share")).FullName;
        await using var events = await EventCollector.StartDurableAsync(clientUri, clientNodes);
        var settings = new Dictionary<string, string?>
        {
            ["Broker:Hosts"] = hosts,
            // Slower than the producer, so that commands wait in the partition queues when the fault lands and the
            // load outlasts a node's restart.
            ["Worker:MaxParallelVolumes"] = "2",
        };
        await using var worker = await InProcessWorker.StartAsync(workerUri, share, output, settings, services: services);
        var subscriptions = worker.Services.GetRequiredService<PartitionSubscriptions>();
        await using var producer = await CommandBus.StartAsync(clientUri, $"{name}-producer", clientNodes);
        var probe = new LoadProbe(subscriptions, worker.Services.GetRequiredService<HealthCheckService>(), output);
        Assert.True(await Eventually.WaitAsync(() => probe.Subscribed, s => s, TimeSpan.FromSeconds(60)), "the worker did not subscribe");

        var scripts = Enumerable.Range(0, Volumes).Select(_ => Script(Guid.NewGuid())).ToList();
        var all = scripts.SelectMany(s => s).ToList();
        var sent = 0;
        var publishRetries = 0;
        var sw = Stopwatch.StartNew();
        // One step of every volume at a time, paced, so that the load spans the fault: a volume's commands are
        // spread over the whole run, each sent only once the broker confirmed the one before.
        var traffic = Task.Run(async () =>
        {
            for (var step = 0; step < scripts[0].Count; step++)
            {
                foreach (var commands in scripts)
                {
                    publishRetries += await producer.PublishUntilConfirmedAsync(commands[step], TimeSpan.FromMinutes(2));
                    Interlocked.Increment(ref sent);
                    await Task.Delay(10);
                }
            }
        });

        // The fault lands once a third of the commands are out and some have finished.
        await Eventually.WaitAsync(() => Volatile.Read(ref sent), n => n >= all.Count / 3 || traffic.IsCompleted, TimeSpan.FromMinutes(2));
        probe.Note($"fault at {sw.Elapsed.TotalSeconds:0.0} s: {Volatile.Read(ref sent)} of {all.Count} commands sent, {events.Terminal.Count} finished");
        await fault(probe);
        await traffic;
        var publishedAt = sw.Elapsed;
        await events.WaitForAllAsync(all.Select(c => c.CommandId).ToList(), TimeSpan.FromMinutes(3));
        var doneAt = sw.Elapsed;
        await probe.RunAfterLoadAsync();

        var repeats = events.AssertOneTerminalEventEach(all.Select(c => c.CommandId));
        var failures = events.Terminal.Where(e => e.Type == nameof(CommandFailed)).ToList();
        var violations = events.OrderingViolations(scripts);
        var health = await Eventually.WaitAsync(
            async () => await worker.Services.GetRequiredService<HealthCheckService>().CheckHealthAsync(),
            h => h.Status == HealthStatus.Healthy, TimeSpan.FromSeconds(60), 500);
        var summary = string.Create(CultureInfo.InvariantCulture,
            $"{name}: {all.Count} commands over {Volumes} volumes; all sent after {publishedAt.TotalSeconds:0.0} s ({publishRetries} publish attempts failed and were sent again), "
            + $"all finished after {doneAt.TotalSeconds:0.0} s; lost 0, failures {failures.Count}, ordering violations {violations}, repeated terminal events {repeats} (same id and content); "
            + $"health at the end {health.Status}");
        probe.Note(summary);
        var report = string.Join(Environment.NewLine, probe.Notes);
        await WriteFiguresAsync(report);

        Assert.True(failures.Count == 0, string.Join(Environment.NewLine, failures.Take(5)));
        Assert.Equal(0, violations);
        Assert.Equal(HealthStatus.Healthy, health.Status);
        Assert.Empty(Directory.EnumerateFiles(share, "volume-*"));
        Assert.Equal("", await Tools.CheckShareAsync(share));
        await Tools.WaitForEmptyInboxAsync(share);
        Assert.Empty(Tools.InboxEntries(share));
        return report;
    }

    private static async Task WriteFiguresAsync(string report)
    {
        var root = RepositoryRoot.TryFind() ?? AppContext.BaseDirectory;
        Directory.CreateDirectory(Path.Combine(root, "TestResults"));
        await File.AppendAllTextAsync(Path.Combine(root, "TestResults", "broker-faults.txt"),
            $"== {DateTimeOffset.UtcNow:yyyy-MM-dd HH:mm:ss} UTC, {Environment.ProcessorCount} cpus{Environment.NewLine}{report}{Environment.NewLine}");
    }

    /// <summary>What a test does to the broker while the load runs, and what it measures of the worker.</summary>
    private sealed class LoadProbe(PartitionSubscriptions subscriptions, HealthCheckService health, ITestOutputHelper output)
    {
        /// <summary>Asks /health's checks every 500 ms, up to <paramref name="duration"/> or until it is no longer
        /// Healthy: each status seen, when first seen, with its description.</summary>
        public async Task<string> SampleHealthAsync(TimeSpan duration)
        {
            var seen = new List<string>();
            var last = (HealthStatus?)null;
            var sw = Stopwatch.StartNew();
            while (sw.Elapsed < duration)
            {
                var r = await health.CheckHealthAsync();
                if (r.Status != last)
                {
                    var why = string.Join("; ", r.Entries.Where(e => e.Value.Status != HealthStatus.Healthy).Select(e => $"{e.Key}: {e.Value.Description}"));
                    seen.Add(string.Create(CultureInfo.InvariantCulture, $"{r.Status} at {_sinceFault.Elapsed.TotalSeconds:0.0} s{(why.Length > 0 ? $" ({why})" : "")}"));
                    last = r.Status;
                }
                if (r.Status != HealthStatus.Healthy)
                {
                    break;
                }
                await Task.Delay(500);
            }
            return string.Join(", then ", seen);
        }

        private readonly Stopwatch _sinceFault = new();
        private Func<Task>? _afterLoad;
        private long _lostMs = -1;
        private long _regainedMs = -1;

        private TimeSpan? Lost => Volatile.Read(ref _lostMs) is var ms and >= 0 ? TimeSpan.FromMilliseconds(ms) : null;

        private TimeSpan? Regained => Volatile.Read(ref _regainedMs) is var ms and >= 0 ? TimeSpan.FromMilliseconds(ms) : null;

        public List<string> Notes { get; } = [];

        public bool Subscribed => subscriptions.Connection is not null && subscriptions.All.All(p => p.IsSubscribed) && subscriptions.Ingress.IsSubscribed;

        private int? ConnectedPort => subscriptions.Connection?.Endpoint.Port;

        public void Note(string line)
        {
            Notes.Add(line);
            output.WriteLine(line);
        }

        /// <summary>Runs the fault, watching the worker's subscriptions every 10 ms from the moment it begins.</summary>
        public async Task FaultAsync(string what, Func<Task> fault)
        {
            var before = ConnectedPort;
            _sinceFault.Restart();
            _ = Task.Run(async () =>
            {
                while (Regained is null && _sinceFault.Elapsed < RegainWithin)
                {
                    var subscribed = Subscribed;
                    if (!subscribed && Lost is null)
                    {
                        Volatile.Write(ref _lostMs, _sinceFault.ElapsedMilliseconds);
                    }
                    else if (subscribed && Lost is not null)
                    {
                        Volatile.Write(ref _regainedMs, _sinceFault.ElapsedMilliseconds);
                    }
                    await Task.Delay(10);
                }
            });
            await fault();
            Note(string.Create(CultureInfo.InvariantCulture, $"{what}: done in {_sinceFault.Elapsed.TotalSeconds:0.0} s (the worker's partition consumers were on port {before})"));
        }

        /// <summary>Waits until every partition and the ingress queue are subscribed again after the fault took them
        /// (or 10 s pass without the fault touching them): the time from the fault's start is the figure.</summary>
        public async Task WaitRegainedAsync()
        {
            await Eventually.WaitAsync(() => Regained is not null || (Lost is null && _sinceFault.Elapsed > TimeSpan.FromSeconds(10)), d => d, RegainWithin, 20);
            Assert.True(Regained is not null || Lost is null, $"the worker lost its subscriptions {Lost?.TotalSeconds:0.0} s into the fault and did not regain them within {RegainWithin.TotalSeconds} s");
            Note(Regained is { } at
                ? string.Create(CultureInfo.InvariantCulture, $"subscriptions lost {Lost!.Value.TotalSeconds:0.0} s and regained {at.TotalSeconds:0.0} s after the fault began (every partition and the ingress queue; out for {(at - Lost.Value).TotalSeconds:0.0} s), on port {ConnectedPort}")
                : $"subscriptions kept throughout, on port {ConnectedPort}");
        }

        public async Task StepAsync(string what, Func<Task> step)
        {
            var sw = Stopwatch.StartNew();
            await step();
            Note(string.Create(CultureInfo.InvariantCulture, $"{what} in {sw.Elapsed.TotalSeconds:0.0} s ({_sinceFault.Elapsed.TotalSeconds:0.0} s after the fault)"));
        }

        public Task AfterLoadAsync(Func<Task> step)
        {
            _afterLoad = step;
            return Task.CompletedTask;
        }

        public async Task RunAfterLoadAsync()
        {
            if (_afterLoad is { } step)
            {
                await StepAsync("restored after the load", step);
            }
        }
    }
}
