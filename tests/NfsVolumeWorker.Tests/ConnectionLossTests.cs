using Microsoft.Extensions.DependencyInjection;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Partitions;
using NfsVolumeWorker.Tests.Support;

namespace NfsVolumeWorker.Tests;

public sealed class ConnectionLossTests(ITestOutputHelper output)
{
    private const long MiB = WorkerTestBed.MiB;

    [Fact]
    public async Task When_the_broker_cuts_the_workers_connections_it_connects_and_subscribes_again_and_commands_go_on()
    {
        await using var bed = await WorkerTestBed.StartAsync(output, "cut");
        var subscriptions = bed.Worker.Services.GetRequiredService<PartitionSubscriptions>();
        var volume = Guid.NewGuid();
        await bed.RunOkAsync(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = volume, SizeBytes = MiB }, nameof(VolumeCreated));

        // MassTransit's connection (router, events) and the partition consumers' own, as a network cut would.
        // The management API lists a connection only after its first statistics emission (every 5 s).
        // Closing again until the partition consumers' connection was among those closed (the bus reconnects
        // fast, and its new connection may be listed before the partition consumers' one is).
        var closed = 0;
        bool PartitionsCut() => subscriptions.Connection is null || subscriptions.All.Any(p => !p.IsSubscribed);
        var cut = await Eventually.WaitAsync(async () =>
        {
            closed += await bed.VirtualHost.CloseConnectionsAsync("in-process");
            return closed >= 2 && await Eventually.WaitAsync(PartitionsCut, c => c, TimeSpan.FromSeconds(2), 20);
        }, c => c, TimeSpan.FromSeconds(30), 500);
        Assert.True(cut, $"closed {closed} connection(s) named in-process, but the partition consumers' connection was not among them");

        // Back within a few supervise rounds, every partition consumed again on a new connection.
        await Eventually.WaitAsync(() => subscriptions.Connection is not null && subscriptions.All.All(p => p.IsSubscribed), back => back, TimeSpan.FromSeconds(60));
        var consumers = await Eventually.WaitAsync(async () => (await bed.VirtualHost.ListConsumersAsync()).Count(c => c.Queue.StartsWith("nfsvol.partition.", StringComparison.Ordinal)),
            n => n == WorkerSettings.Partitions, TimeSpan.FromSeconds(30));
        Assert.Equal(WorkerSettings.Partitions, consumers);
        Assert.Contains(bed.Worker.Logs.Entries, e => e.Id.Id == 3122 && e.Message.Contains("re-established", StringComparison.Ordinal));

        // And commands on the same volume and on every partition complete, once each.
        var snapshot = new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = volume, SnapshotId = Guid.NewGuid() };
        await bed.RunOkAsync(snapshot, nameof(SnapshotCreated), TimeSpan.FromSeconds(90));
        var more = Enumerable.Range(0, WorkerSettings.Partitions).SelectMany(p => Ids.InPartition(p, 1))
            .Select(v => new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = v, SizeBytes = MiB }).ToList();
        foreach (var c in more)
        {
            await bed.Producer.PublishAsync(c);
        }
        await bed.Events.WaitForAllAsync(more.Select(c => c.CommandId).ToList(), TimeSpan.FromSeconds(60));
        Assert.Equal(0, bed.Events.AssertOneTerminalEventEach(more.Select(c => c.CommandId).Append(snapshot.CommandId)));
        Assert.All(more, c => Assert.Equal(nameof(VolumeCreated), bed.Events.TerminalOf(c.CommandId).Single().Type));
    }
}
