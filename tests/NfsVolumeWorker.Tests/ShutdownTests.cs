using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Hosting;
using NfsVolumeWorker.Testing;
using NfsVolumeWorker.Tests.Support;

namespace NfsVolumeWorker.Tests;

/// <summary>A worker process that stops: SIGTERM in the middle of a long clone with a second instance running, the
/// ingress router's hand-over with a backlog waiting, a start that fails after the consumers subscribed.</summary>
public sealed class ShutdownTests(ITestOutputHelper output)
{
    private const long MiB = WorkerTestBed.MiB;

    /// <summary>Two workers with a slowed qemu-img, a 192 MiB volume and its clone started; returns once the
    /// clone copies, with the worker running it.</summary>
    private sealed class CloneInFlight : IAsyncDisposable
    {
        private readonly WorkerProcessBed _bed;

        private CloneInFlight(WorkerProcessBed bed)
        {
            _bed = bed;
        }

        public string Share => _bed.Share;
        public EventCollector Events => _bed.Events;
        public CommandBus Producer => _bed.Producer;
        public Guid Source { get; } = Guid.NewGuid();
        public CloneVolume Clone { get; private set; } = null!;
        public WorkerProcess Copying { get; private set; } = null!;
        public WorkerProcess Other { get; private set; } = null!;

        public static async Task<CloneInFlight> StartAsync(ITestOutputHelper output, string name)
        {
            var bed = new CloneInFlight(await WorkerProcessBed.CreateAsync(output, name));
            var slow = SlowCopy.Settings(8L << 20); // 192 MiB: about 24 s of copying
            slow["Worker:ShutdownTimeout"] = "00:01:00";
            foreach (var w in new[] { "w1", "w2" })
            {
                bed._bed.Start(w, slow);
            }
            await Ownership.WaitForAsync(bed._bed.VirtualHost, ["w1", "w2"], TimeSpan.FromSeconds(60));

            var create = new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = bed.Source, SizeBytes = 256 * MiB };
            await bed.Producer.PublishAsync(create);
            Assert.Equal(nameof(VolumeCreated), (await bed.Events.WaitForAsync(create.CommandId)).Type);
            await Tools.WriteAsync(Path.Combine(bed.Share, $"volume-{bed.Source}"), "raw", 0x5a, 0, 192 * MiB);
            bed.Clone = new CloneVolume { CommandId = Guid.NewGuid(), VolumeId = bed.Source, NewVolumeId = Guid.NewGuid() };
            await bed.Producer.PublishAsync(bed.Clone);
            await Eventually.WaitAsync(() => bed.Events.Progress.Count(p => p.CommandId == bed.Clone.CommandId), n => n > 0, TimeSpan.FromSeconds(30));
            bed.Copying = await Eventually.WaitAsync(() => bed._bed.Workers.FirstOrDefault(w => ProcessTree.Children(w.Pid, "qemu-img").Count > 0),
                w => w is not null, TimeSpan.FromSeconds(10), 50) ?? throw new InvalidOperationException("no worker runs qemu-img");
            bed.Other = bed._bed.Workers.Single(w => w != bed.Copying);
            output.WriteLine($"{bed.Copying.InstanceName} is copying the clone");
            return bed;
        }

        /// <summary>SIGTERM to the worker copying the clone; returns once it has released its partitions.</summary>
        public async Task TerminateCopyingAsync()
        {
            await Copying.SignalTermAsync();
            var released = $"Released {WorkerSettings.Partitions} partitions";
            await Eventually.WaitAsync(() => Copying.Output.Contains(released, StringComparison.Ordinal), logged => logged, TimeSpan.FromSeconds(30));
            Assert.Contains(released, Copying.Output, StringComparison.Ordinal);
        }

