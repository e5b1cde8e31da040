using System.Diagnostics;
using Microsoft.Extensions.DependencyInjection;
using NfsVolumeWorker.Oslo.Rpc;
using NfsVolumeWorker.Testing;
using Xunit.Abstractions;

namespace NfsVolumeWorker.Oslo.Tests;

/// <summary>Two instances run the adapter for one backend: one serves its Cinder queues, the other waits on the lease
/// (an OFD lock on the share) and takes over within seconds when the first stops; Cinder's own VolumeAPI runs its
/// whole lifecycle across the takeover.</summary>
public sealed class FailoverTests(ITestOutputHelper output)
{
    /// <summary>An active adapter and a standby on one broker vhost and one share, and a scratch folder for Cinder's side.</summary>
    private sealed class Pair : IAsyncDisposable
    {
        public required VirtualHost VirtualHost { get; init; }
        public required DirectoryInfo Root { get; init; }
        public required DirectoryInfo Scratch { get; init; }
        public required OsloWorker Active { get; init; }
        public required OsloWorker Standby { get; init; }

        public string[] LifecycleArgs => [
            "--url", Python.RabbitUrl(VirtualHost), "--host", OsloWorker.Host, "--share", OsloWorker.Export, "--dir", Standby.ShareDirectory,
            "--db", Path.Combine(Scratch.FullName, "cinder.sqlite"), "--result", Path.Combine(Scratch.FullName, "result.json")];

        public static async Task<Pair> StartAsync(string prefix)
        {
            var broker = await RabbitMqBroker.SharedAsync();
            var vhost = await broker.CreateVirtualHostAsync(prefix);
            var root = Directory.CreateTempSubdirectory("nfsvol-oslo-failover-");
            var active = await OsloWorker.StartAsync(vhost, sharedRoot: root);
            var standby = await OsloWorker.StartAsync(vhost, sharedRoot: root, waitUntilServing: false);
            await EventuallyAsync(() => Task.FromResult(standby.Logs.All.Contains("is a standby", StringComparison.Ordinal)), "the second adapter waits as a standby");
            return new Pair { VirtualHost = vhost, Root = root, Scratch = Directory.CreateTempSubdirectory("oslo-py-"), Active = active, Standby = standby };
        }

        public async ValueTask DisposeAsync()
        {
            await Active.DisposeAsync(); // a second dispose of a stopped host does nothing
            await Standby.DisposeAsync();
            await VirtualHost.DisposeAsync();
            Scratch.Delete(recursive: true);
            Root.Delete(recursive: true);
        }
    }

    [Fact]
    public async Task A_standby_adapter_serves_nothing_until_the_active_one_stops_then_takes_over_within_10_s()
    {
        await using var pair = await Pair.StartAsync("oslo-failover");
        Assert.False(pair.Standby.Services.GetRequiredService<OsloRpcServer>().IsServing);
        // Exactly one adapter consumes the backend's queues (two would compete for one volume's casts). The
        // management API's counts lag by up to a second: wait until they show the active one, then no more.
        async Task<List<QueueInfo>> CinderQueuesAsync() =>
            (await pair.VirtualHost.ListQueuesAsync()).Where(q => q.Name.StartsWith("cinder-volume", StringComparison.Ordinal)).ToList();
        await EventuallyAsync(async () => (await CinderQueuesAsync()) is { Count: > 0 } q && q.All(x => x.Consumers >= 1), "the active adapter's consumers show");
        await Task.Delay(1500); // one more statistics interval: a second adapter would show by now
        Assert.All(await CinderQueuesAsync(), q => Assert.Equal(1, q.Consumers));

        var stopped = Stopwatch.StartNew();
        await pair.Active.DisposeAsync();
        await pair.Standby.Services.GetRequiredService<OsloRpcServer>().Ready.WaitAsync(TimeSpan.FromSeconds(10));
        output.WriteLine($"the standby served {stopped.Elapsed.TotalSeconds:0.0} s after the active adapter stopped");
        Assert.Contains("took over from another instance: True", pair.Standby.Logs.All, StringComparison.Ordinal);

        await Python.RunAsync(output, "lifecycle.py", pair.LifecycleArgs);
    }

    [Fact]
    public async Task Cinder_s_lifecycle_runs_to_the_end_while_the_active_adapter_stops_halfway_and_the_standby_takes_over()
    {
        await using var pair = await Pair.StartAsync("oslo-failover-live");
        var lifecycle = Python.RunAsync(output, "lifecycle.py", pair.LifecycleArgs);
        // Halfway: once the active adapter has accepted the first snapshot, it goes away.
        await EventuallyAsync(() => Task.FromResult(pair.Active.Logs.All.Contains("-> CreateSnapshot ", StringComparison.Ordinal) || lifecycle.IsCompleted),
            "the lifecycle reached its snapshots");
        Assert.False(lifecycle.IsCompleted, "the lifecycle ended before the adapter could be stopped halfway");
        await pair.Active.DisposeAsync();
        var result = await lifecycle; // Cinder's checks all passed, across the takeover
        Assert.Contains("PASS", result, StringComparison.Ordinal);
        Assert.Contains("took over from another instance: True", pair.Standby.Logs.All, StringComparison.Ordinal);
        Assert.Contains("(accepted)", pair.Standby.Logs.All, StringComparison.Ordinal); // the standby served the rest
    }

    private static async Task EventuallyAsync(Func<Task<bool>> condition, string what)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (!await condition())
        {
            Assert.True(DateTime.UtcNow < deadline, $"timed out waiting until {what}");
            await Task.Delay(100);
        }
    }
}
