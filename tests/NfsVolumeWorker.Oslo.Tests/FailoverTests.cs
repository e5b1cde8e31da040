using System.Diagnostics;
using Microsoft.Extensions.DependencyInjection;
using NfsVolumeWorker.Oslo.Rpc;
using NfsVolumeWorker.Testing;
using Xunit.Abstractions;

namespace NfsVolumeWorker.Oslo.Tests;

/// <summary>Two instances run the adapter for one backend: one serves its Cinder queues, the other waits on the lease
/// (an OFD lock on the share) and takes over within seconds when the first stops; Cinder's own VolumeAPI then runs
/// its whole lifecycle against the new one.</summary>
public sealed class FailoverTests(ITestOutputHelper output)
{
    [Fact]
    public async Task A_standby_adapter_serves_nothing_until_the_active_one_stops_then_takes_over_within_10_s()
    {
        var broker = await RabbitMqBroker.SharedAsync();
        await using var vhost = await broker.CreateVirtualHostAsync("oslo-failover");
        var root = Directory.CreateTempSubdirectory("nfsvol-oslo-failover-");
        var scratch = Directory.CreateTempSubdirectory("oslo-py-");
        var active = await OsloWorker.StartAsync(vhost, sharedRoot: root);
        OsloWorker? standby = null;
        try
        {
            standby = await OsloWorker.StartAsync(vhost, sharedRoot: root, waitUntilServing: false);
            await EventuallyAsync(() => Task.FromResult(standby.Logs.All.Contains("is a standby", StringComparison.Ordinal)), "the second adapter waits as a standby");
            Assert.False(standby.Services.GetRequiredService<OsloRpcServer>().IsServing);
            // Exactly one adapter consumes the backend's queues (two would compete for one volume's casts). The
            // management API's counts lag by up to a second: wait until they show the active one, then no more.
            async Task<List<QueueInfo>> CinderQueuesAsync() =>
                (await vhost.ListQueuesAsync()).Where(q => q.Name.StartsWith("cinder-volume", StringComparison.Ordinal)).ToList();
            await EventuallyAsync(async () => (await CinderQueuesAsync()) is { Count: > 0 } q && q.All(x => x.Consumers >= 1), "the active adapter's consumers show");
            await Task.Delay(1500); // one more statistics interval: a second adapter would show by now
            Assert.All(await CinderQueuesAsync(), q => Assert.Equal(1, q.Consumers));

            var stopped = Stopwatch.StartNew();
            await active.DisposeAsync();
            await standby.Services.GetRequiredService<OsloRpcServer>().Ready.WaitAsync(TimeSpan.FromSeconds(10));
            output.WriteLine($"the standby served {stopped.Elapsed.TotalSeconds:0.0} s after the active adapter stopped");
            Assert.Contains("took over from another instance: True", standby.Logs.All, StringComparison.Ordinal);

            await Python.RunAsync(output, "lifecycle.py",
                "--url", Python.RabbitUrl(vhost), "--host", OsloWorker.Host, "--share", OsloWorker.Export,
                "--dir", standby.ShareDirectory, "--db", Path.Combine(scratch.FullName, "cinder.sqlite"), "--result", Path.Combine(scratch.FullName, "result.json"));
        }
        finally
        {
            if (standby is not null)
            {
                await standby.DisposeAsync();
            }
            scratch.Delete(recursive: true);
            root.Delete(recursive: true);
        }
    }

    [Fact]
    public async Task Cinder_s_lifecycle_runs_to_the_end_while_the_active_adapter_stops_halfway_and_the_standby_takes_over()
    {
        var broker = await RabbitMqBroker.SharedAsync();
        await using var vhost = await broker.CreateVirtualHostAsync("oslo-failover-live");
        var root = Directory.CreateTempSubdirectory("nfsvol-oslo-failover-");
        var scratch = Directory.CreateTempSubdirectory("oslo-py-");
        var active = await OsloWorker.StartAsync(vhost, sharedRoot: root);
        OsloWorker? standby = null;
        try
        {
            standby = await OsloWorker.StartAsync(vhost, sharedRoot: root, waitUntilServing: false);
            await EventuallyAsync(() => Task.FromResult(standby.Logs.All.Contains("is a standby", StringComparison.Ordinal)), "the second adapter waits as a standby");
            var lifecycle = Python.RunAsync(output, "lifecycle.py",
                "--url", Python.RabbitUrl(vhost), "--host", OsloWorker.Host, "--share", OsloWorker.Export,
                "--dir", active.ShareDirectory, "--db", Path.Combine(scratch.FullName, "cinder.sqlite"), "--result", Path.Combine(scratch.FullName, "result.json"));
            // Halfway: once the active adapter has accepted the first snapshot, it goes away.
            await EventuallyAsync(() => Task.FromResult(active.Logs.All.Contains("-> CreateSnapshot ", StringComparison.Ordinal) || lifecycle.IsCompleted),
                "the lifecycle reached its snapshots");
            Assert.False(lifecycle.IsCompleted, "the lifecycle ended before the adapter could be stopped halfway");
            await active.DisposeAsync();
            var result = await lifecycle; // Cinder's checks all passed, across the takeover
            Assert.Contains("PASS", result, StringComparison.Ordinal);
            Assert.Contains("took over from another instance: True", standby.Logs.All, StringComparison.Ordinal);
            Assert.Contains("(accepted)", standby.Logs.All, StringComparison.Ordinal); // the standby served the rest
        }
        finally
        {
            if (standby is not null)
            {
                await standby.DisposeAsync();
            }
            scratch.Delete(recursive: true);
            root.Delete(recursive: true);
        }
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
