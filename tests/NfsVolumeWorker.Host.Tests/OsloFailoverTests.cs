using System.Diagnostics;
using NfsVolumeWorker.Testing;
using Xunit.Abstractions;

namespace NfsVolumeWorker.Host.Tests;

/// <summary>The oslo adapter without a single point of failure: two worker processes run the adapter for one backend;
/// the active one is killed with kill -9 and the standby serves the backend's Cinder queues within 10 s (the kernel
/// drops the dead process's OFD lock on the share, the lease).</summary>
public sealed class OsloFailoverTests(ITestOutputHelper output) : IAsyncLifetime
{
    private readonly string _share = Directory.CreateTempSubdirectory("nfsvol-oslo-kill-").FullName;
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

    private WorkerProcess Start(string name, Uri broker)
    {
        var w = WorkerProcess.Start(name, broker, null, _share, "--Oslo:Enabled=true", "--Oslo:Host=hostA@nfs", "--Worker:PartitionCount=4");
        _workers.Add(w);
        return w;
    }

    private static async Task WaitForAsync(WorkerProcess w, string text, TimeSpan timeout)
    {
        var sw = Stopwatch.StartNew();
        while (!w.Output.Contains(text, StringComparison.Ordinal))
        {
            Assert.False(w.HasExited, $"{w.InstanceName} exited: {w.Output}");
            Assert.True(sw.Elapsed < timeout, $"{w.InstanceName} did not log '{text}' within {timeout.TotalSeconds} s: {w.Output}");
            await Task.Delay(50);
        }
    }

    [Fact]
    public async Task The_standby_adapter_serves_within_10_s_of_a_kill_9_of_the_active_one()
    {
        var broker = await RabbitMqBroker.SharedAsync();
        await using var vhost = await broker.CreateVirtualHostAsync("oslo-kill");
        var active = Start("oslo-active", vhost.AmqpUri);
        await WaitForAsync(active, "oslo adapter serving hostA@nfs", TimeSpan.FromSeconds(60));
        var standby = Start("oslo-standby", vhost.AmqpUri);
        await WaitForAsync(standby, "is a standby", TimeSpan.FromSeconds(60));
        Assert.DoesNotContain("oslo adapter serving", standby.Output, StringComparison.Ordinal);

        var killed = Stopwatch.StartNew();
        active.KillHard(); // SIGKILL: no shutdown code runs, the kernel closes its files and drops its locks
        await WaitForAsync(standby, "oslo adapter serving hostA@nfs", TimeSpan.FromSeconds(10));
        output.WriteLine($"standby served {killed.Elapsed.TotalSeconds:0.00} s after kill -9 of the active adapter");
        Assert.True(killed.Elapsed < TimeSpan.FromSeconds(10));
        Assert.Contains("took over from another instance: True", standby.Output, StringComparison.Ordinal);
    }
}
