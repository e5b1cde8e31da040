using System.Diagnostics;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Messaging;
using NfsVolumeWorker.Tests.Support;

namespace NfsVolumeWorker.Tests;

/// <summary>Bad input never touches the share: a command that can be read but not run yields CommandFailed
/// with a stable error code; a message that cannot be read at all goes to the ingress error (or skipped)
/// queue with MassTransit's fault headers, quickly, and does not hold up the commands behind it.</summary>
public sealed class BadMessageTests(ITestOutputHelper output)
{
    private static string Snapshot(Guid? commandId, string volumeId, Guid snapshotId) =>
        $$"""{{{(commandId is { } c ? $"\"commandId\":\"{c}\"," : "")}}"volumeId":"{{volumeId}}","snapshotId":"{{snapshotId}}"}""";

    [Fact]
    public async Task Undecodable_messages_go_to_the_error_queue_with_fault_headers_and_touch_nothing()
    {
        await using var bed = await WorkerTestBed.StartAsync(output, "bad-decode");
        var vol = Guid.NewGuid();
        await bed.RunOkAsync(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = vol, SizeBytes = 1024 * 1024 }, nameof(VolumeCreated));
        var before = Tools.Tree(bed.Share);
        var uri = bed.VirtualHost.AmqpUri;

        var sw = Stopwatch.StartNew();
        await RawSend.ToQueueAsync(uri, Topology.IngressQueue, "{ this is not json");
        await RawSend.ToQueueAsync(uri, Topology.IngressQueue, RawSend.Envelope(Snapshot(null, vol.ToString(), Guid.NewGuid()), nameof(CreateSnapshot)));
        await RawSend.ToQueueAsync(uri, Topology.IngressQueue, RawSend.Envelope(Snapshot(Guid.NewGuid(), "not-a-uuid", Guid.NewGuid()), nameof(CreateSnapshot)));
        await RawSend.ToQueueAsync(uri, Topology.IngressQueue, RawSend.Envelope(Snapshot(Guid.NewGuid(), vol.ToString(), Guid.NewGuid()), "FormatVolume"));

        // A good command sent after them runs promptly: the bad ones are not retried for long in front of it.
        var good = new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = vol, SnapshotId = Guid.NewGuid() };
        await bed.RunOkAsync(good, nameof(SnapshotCreated), TimeSpan.FromSeconds(30));
        output.WriteLine($"good command after 4 bad ones finished in {sw.Elapsed.TotalSeconds:0.0} s");
        // Retried, the bad ones would hold it up for minutes (MassTransit's retry policy backs off toward 30 s);
        // the limit only leaves room for a loaded CI machine.
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(25), $"the good command waited {sw.Elapsed.TotalSeconds:0.0} s behind undecodable messages");

        // An operator reads dead letters with basic.get (the management UI's "Get messages"); a
        // single-active-consumer queue refuses it, so the error queues must not be one.
        var factory = new RabbitMQ.Client.ConnectionFactory { Uri = uri };
        await using (var connection = await factory.CreateConnectionAsync())
        await using (var channel = await connection.CreateChannelAsync())
        {
            var peek = await channel.BasicGetAsync(Topology.IngressQueue + "_error", autoAck: false);
            Assert.NotNull(peek);
            await channel.BasicNackAsync(peek.DeliveryTag, multiple: false, requeue: true);
        }

        var errors = await RawSend.DrainAsync(uri, Topology.IngressQueue + "_error");
        var skipped = await RawSend.DrainAsync(uri, Topology.IngressQueue + "_skipped");
        foreach (var (body, headers) in errors.Concat(skipped))
        {
            output.WriteLine($"{string.Join("; ", headers.Where(h => h.Key.StartsWith("MT-", StringComparison.Ordinal)).Select(h => $"{h.Key}={h.Value}"))}");
            output.WriteLine("  " + body[..Math.Min(body.Length, 200)]);
        }
        Assert.Equal(3, errors.Count);
        Assert.All(errors, e => Assert.True(e.Headers.ContainsKey("MT-Fault-ExceptionType") && e.Headers.ContainsKey("MT-Fault-Message"),
            "error-queue message without fault headers: " + string.Join(", ", e.Headers.Keys)));
        Assert.Single(skipped);
        Assert.Contains("FormatVolume", skipped[0].Body, StringComparison.Ordinal);

        // Only the good snapshot changed the share; no terminal event for the undecodable ones.
        var after = Tools.Tree(bed.Share);
        Assert.Equal([$"volume-{vol}.{good.SnapshotId}", $"volume-{vol}.info"],
            after.Except(before).Where(p => !p.StartsWith(".nfsvolumeworker", StringComparison.Ordinal)).Order(StringComparer.Ordinal));
        Assert.Equal(2, bed.Events.Terminal.Count);
    }

    [Fact]
    public async Task Commands_that_decode_but_cannot_run_yield_CommandFailed_with_a_clear_code_and_touch_nothing()
    {
        await using var bed = await WorkerTestBed.StartAsync(output, "bad-run");
        var before = Tools.Tree(bed.Share);
        var vol = Guid.NewGuid();

        var unknownShare = new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = vol, SizeBytes = 1024 * 1024, Share = "192.0.2.99:/nowhere" };
        var e1 = await bed.RunAsync(unknownShare);
        Assert.Equal(nameof(CommandFailed), e1.Type);
        Assert.Equal("ShareNotConfigured", e1.Text("errorCode"));
        Assert.Contains("192.0.2.99:/nowhere", e1.Text("message"), StringComparison.Ordinal);

        var emptyVolume = new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = Guid.Empty, SizeBytes = 1024 * 1024 };
        var e2 = await bed.RunAsync(emptyVolume);
        Assert.Equal("InvalidRequest", e2.Text("errorCode"));
        Assert.Contains("volumeId", e2.Text("message"), StringComparison.Ordinal);

        var emptySnapshot = new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = vol, SnapshotId = Guid.Empty };
        var e3 = await bed.RunAsync(emptySnapshot);
        Assert.Equal("InvalidRequest", e3.Text("errorCode"));

        var zeroSize = new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = vol, SizeBytes = 0 };
        var e4 = await bed.RunAsync(zeroSize);
        Assert.Equal("InvalidRequest", e4.Text("errorCode"));

        var attached = new DeleteSnapshot { CommandId = Guid.NewGuid(), VolumeId = vol, SnapshotId = Guid.NewGuid(), Attached = true };
        var e5 = await bed.RunAsync(attached);
        Assert.Equal("VolumeAttached", e5.Text("errorCode"));

        foreach (var e in new[] { e1, e2, e3, e4, e5 })
        {
            Assert.Equal(EventIds.TerminalEventId(e.CommandId), e.MessageId);
            Assert.False(string.IsNullOrWhiteSpace(e.Text("message")));
        }
        Assert.Empty(Directory.EnumerateFiles(bed.Share, "volume-*"));
        // The engine refuses the attached volume's command, so it passes through the inbox; then nothing may remain.
        await Tools.WaitForEmptyInboxAsync(bed.Share);
        var added = Tools.Tree(bed.Share).Except(before).Where(p => !p.StartsWith(".nfsvolumeworker", StringComparison.Ordinal)
            || p.EndsWith(".cmd", StringComparison.Ordinal) || p.Contains("journal", StringComparison.Ordinal)).ToList();
        Assert.True(added.Count == 0, "touched: " + string.Join(", ", added));
    }
}
