using System.Text.Json;
using System.Text.Json.Nodes;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Storage.Inbox;
using NfsVolumeWorker.Storage.Shares;
using NfsVolumeWorker.Tests.Support;

namespace NfsVolumeWorker.Tests;

/// <summary>A command that arrives again (redelivery, or a producer sending it again) never runs twice. A
/// producer that sends a finished command again gets its recorded terminal event again (same message id, same
/// content), so one that missed the event is answered; a broker redelivery of a command whose event went out
/// publishes nothing.</summary>
public sealed class IdempotencyTests(ITestOutputHelper output)
{
    private const long MiB = WorkerTestBed.MiB;
    private const int AcceptedLog = 3001;
    private const int DuplicateLog = 3002;
    private const int RepublishedLog = 3017;

    [Fact]
    public async Task A_command_sent_again_after_it_finished_does_not_run_again_and_gets_its_recorded_event_again()
    {
        await using var bed = await WorkerTestBed.StartAsync(output, "again");
        var vol = Guid.NewGuid();
        await bed.RunOkAsync(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = vol, SizeBytes = 4 * MiB }, nameof(VolumeCreated));
        var snap = new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = vol, SnapshotId = Guid.NewGuid() };
        var first = await bed.RunOkAsync(snap, nameof(SnapshotCreated));
        var shrink = new ExtendVolume { CommandId = Guid.NewGuid(), VolumeId = vol, NewSizeBytes = MiB };
        var refused = await bed.RunAsync(shrink);
        Assert.Equal("ShrinkNotAllowed", refused.Text("errorCode"));
        var files = Tools.Tree(bed.Share).Where(p => !p.StartsWith(".nfsvolumeworker", StringComparison.Ordinal)).ToList();
        var infoBefore = File.ReadAllText(bed.PathOf($"volume-{vol}.info"));

        await bed.Producer.PublishAsync(snap);
        await bed.Producer.PublishAsync(snap);
        await bed.Producer.PublishAsync(shrink);
        var again = await Eventually.WaitAsync(() => bed.Events.TerminalOf(snap.CommandId), l => l.Count >= 3, TimeSpan.FromSeconds(20));
        var refusedAgain = await Eventually.WaitAsync(() => bed.Events.TerminalOf(shrink.CommandId), l => l.Count >= 2, TimeSpan.FromSeconds(20));

        // The very same event each time, successes and failures alike: subscribers drop repeats by message id.
        Assert.Equal(3, again.Count);
        Assert.All(again, e => Assert.Equal((first.MessageId, first.MessageJson), (e.MessageId, e.MessageJson)));
        Assert.Equal(2, refusedAgain.Count);
        Assert.All(refusedAgain, e => Assert.Equal((refused.MessageId, refused.MessageJson), (e.MessageId, e.MessageJson)));
        Assert.Equal(3, bed.Worker.Logs.Count(RepublishedLog));
        // Into the inbox only the first time: the extend (the create and the snapshot ran inline, 3040 once each).
        Assert.Equal(1, bed.Worker.Logs.Count(AcceptedLog));
        Assert.Equal(2, bed.Worker.Logs.Count(3040));
        Assert.Equal(files, Tools.Tree(bed.Share).Where(p => !p.StartsWith(".nfsvolumeworker", StringComparison.Ordinal)).ToList());
        Assert.Equal(infoBefore, File.ReadAllText(bed.PathOf($"volume-{vol}.info")));
    }

    [Fact]
    public async Task A_command_redelivered_after_a_crash_between_publishing_and_recording_republishes_the_same_event_and_runs_nothing()
    {
        await using var bed = await WorkerTestBed.StartAsync(output, "redeliver");
        var vol = Guid.NewGuid();
        await bed.RunOkAsync(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = vol, SizeBytes = 4 * MiB }, nameof(VolumeCreated));
        var snap = new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = vol, SnapshotId = Guid.NewGuid() };
        var first = await bed.RunOkAsync(snap, nameof(SnapshotCreated));

        // What a crash after the broker confirmed the event, but before the outcome was marked published
        // (and before the message was acked), leaves on the share: the record without its published mark (the sticky bit).
        var share = new Share(bed.Share, bed.Share, null);
        // (The worker marks the outcome published just after the broker confirms the event.)
        Assert.True(await Eventually.WaitAsync(() => CommandOutcomes.IsMarkedPublished(share, snap.CommandId), marked => marked, TimeSpan.FromSeconds(10)));
        var record = CommandOutcomes.PathOf(share, snap.CommandId);
        Assert.True(File.GetUnixFileMode(record).HasFlag(UnixFileMode.StickyBit));
        Assert.False(File.Exists(CommandOutcomes.PublishedMarkOf(share, snap.CommandId))); // no file made for the mark
        File.SetUnixFileMode(record, File.GetUnixFileMode(record) & ~UnixFileMode.StickyBit);
        Assert.False(CommandOutcomes.IsMarkedPublished(share, snap.CommandId));
        Assert.False(JsonNode.Parse(CommandOutcomes.Read(share, snap.CommandId)!)!["published"]!.GetValue<bool>()); // format 2 marks apart
        var files = Tools.Tree(bed.Share).Where(p => !p.StartsWith(".nfsvolumeworker", StringComparison.Ordinal)).ToList();

        await bed.Producer.PublishAsync(snap); // the redelivery
        var events = await Eventually.WaitAsync(() => bed.Events.TerminalOf(snap.CommandId), l => l.Count >= 2, TimeSpan.FromSeconds(20));
        Assert.Equal(2, events.Count);
        Assert.Equal(first.MessageId, events[1].MessageId);
        Assert.Equal(first.MessageJson, events[1].MessageJson);
        // The worker marks the outcome published after the broker confirmed the event, so a moment later.
        Assert.True(await Eventually.WaitAsync(() => CommandOutcomes.IsMarkedPublished(share, snap.CommandId), marked => marked, TimeSpan.FromSeconds(10)));

        // Sent once more: the same recorded event once more, and still nothing runs.
        await bed.Producer.PublishAsync(snap);
        await Eventually.WaitAsync(() => bed.Events.TerminalOf(snap.CommandId), l => l.Count >= 3, TimeSpan.FromSeconds(20));
        Assert.Equal(2, bed.Events.AssertOneTerminalEventEach([snap.CommandId]));
        Assert.Equal(files, Tools.Tree(bed.Share).Where(p => !p.StartsWith(".nfsvolumeworker", StringComparison.Ordinal)).ToList());
    }

    [Fact]
    public async Task A_command_sent_twice_while_its_volume_is_busy_is_queued_once_and_runs_once()
    {
        await using var bed = await WorkerTestBed.StartAsync(output, "busy-twice", SlowCopy.Settings(32L << 20));
        var vol = Guid.NewGuid();
        await bed.RunOkAsync(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = vol, SizeBytes = 256 * MiB }, nameof(VolumeCreated));
        await Tools.WriteAsync(bed.PathOf($"volume-{vol}"), "raw", 0x5a, 0, 96 * MiB);

        var clone = new CloneVolume { CommandId = Guid.NewGuid(), VolumeId = vol, NewVolumeId = Guid.NewGuid() };
        await bed.Producer.PublishAsync(clone);
        var snap = new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = vol, SnapshotId = Guid.NewGuid() };
        await bed.Producer.PublishAsync(snap);
        await bed.Producer.PublishAsync(snap);

        await bed.Events.WaitForAllAsync([clone.CommandId, snap.CommandId], TimeSpan.FromSeconds(60));
        await Task.Delay(1000);
        Assert.Equal(0, bed.Events.AssertOneTerminalEventEach([clone.CommandId, snap.CommandId]));
        Assert.Equal(nameof(SnapshotCreated), bed.Events.TerminalOf(snap.CommandId)[0].Type);
        Assert.False(bed.Events.TerminalOf(snap.CommandId)[0].AlreadyDone);
        Assert.Equal(1, bed.Worker.Logs.Count(DuplicateLog));
        // The snapshot ran after the clone (the order they were sent in).
        Assert.True(bed.Events.TerminalOf(clone.CommandId)[0].Order < bed.Events.TerminalOf(snap.CommandId)[0].Order);
        Assert.Equal(0, await Tools.CompareAsync(bed.PathOf($"volume-{clone.NewVolumeId}"), "raw", bed.PathOf($"volume-{vol}"), "raw"));
    }
}

/// <summary>A temp directory as an async-disposable (for await using next to the test bed).</summary>
internal sealed class TempDirectoryHandle : IAsyncDisposable
{
    private readonly TempDirectory _dir = new("nfsvol-worker-tools-");

    public string Path => _dir.Path;

    public ValueTask DisposeAsync()
    {
        _dir.Dispose();
        return ValueTask.CompletedTask;
    }
}