        /// <summary>Sends a few commands on every partition; their ids.</summary>
        public async Task<List<Guid>> SendOnEveryPartitionAsync()
        {
            var ids = new List<Guid>();
            foreach (var v in Enumerable.Range(0, WorkerSettings.Partitions).SelectMany(p => Ids.InPartition(p, 2)))
            {
                var create = new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = v, SizeBytes = 4 * MiB };
                var snap = new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = v, SnapshotId = Guid.NewGuid() };
                await Producer.PublishAsync(create);
                await Producer.PublishAsync(snap);
                ids.AddRange([create.CommandId, snap.CommandId]);
            }
            return ids;
        }

        public async Task AssertShareIsWholeAsync()
        {
            Assert.Equal(0, await Tools.CompareAsync(Path.Combine(Share, $"volume-{Clone.NewVolumeId}"), "raw", Path.Combine(Share, $"volume-{Source}"), "raw"));
            Assert.Equal("", await Tools.CheckShareAsync(Share));
            await Tools.WaitForEmptyInboxAsync(Share);
            Assert.Empty(Directory.EnumerateFiles(Share, ".volume-*.tmp-*"));
        }

        public ValueTask DisposeAsync() => _bed.DisposeAsync();
    }

    [Fact]
    public async Task SIGTERM_lets_the_running_clone_finish_while_new_commands_already_run_on_the_other_instance()
    {
        await using var bed = await CloneInFlight.StartAsync(output, "sigterm");
        await bed.TerminateCopyingAsync();

        // Commands sent now, on every partition (half of them were the stopping instance's), run on the other
        // instance while the clone is still being copied by the stopping one.
        var sent = await bed.SendOnEveryPartitionAsync();
        await bed.Events.WaitForAllAsync(sent, TimeSpan.FromSeconds(60));
        Assert.False(bed.Copying.HasExited, "the stopping worker exited before its clone finished");
        Assert.Empty(bed.Events.TerminalOf(bed.Clone.CommandId));
        Assert.All(sent, id => Assert.Single(bed.Events.TerminalOf(id)));

        // The clone finishes where it ran (not cancelled, not resumed elsewhere), then the worker exits cleanly.
        var cloned = await bed.Events.WaitForAsync(bed.Clone.CommandId, TimeSpan.FromSeconds(90));
        Assert.Equal(nameof(VolumeCloned), cloned.Type);
        Assert.Equal(0, await bed.Copying.WaitForExitAsync(TimeSpan.FromSeconds(30)));
        Assert.Contains($"CloneVolume {bed.Clone.CommandId} of volume {bed.Source} finished", bed.Copying.Output, StringComparison.Ordinal);
        Assert.DoesNotContain("cancelling", bed.Copying.Output, StringComparison.Ordinal);
        Assert.Single(bed.Events.TerminalOf(bed.Clone.CommandId));
        Assert.All(sent, id => Assert.NotEqual(nameof(CommandFailed), bed.Events.TerminalOf(id).Single().Type));
        await bed.AssertShareIsWholeAsync();
    }

    [Fact]
    public async Task A_second_SIGTERM_cancels_the_running_clone_and_the_other_instance_resumes_it_to_one_result()
    {
        await using var bed = await CloneInFlight.StartAsync(output, "sigterm2");
        await bed.TerminateCopyingAsync();
        await bed.Copying.SignalTermAsync();
        await bed.Copying.WaitForExitAsync(TimeSpan.FromSeconds(60));
        Assert.Contains("Second stop signal", bed.Copying.Output, StringComparison.Ordinal);
        Assert.Empty(bed.Events.TerminalOf(bed.Clone.CommandId)); // cancelled, not finished, not failed

        // The other instance's sweeper finds the inbox entry nobody drains and resumes the clone from the share.
        var cloned = await bed.Events.WaitForAsync(bed.Clone.CommandId, TimeSpan.FromSeconds(120));
        Assert.Equal(nameof(VolumeCloned), cloned.Type);
        // The event is published before the worker logs the command's end, and its output arrives through a pipe.
        var finished = $"CloneVolume {bed.Clone.CommandId} of volume {bed.Source} finished";
        await Eventually.WaitAsync(() => bed.Other.Output.Contains(finished, StringComparison.Ordinal), logged => logged, TimeSpan.FromSeconds(10));
        Assert.Contains(finished, bed.Other.Output, StringComparison.Ordinal);
        await Task.Delay(TimeSpan.FromSeconds(2));
        Assert.Single(bed.Events.TerminalOf(bed.Clone.CommandId));
        await bed.AssertShareIsWholeAsync();
    }

    /// <summary>A <see cref="WorkerProcessBed"/> whose ingress queue holds every command of <c>volumes</c> volumes (20
    /// each, <see cref="LoadTests.Script"/>), published while no worker ran (a first run declared the topology).</summary>
    private sealed class Backlog : IAsyncDisposable
    {
        private readonly ITestOutputHelper _output;
        private readonly WorkerProcessBed _bed;

        private Backlog(ITestOutputHelper output, WorkerProcessBed bed)
        {
            _output = output;
            _bed = bed;
        }

        public VirtualHost VirtualHost => _bed.VirtualHost;

        public Dictionary<Guid, List<VolumeCommand>> Scripts { get; } = [];

        public List<VolumeCommand> All => Scripts.Values.SelectMany(c => c).ToList();

        public static async Task<Backlog> PublishAsync(ITestOutputHelper output, string name, int volumes)
        {
            var bed = new Backlog(output, await WorkerProcessBed.CreateAsync(output, name));
            var setup = bed.Start("setup");
            await Ownership.WaitForAsync(bed.VirtualHost, ["setup"], TimeSpan.FromSeconds(60));
            Assert.Equal(0, await setup.TerminateAsync(TimeSpan.FromSeconds(60)));
            foreach (var volume in Enumerable.Range(0, volumes).Select(_ => Guid.NewGuid()))
            {
                bed.Scripts[volume] = LoadTests.Script(volume);
            }
            for (var step = 0; step < 20; step++)
            {
                foreach (var commands in bed.Scripts.Values)
                {
                    await LoadTests.Publish(bed._bed.Producer, commands[step]);
                }
            }
            Assert.Equal(bed.All.Count, await bed.VirtualHost.MessageCountAsync(Messaging.Topology.IngressQueue));
            return bed;
        }

        public WorkerProcess Start(string instance, IDictionary<string, string?>? extra = null) => _bed.Start(instance, extra);

        /// <summary>Every command ends once, without failure, each volume's in the order published; the share checks clean.</summary>
        public async Task AssertAllFinishedInOrderAsync()
        {
            var all = All;
            await _bed.Events.WaitForAllAsync(all.Select(c => c.CommandId).ToList(), TimeSpan.FromMinutes(3));
            var failures = _bed.Events.Terminal.Where(e => e.Type == nameof(CommandFailed)).ToList();
            var violations = _bed.Events.OrderingViolations(Scripts.Values);
            _output.WriteLine($"{all.Count} commands over {Scripts.Count} volumes: ordering violations {violations}, failures {failures.Count}");
            Assert.Equal(0, violations);
            Assert.True(failures.Count == 0, string.Join(Environment.NewLine, failures.Take(5)));
            Assert.Equal(0, _bed.Events.AssertOneTerminalEventEach(all.Select(c => c.CommandId)));
            Assert.Equal("", await Tools.CheckShareAsync(_bed.Share));
        }

        public ValueTask DisposeAsync() => _bed.DisposeAsync();
    }

    /// <summary>The ingress router hands over at SIGTERM while a backlog waits: the next router must not route
    /// newer commands of a volume before the ones the stopping router had prefetched.</summary>
    [Fact]
    public async Task SIGTERM_of_the_router_with_a_backlog_waiting_keeps_every_volumes_order()
    {
        await using var bed = await Backlog.PublishAsync(output, "router-handover", volumes: 60);
        var vhost = bed.VirtualHost;
        var all = bed.All.Count;

        // Two routers start together. Both are frozen (SIGSTOP) the moment the backlog starts to shrink, so that
        // the active one cannot drain it (it routes a thousand commands a second, faster than the management API
        // says who is active) before the second one waits behind it, however slowly that one starts; then the
        // other is resumed, and once it waits, the active router is resumed and stopped at once. Exactly r1 or r2:
        // the management API may still list the stopped set-up run's consumer for a moment.
        var r1 = bed.Start("r1");
        var r2 = bed.Start("r2");
        await Eventually.WaitAsync(() => vhost.MessageCountAsync(Messaging.Topology.IngressQueue), n => n < all, TimeSpan.FromSeconds(120), 1);
        await Task.WhenAll(r1.SignalAsync("STOP"), r2.SignalAsync("STOP"));
        var activeFirst = await Eventually.WaitAsync(() => Ownership.ReadAsync(vhost),
            o => o[Messaging.Topology.IngressQueue].Active is ["r1" or "r2"], TimeSpan.FromSeconds(60), 50);
        var router = activeFirst[Messaging.Topology.IngressQueue].Active[0] == "r1" ? r1 : r2;
        await (router == r1 ? r2 : r1).SignalAsync("CONT");
        var both = await Eventually.WaitAsync(() => Ownership.ReadAsync(vhost),
            o => o[Messaging.Topology.IngressQueue] is { Instances: ["r1", "r2"], Active.Count: 1 }, TimeSpan.FromSeconds(60), 100);
        Assert.True(both[Messaging.Topology.IngressQueue] is { Instances: ["r1", "r2"] }, Ownership.Describe(both));
        var waiting = await vhost.MessageCountAsync(Messaging.Topology.IngressQueue);
        await router.SignalAsync("CONT");
        await router.SignalTermAsync();
        output.WriteLine($"stopped router {router.InstanceName} with {waiting} of {all} commands still waiting in the ingress queue");
        Assert.True(waiting > 0, "the backlog was routed before the router could be stopped: the test proves nothing");

        await bed.AssertAllFinishedInOrderAsync();
    }

    /// <summary>A worker that fails to start after its consumers subscribed (its HTTP port is taken, Kestrel binds
    /// last) must hand back every command it took and exit: before, it kept the ingress queue's single active
    /// consumer while the disposed host waited for its forwards, and nothing moved (a CI run, under load).</summary>
    [Fact]
    public async Task A_worker_that_fails_to_start_with_a_backlog_waiting_releases_it_and_exits_1()
    {
        await using var bed = await Backlog.PublishAsync(output, "failed-start", volumes: 10);
        using var taken = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        taken.Start();
        var broken = bed.Start("broken", new Dictionary<string, string?> { ["Http:Urls"] = $"http://127.0.0.1:{((System.Net.IPEndPoint)taken.LocalEndpoint).Port}" });
        Assert.Equal(WorkerRun.StartFailed, await broken.WaitForExitAsync(TimeSpan.FromSeconds(90)));
        Assert.Contains($"Subscribed to {WorkerSettings.Partitions} partition queues as broken", broken.Output, StringComparison.Ordinal);
        Assert.Contains("could not start: Failed to bind to address", broken.Output, StringComparison.Ordinal);
        Assert.Contains("Released " + WorkerSettings.Partitions + " partitions and the ingress queue", broken.Output, StringComparison.Ordinal);

        bed.Start("next");
        await bed.AssertAllFinishedInOrderAsync();
    }

    /// <summary>qemu-img is checked before any consumer subscribes: a worker that cannot run it takes no command.</summary>
    [Fact]
    public async Task A_worker_without_qemu_img_exits_1_before_it_takes_a_command()
    {
        var broker = await RabbitMqBroker.SharedAsync();
        await using var vhost = await broker.CreateVirtualHostAsync("no-qemu-img");
        using var root = new TempDirectory();
        var share = Directory.CreateDirectory(Path.Combine(root.Path, "share")).FullName;
        await using var worker = WorkerProcess.Start(vhost.AmqpUri, share, "without",
            new Dictionary<string, string?> { ["QemuImg:Executable"] = Path.Combine(root.Path, "no-such-qemu-img") });
        Assert.Equal(WorkerRun.StartFailed, await worker.WaitForExitAsync(TimeSpan.FromSeconds(60)));
        Assert.Contains("could not start: qemu-img could not be started from", worker.Output, StringComparison.Ordinal);
        Assert.DoesNotContain("Subscribed to", worker.Output, StringComparison.Ordinal);
        Assert.DoesNotContain("Released ", worker.Output, StringComparison.Ordinal); // it held nothing to hand over
    }

    /// <summary>An option out of range stops the worker before it connects anywhere: exit 2 (systemd's unit does not
    /// restart it), and stderr names the option.</summary>
    [Fact]
    public async Task A_worker_with_an_invalid_option_exits_2_naming_it()
    {
        using var root = new TempDirectory();
        await using var worker = WorkerProcess.Start(new Uri("amqp://guest:guest@127.0.0.1:1/"), root.Path, "invalid",
            new Dictionary<string, string?> { ["Worker:PartitionCount"] = "0" });
        Assert.Equal(WorkerRun.InvalidConfiguration, await worker.WaitForExitAsync(TimeSpan.FromSeconds(60)));
        Assert.Contains("nfsvolumeworker: invalid configuration:", worker.Output, StringComparison.Ordinal);
        Assert.Contains("PartitionCount", worker.Output, StringComparison.Ordinal);
        Assert.DoesNotContain("Unhandled exception", worker.Output, StringComparison.Ordinal);
    }
}
