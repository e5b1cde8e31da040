using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Tests.Support;

namespace NfsVolumeWorker.Tests;

/// <summary>The ingress router keeps forwards to different partitions in flight together (its rate is not one quorum
/// confirm per command), and still never lets a command of a partition pass an earlier one of the same partition.</summary>
public sealed class RouterPipelineTests(ITestOutputHelper output)
{
    [Fact]
    public async Task While_forwards_to_one_partition_are_refused_other_partitions_are_routed_and_the_refused_ones_follow_in_order()
    {
        await using var bed = await WorkerTestBed.StartAsync(output, "router-pipe");
        var blocked = Ids.InPartition(0, 1).Single();
        var free = Ids.InPartition(1, 1).Single();
        await bed.RunOkAsync(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = blocked, SizeBytes = WorkerTestBed.MiB }, nameof(VolumeCreated));
        await bed.RunOkAsync(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = free, SizeBytes = WorkerTestBed.MiB }, nameof(VolumeCreated));

        // Partition 0's queue unbound from its exchange: a forward to it is returned as unroutable and the router retries it.
        var queue = PartitionKey.QueueName(0);
        var factory = new RabbitMQ.Client.ConnectionFactory { Uri = bed.VirtualHost.AmqpUri };
        await using var connection = await factory.CreateConnectionAsync();
        await using var channel = await connection.CreateChannelAsync();
        await channel.QueueUnbindAsync(queue, queue, "");

        var first = new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = blocked, SnapshotId = Guid.NewGuid() };
        var second = new DeleteSnapshot { CommandId = Guid.NewGuid(), VolumeId = blocked, SnapshotId = first.SnapshotId };
        var other = new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = free, SnapshotId = Guid.NewGuid() };
        await bed.Producer.PublishAsync(first);
        await bed.Producer.PublishAsync(second);
        await bed.RunOkAsync(other, nameof(SnapshotCreated), TimeSpan.FromSeconds(60));
        Assert.Empty(bed.Events.TerminalOf(first.CommandId));
        Assert.Empty(bed.Events.TerminalOf(second.CommandId));

        await channel.QueueBindAsync(queue, queue, "");
        var created = await bed.Events.WaitForAsync(first.CommandId, TimeSpan.FromSeconds(90));
        var deleted = await bed.Events.WaitForAsync(second.CommandId, TimeSpan.FromSeconds(90));
        output.WriteLine($"{created}\n{deleted}");
        Assert.Equal(nameof(SnapshotCreated), created.Type);
        Assert.Equal(nameof(SnapshotDeleted), deleted.Type); // the delete did not pass the create it depends on
        Assert.True(created.Order < deleted.Order, "the partition's commands came out of order");
    }
}
