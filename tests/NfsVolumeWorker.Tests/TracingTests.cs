using System.Collections.Concurrent;
using System.Diagnostics;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Tests.Support;

namespace NfsVolumeWorker.Tests;

/// <summary>One trace from the producer's publish to the qemu-img call, across the router, the partition queue
/// and the volume inbox on the share.</summary>
public sealed class TracingTests(ITestOutputHelper output)
{
    private const long MiB = WorkerTestBed.MiB;

    [Fact]
    public async Task The_trace_of_a_published_command_reaches_the_partition_consumer_the_operation_and_its_qemu_img_call()
    {
        var stopped = new ConcurrentBag<Activity>();
        using var listener = new ActivityListener
        {
            ShouldListenTo = s => s.Name is "NfsVolumeWorker" or "NfsVolumeWorker.Storage" or "MassTransit",
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = stopped.Add,
        };
        ActivitySource.AddActivityListener(listener);
        await using var bed = await WorkerTestBed.StartAsync(output, "trace");
        var volume = Guid.NewGuid();
        await bed.RunOkAsync(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = volume, SizeBytes = MiB }, nameof(VolumeCreated));

        var snapshotId = Guid.NewGuid();
        await bed.RunOkAsync(new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = volume, SnapshotId = snapshotId }, nameof(SnapshotCreated));
        await bed.RunOkAsync(new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = volume, SnapshotId = Guid.NewGuid() }, nameof(SnapshotCreated));

        // Deleting the middle snapshot re-points the image above it with qemu-img rebase -u (a create writes its overlay
        // natively, and the overlays hold no data, so nothing is committed: the re-point is the qemu-img call to trace).
        var snapshot = new DeleteSnapshot { CommandId = Guid.NewGuid(), VolumeId = volume, SnapshotId = snapshotId };
        ActivityTraceId traceId;
        using (var root = new Activity("test publish").SetIdFormat(ActivityIdFormat.W3C).Start())
        {
            traceId = root.TraceId;
            await bed.Producer.PublishAsync(snapshot);
        }
        await bed.Events.WaitForAsync(snapshot.CommandId);
        // Activities stop as their using blocks end, just after the event (the receive one after the ack).
        var partition = PartitionKey.QueueName(PartitionKey.PartitionOf(volume, WorkerSettings.Partitions));
        string[] expected = [$"{Messaging.Topology.IngressQueue} route", $"{partition} receive", "run DeleteSnapshot"];
        static bool QemuImg(string name) => name.StartsWith("qemu-img ", StringComparison.Ordinal);
        var inTrace = await Eventually.WaitAsync(() => stopped.Where(a => a.TraceId == traceId).Select(a => a.DisplayName).Distinct().ToList(),
            names => expected.All(names.Contains) && names.Any(QemuImg), TimeSpan.FromSeconds(10));
        output.WriteLine("in the trace: " + string.Join(" | ", inTrace));
        Assert.All(expected, name => Assert.Contains(name, inTrace));
        Assert.Contains(inTrace, QemuImg);
        var route = stopped.Single(a => a.TraceId == traceId && a.DisplayName == $"{Messaging.Topology.IngressQueue} route");
        var receive = stopped.Single(a => a.TraceId == traceId && a.DisplayName == $"{partition} receive");
        Assert.Equal(snapshot.CommandId.ToString(), receive.GetTagItem("nfsvol.command_id")?.ToString());
        Assert.Equal(route.SpanId, receive.ParentSpanId); // the partition hop continues the router's span
    }
}
