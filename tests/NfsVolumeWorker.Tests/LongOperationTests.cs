using System.Text.Json;
using System.Diagnostics;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Messaging;
using NfsVolumeWorker.Testing;
using NfsVolumeWorker.Tests.Support;

namespace NfsVolumeWorker.Tests;

/// <summary>Long operations: they never delay another volume of the same partition, and they complete
/// exactly once even when they outlast the broker's consumer_timeout.</summary>
public sealed class LongOperationTests(ITestOutputHelper output)
{
    private const long MiB = WorkerTestBed.MiB;
    private const int AcceptedLog = 3001;
    private const int OperationStartedLog = 1000;

    [Fact]
    public async Task A_long_clone_of_volume_A_does_not_delay_volume_B_in_the_same_partition()
    {
        await using var bed = await WorkerTestBed.StartAsync(output, "a-not-b", SlowCopy.Settings(8L << 20)); // 192 MiB: about 24 s of copying
        var (a, b) = Ids.SamePartition();
        Assert.Equal(PartitionKey.PartitionOf(a, WorkerSettings.Partitions), PartitionKey.PartitionOf(b, WorkerSettings.Partitions));
        await bed.RunOkAsync(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = a, SizeBytes = 512 * MiB }, nameof(VolumeCreated));
        await Tools.WriteAsync(bed.PathOf($"volume-{a}"), "raw", 0x42, 0, 192 * MiB);

        var clone = new CloneVolume { CommandId = Guid.NewGuid(), VolumeId = a, NewVolumeId = Guid.NewGuid() };
        var cloneTime = Stopwatch.StartNew();
        await bed.Producer.PublishAsync(clone);
        // The copy is under way: qemu-img has reported progress.
        await Eventually.WaitAsync(() => bed.Events.Progress.Count(p => p.CommandId == clone.CommandId), n => n > 0, TimeSpan.FromSeconds(20));

        var bTime = Stopwatch.StartNew();
        var bCommands = new VolumeCommand[]
        {
            new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = b, SizeBytes = 8 * MiB },
            new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = b, SnapshotId = Guid.NewGuid() },
            new ExtendVolume { CommandId = Guid.NewGuid(), VolumeId = b, NewSizeBytes = 16 * MiB },
        };
        foreach (var c in bCommands)
        {
            await bed.Producer.PublishAsync((dynamic)c);
        }
        await bed.Events.WaitForAllAsync(bCommands.Select(c => c.CommandId).ToList(), TimeSpan.FromSeconds(30));
        var bElapsed = bTime.Elapsed;
        Assert.Empty(bed.Events.TerminalOf(clone.CommandId)); // A's clone is still copying
        Assert.All(bCommands, c => Assert.NotEqual(nameof(CommandFailed), bed.Events.TerminalOf(c.CommandId)[0].Type));

        await bed.Events.WaitForAsync(clone.CommandId, TimeSpan.FromSeconds(120));
        output.WriteLine($"volume B: 3 commands in {bElapsed.TotalSeconds:0.00} s while volume A's clone (same partition {PartitionKey.PartitionOf(a, WorkerSettings.Partitions)}) took {cloneTime.Elapsed.TotalSeconds:0.0} s");
        // Queued behind A, B would take the rest of the 24 s copy; alone it takes well under a second, and the
        // limit leaves room for a loaded CI machine.
        Assert.True(bElapsed < TimeSpan.FromSeconds(10), $"B took {bElapsed.TotalSeconds:0.0} s");
        Assert.True(cloneTime.Elapsed > bElapsed + TimeSpan.FromSeconds(2));
        Assert.Equal(nameof(VolumeCloned), bed.Events.TerminalOf(clone.CommandId)[0].Type);
        Assert.Equal(0, await Tools.CompareAsync(bed.PathOf($"volume-{clone.NewVolumeId}"), "raw", bed.PathOf($"volume-{a}"), "raw"));
    }

    [Fact]
    public async Task Progress_events_of_a_long_copy_carry_bytes_done_bytes_total_and_the_time_left()
    {
        await using var bed = await WorkerTestBed.StartAsync(output, "progress-bytes", SlowCopy.Settings(16L << 20)); // 96 MiB: about 6 s
        var volume = Guid.NewGuid();
        await bed.RunOkAsync(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = volume, SizeBytes = 256 * MiB }, nameof(VolumeCreated));
        await Tools.WriteAsync(bed.PathOf($"volume-{volume}"), "raw", 0x42, 0, 96 * MiB);
        var data = NfsVolumeWorker.Storage.Durability.FileOwnership.AllocatedBytes(bed.PathOf($"volume-{volume}"));

        var clone = new CloneVolume { CommandId = Guid.NewGuid(), VolumeId = volume, NewVolumeId = Guid.NewGuid() };
        await bed.Producer.PublishAsync(clone);
        await bed.Events.WaitForAsync(clone.CommandId, TimeSpan.FromSeconds(120));

        Assert.Equal(nameof(VolumeCloned), bed.Events.TerminalOf(clone.CommandId)[0].Type);
        // Progress is published without waiting: the last ones may still be on their way after the terminal event.
        var progress = await Eventually.WaitAsync(() => bed.Events.Progress.Where(p => p.CommandId == clone.CommandId).OrderBy(p => p.Order).ToList(),
            p => p.Any(e => e.Message.GetProperty("fraction").GetDouble() >= 1), TimeSpan.FromSeconds(20));
        foreach (var p in progress)
        {
            output.WriteLine(p.MessageJson);
        }
        Assert.All(progress, p => Assert.Equal(data, p.Message.GetProperty("bytesTotal").GetInt64()));
        var done = progress.Select(p => p.Message.GetProperty("bytesDone").GetInt64()).ToList();
        Assert.Equal(done.Order(), done);
        Assert.Equal(data, done[^1]);
        var left = progress.Where(p => p.Message.GetProperty("fraction").GetDouble() < 1 && p.Message.TryGetProperty("secondsLeft", out var s) && s.ValueKind == JsonValueKind.Number)
            .Select(p => p.Message.GetProperty("secondsLeft").GetDouble()).ToList();
        Assert.True(left.Count >= 1, "no event of the running copy estimated the time left");
        Assert.All(left, s => Assert.InRange(s, 0, 120));
    }

    [Fact]
    public async Task An_operation_longer_than_the_brokers_consumer_timeout_completes_exactly_once()
    {
        var consumerTimeout = TimeSpan.FromSeconds(5);
        await using var broker = await RabbitMqBroker.StartDedicatedAsync(consumerTimeout);
        await using var bed = await WorkerTestBed.StartAsync(output, "consumer-timeout", SlowCopy.Settings(16L << 20), broker);
        var vol = Guid.NewGuid();
        await bed.RunOkAsync(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = vol, SizeBytes = 512 * MiB }, nameof(VolumeCreated));
        await Tools.WriteAsync(bed.PathOf($"volume-{vol}"), "raw", 0x77, 0, 240 * MiB);

        var clone = new CloneVolume { CommandId = Guid.NewGuid(), VolumeId = vol, NewVolumeId = Guid.NewGuid() };
        var sw = Stopwatch.StartNew();
        await bed.Producer.PublishAsync(clone);
        var done = await bed.Events.WaitForAsync(clone.CommandId, TimeSpan.FromSeconds(90));
        var took = sw.Elapsed;
        Assert.Equal(nameof(VolumeCloned), done.Type);
        // Would a redelivery come, it comes after the timeout: wait for one more timeout and a sweep.
        await Task.Delay(consumerTimeout + TimeSpan.FromSeconds(2));

        output.WriteLine($"clone took {took.TotalSeconds:0.0} s against a consumer_timeout of {consumerTimeout.TotalSeconds:0} s ({broker.Description})");
        Assert.True(took > consumerTimeout * 2, $"the clone took only {took.TotalSeconds:0.0} s: not longer than the consumer timeout");
        Assert.Equal(0, bed.Events.AssertOneTerminalEventEach([clone.CommandId]));
        Assert.Equal(1, bed.Worker.Logs.Entries.Count(e => e.Id.Id == AcceptedLog && e.Message.Contains(clone.CommandId.ToString(), StringComparison.Ordinal)));
        Assert.Equal(1, bed.Worker.Logs.Entries.Count(e => e.Id.Id == OperationStartedLog && e.Message.StartsWith("clone-volume", StringComparison.Ordinal)));
        Assert.Equal(0, await Tools.CompareAsync(bed.PathOf($"volume-{clone.NewVolumeId}"), "raw", bed.PathOf($"volume-{vol}"), "raw"));
        // Nothing is left unacknowledged or waiting on any queue.
        var queues = await bed.VirtualHost.ListQueuesAsync();
        foreach (var q in queues.Where(q => q.Name.StartsWith("nfsvol.", StringComparison.Ordinal) && !q.Name.EndsWith("_error", StringComparison.Ordinal) && !q.Name.EndsWith("_skipped", StringComparison.Ordinal)))
        {
            Assert.Equal(0, await bed.VirtualHost.MessageCountAsync(q.Name));
        }
        Assert.DoesNotContain(bed.Worker.Logs.Entries, e => e.Message.Contains("PRECONDITION_FAILED", StringComparison.Ordinal));
    }
}
