using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Messaging;
using NfsVolumeWorker.Storage.Diagnostics;
using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Inbox;
using NfsVolumeWorker.Storage.Locking;
using NfsVolumeWorker.Storage.Shares;
using NfsVolumeWorker.Testing;
using NfsVolumeWorker.Tests.Support;
using RabbitMQ.Client;

namespace NfsVolumeWorker.Tests;

/// <summary>The inline fast path (Worker:InlineShortCommands): a CreateSnapshot of a volume with nothing waiting or
/// running runs in the partition consumer without an inbox entry, and its message is acknowledged after the event;
/// anything else, or a volume with work queued, goes through the inbox in order.</summary>
public sealed class InlineCommandTests(ITestOutputHelper output)
{
    private const long MiB = WorkerTestBed.MiB;
    private const int AcceptedLog = 3001;
    private const int DuplicateLog = 3002;
    private const int UnreadableOutcomeLog = 3016;
    private const int RepublishedLog = 3017;
    private const int RunningInlineLog = 3040;
    private const int InlineDeferredLog = 3041;

    [Fact]
    public async Task A_CreateSnapshot_of_an_idle_volume_runs_inline_with_no_inbox_entry_and_two_syncs_fewer_than_through_the_inbox()
    {
        var inline = await SnapshotOfAnIdleVolumeAsync(inlineShortCommands: true);
        var queued = await SnapshotOfAnIdleVolumeAsync(inlineShortCommands: false);

        // The watcher sees the queued path's entry: its silence on the inline path means something.
        Assert.NotEmpty(queued.InboxFiles);
        Assert.Empty(inline.InboxFiles);
        Assert.Equal((2, 0), (inline.RunInline, inline.Accepted)); // the CreateVolume (sparse) ran inline too
        Assert.Equal((0, 2), (queued.RunInline, queued.Accepted));
        // The append's temp file and its directory: the same engine steps and the same one-sync outcome record on both.
        output.WriteLine($"syncs of one CreateSnapshot: inline {inline.Syncs}, through the inbox {queued.Syncs}");
        Assert.Equal(2, queued.Syncs - inline.Syncs);
    }

    [Fact]
    public async Task A_snapshot_create_and_delete_make_no_new_file_but_the_ones_they_need()
    {
        await using var bed = await WorkerTestBed.StartAsync(output, "new-files");
        var share = new Share(bed.Share, bed.Share, null);
        var vol = Guid.NewGuid();
        await bed.RunOkAsync(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = vol, SizeBytes = 4 * MiB }, nameof(VolumeCreated));
        await Tools.WaitForEmptyInboxAsync(bed.Share);

        var created = new ConcurrentQueue<string>();
        using var watcher = new FileSystemWatcher(bed.Share) { IncludeSubdirectories = true, NotifyFilter = NotifyFilters.FileName | NotifyFilters.DirectoryName };
        watcher.Created += (_, e) => created.Enqueue(e.Name ?? "");
        watcher.EnableRaisingEvents = true;

        async Task<(List<string> Created, long Syncs)> RunAsync<T>(T command, string expected) where T : VolumeCommand
        {
            created.Clear();
            using var counter = new SyncCounter();
            await bed.RunOkAsync(command, expected);
            await WaitMarkedPublishedAsync(share, command.CommandId);
            await Tools.WaitForEmptyInboxAsync(bed.Share);
            var syncs = counter.Total;
            // inotify reports in order: once this file is seen, every earlier create was too.
            var sentinel = Path.Combine(bed.Share, "test-sentinel");
            await File.WriteAllTextAsync(sentinel, "");
            await Eventually.WaitAsync(() => created.Contains("test-sentinel"), c => c, TimeSpan.FromSeconds(10));
            File.Delete(sentinel);
            var names = created.Where(n => n != "test-sentinel")
                .Select(n => n.Replace(vol.ToString(), "<vol>", StringComparison.Ordinal).Replace(command.CommandId.ToString("N"), "<cmd>", StringComparison.Ordinal))
                .Select(n => System.Text.RegularExpressions.Regex.Replace(n, "tmp-[0-9a-f]{32}", "tmp-<t>"))
                .ToList();
            output.WriteLine($"{command.GetType().Name}: {syncs} syncs, new files: {string.Join(", ", names)}");
            return (names, syncs);
        }

        var snapshotId = Guid.NewGuid();
        var create = await RunAsync(new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = vol, SnapshotId = snapshotId }, nameof(SnapshotCreated));
        var delete = await RunAsync(new DeleteSnapshot { CommandId = Guid.NewGuid(), VolumeId = vol, SnapshotId = snapshotId }, nameof(SnapshotDeleted));

        // The overlay (a create), the .info's temp file (Cinder reads the .info: it is replaced atomically) and the
        // outcome record: no published mark file, no running marker file (5 and 4 new files each before).
        Assert.Equal([$"volume-<vol>.{snapshotId}", ".volume-<vol>.info.tmp-write", ".nfsvolumeworker/outcomes/<cmd>.json"], create.Created);
        Assert.Equal([".volume-<vol>.info.tmp-write", ".nfsvolumeworker/outcomes/<cmd>.json"], delete.Created);
        Assert.Equal((4, 4), (create.Syncs, delete.Syncs)); // unchanged: the marks were never synced
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(bed.Share, ".nfsvolumeworker", "locks"), "*.running"));
        Assert.Equal("", RunningMarker.Read(share, vol));
        Assert.Equal("", await Tools.CheckShareAsync(bed.Share));
    }

    private sealed record SnapshotRun(long Syncs, IReadOnlyList<string> InboxFiles, int RunInline, int Accepted);

    /// <summary>A volume, and a CreateSnapshot of it run inline to its event and its published mark.</summary>
    private static async Task<(Share Share, Guid Volume, CreateSnapshot Snap, ReceivedEvent First)> InlineSnapshotPublishedAsync(WorkerTestBed bed)
    {
        var share = new Share(bed.Share, bed.Share, null);
        var vol = Guid.NewGuid();
        await bed.RunOkAsync(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = vol, SizeBytes = 4 * MiB }, nameof(VolumeCreated));
        var snap = new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = vol, SnapshotId = Guid.NewGuid() };
        var first = await bed.RunOkAsync(snap, nameof(SnapshotCreated));
        await WaitMarkedPublishedAsync(share, snap.CommandId);
        return (share, vol, snap, first);
    }

    /// <summary>The runner marks the record published after the event's confirm, which the event itself may beat.</summary>
    private static async Task WaitMarkedPublishedAsync(Share share, Guid commandId) =>
        Assert.True(await Eventually.WaitAsync(() => CommandOutcomes.IsMarkedPublished(share, commandId), m => m, TimeSpan.FromSeconds(10)),
            $"command {commandId}'s outcome record was not marked published");

    private async Task<SnapshotRun> SnapshotOfAnIdleVolumeAsync(bool inlineShortCommands)
    {
        await using var bed = await WorkerTestBed.StartAsync(output, inlineShortCommands ? "inline" : "queued",
            new Dictionary<string, string?> { ["Worker:InlineShortCommands"] = inlineShortCommands ? "true" : "false" });
        var share = new Share(bed.Share, bed.Share, null);
        var vol = Guid.NewGuid();
        await bed.RunOkAsync(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = vol, SizeBytes = 4 * MiB }, nameof(VolumeCreated));
        await Tools.WaitForEmptyInboxAsync(bed.Share);

        var inbox = Path.Combine(bed.Share, ".nfsvolumeworker", "inbox");
        var seen = new ConcurrentQueue<string>();
        using var watcher = new FileSystemWatcher(inbox) { IncludeSubdirectories = true, NotifyFilter = NotifyFilters.FileName | NotifyFilters.DirectoryName };
        watcher.Created += (_, e) => seen.Enqueue(e.Name ?? "");
        watcher.Renamed += (_, e) => seen.Enqueue(e.Name ?? "");
        watcher.EnableRaisingEvents = true;

        var snap = new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = vol, SnapshotId = Guid.NewGuid() };
        long syncs;
        using (var counter = new SyncCounter())
        {
            var e = await bed.RunOkAsync(snap, nameof(SnapshotCreated));
            Assert.False(e.AlreadyDone);
            // The runner's last step (no sync), and the queued path's entry removal (no sync) after it.
            await WaitMarkedPublishedAsync(share, snap.CommandId);
            await Tools.WaitForEmptyInboxAsync(bed.Share);
            syncs = counter.Total;
        }

        // inotify reports in order: once this file is seen, every earlier create and rename under the inbox was too.
        var sentinel = Path.Combine(inbox, "test-sentinel");
        await File.WriteAllTextAsync(sentinel, "");
        await Eventually.WaitAsync(() => seen.Contains("test-sentinel"), s => s, TimeSpan.FromSeconds(10));
        File.Delete(sentinel);
        Assert.Contains("test-sentinel", seen);

        Assert.Equal("", await Tools.CheckShareAsync(bed.Share));
        Assert.NotNull(OutcomeRecord.TryFromBytes(CommandOutcomes.Read(share, snap.CommandId)!));
        return new SnapshotRun(syncs, seen.Where(n => n.Contains(".cmd", StringComparison.Ordinal)).ToList(),
            bed.Worker.Logs.Count(RunningInlineLog), bed.Worker.Logs.Count(AcceptedLog));
    }

    [Fact]
    public async Task A_CreateSnapshot_behind_a_queued_clone_of_its_volume_goes_through_the_inbox_and_waits_while_the_next_one_runs_inline()
    {
        await using var bed = await WorkerTestBed.StartAsync(output, "inline-order", SlowCopy.Settings(32L << 20));
        var vol = Guid.NewGuid();
        await bed.RunOkAsync(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = vol, SizeBytes = 256 * MiB }, nameof(VolumeCreated));
        await Tools.WriteAsync(bed.PathOf($"volume-{vol}"), "raw", 0x5a, 0, 96 * MiB);

        var clone = new CloneVolume { CommandId = Guid.NewGuid(), VolumeId = vol, NewVolumeId = Guid.NewGuid() };
        await bed.Producer.PublishAsync(clone);
        var first = new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = vol, SnapshotId = Guid.NewGuid() };
        await bed.Producer.PublishAsync(first);
        await bed.Events.WaitForAllAsync([clone.CommandId, first.CommandId], TimeSpan.FromSeconds(120));
        var second = new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = vol, SnapshotId = Guid.NewGuid() };
        await bed.RunOkAsync(second, nameof(SnapshotCreated));

        Assert.Equal(0, bed.Events.AssertOneTerminalEventEach([clone.CommandId, first.CommandId, second.CommandId]));
        Assert.Equal(nameof(VolumeCloned), bed.Events.TerminalOf(clone.CommandId)[0].Type);
        Assert.Equal(nameof(SnapshotCreated), bed.Events.TerminalOf(first.CommandId)[0].Type);
        // In the order sent: the snapshot waited behind the clone (the drain loop held the volume) ...
        Assert.True(bed.Events.TerminalOf(clone.CommandId)[0].Order < bed.Events.TerminalOf(first.CommandId)[0].Order);
        Assert.True(bed.Events.TerminalOf(first.CommandId)[0].Order < bed.Events.TerminalOf(second.CommandId)[0].Order);
        // ... because it went through the inbox; the next one, its volume idle again, ran inline.
        Assert.Equal(1, LogsOf(bed, AcceptedLog, first.CommandId));
        Assert.Equal(0, LogsOf(bed, RunningInlineLog, first.CommandId));
        Assert.Equal(1, LogsOf(bed, RunningInlineLog, second.CommandId));
        Assert.Equal(0, LogsOf(bed, AcceptedLog, second.CommandId));
        // The clone is the volume before either snapshot, and the chain holds both.
        Assert.Equal(0, await Tools.CompareAsync(bed.PathOf($"volume-{clone.NewVolumeId}"), "raw", bed.PathOf($"volume-{vol}"), "raw"));
        var info = File.ReadAllText(bed.PathOf($"volume-{vol}.info"));
        Assert.Contains(first.SnapshotId.ToString(), info, StringComparison.Ordinal);
        Assert.Contains(second.SnapshotId.ToString(), info, StringComparison.Ordinal);
        Assert.Equal("", await Tools.CheckShareAsync(bed.Share));
    }

    [Fact]
    public async Task A_CreateSnapshot_runs_inline_while_long_operations_hold_every_MaxParallelVolumes_slot()
    {
        var settings = SlowCopy.Settings(32L << 20);
        settings["Worker:MaxParallelVolumes"] = "1";
        await using var bed = await WorkerTestBed.StartAsync(output, "inline-no-slot", settings);
        var busy = Guid.NewGuid();
        var idle = Guid.NewGuid();
        await bed.RunOkAsync(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = busy, SizeBytes = 256 * MiB }, nameof(VolumeCreated));
        await bed.RunOkAsync(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = idle, SizeBytes = 4 * MiB }, nameof(VolumeCreated));
        await Tools.WriteAsync(bed.PathOf($"volume-{busy}"), "raw", 0x5a, 0, 96 * MiB);

        // The clone (seconds at 32 MiB/s) holds the only slot: its drain loop runs it.
        var clone = new CloneVolume { CommandId = Guid.NewGuid(), VolumeId = busy, NewVolumeId = Guid.NewGuid() };
        await bed.Producer.PublishAsync(clone);
        await Eventually.WaitAsync(() => Task.FromResult(bed.Events.Progress.Any(e => e.CommandId == clone.CommandId)), p => p, TimeSpan.FromSeconds(60));
        var snap = new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = idle, SnapshotId = Guid.NewGuid() };
        await bed.RunOkAsync(snap, nameof(SnapshotCreated));
        await bed.Events.WaitForAsync(clone.CommandId, TimeSpan.FromSeconds(120));

        // Short work of another volume does not wait for the slots of long work: it ran inline, before the clone ended.
        Assert.Equal(1, LogsOf(bed, RunningInlineLog, snap.CommandId));
        Assert.Equal(0, LogsOf(bed, AcceptedLog, snap.CommandId));
        Assert.True(bed.Events.TerminalOf(snap.CommandId)[0].Order < bed.Events.TerminalOf(clone.CommandId)[0].Order, "the snapshot waited for the clone");
        Assert.Equal("", await Tools.CheckShareAsync(bed.Share));
    }

    [Fact]
    public async Task A_DeleteSnapshot_runs_inline_only_when_it_moves_no_data_and_otherwise_goes_through_the_inbox_untouched_by_the_attempt()
    {
        await using var bed = await WorkerTestBed.StartAsync(output, "inline-delete");
        var vol = Guid.NewGuid();
        await bed.RunOkAsync(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = vol, SizeBytes = 4 * MiB }, nameof(VolumeCreated));
        await Tools.WriteAsync(bed.PathOf($"volume-{vol}"), "raw", 0x11, 0, 1 * MiB);

        // The newest snapshot, nothing written since: a metadata-only edit, inline.
        var empty = Guid.NewGuid();
        await bed.RunOkAsync(new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = vol, SnapshotId = empty }, nameof(SnapshotCreated));
        var quick = new DeleteSnapshot { CommandId = Guid.NewGuid(), VolumeId = vol, SnapshotId = empty };
        await bed.RunOkAsync(quick, nameof(SnapshotDeleted));
        Assert.Equal((1, 0), (LogsOf(bed, RunningInlineLog, quick.CommandId), LogsOf(bed, AcceptedLog, quick.CommandId)));
        Assert.False(File.Exists(bed.PathOf($"volume-{vol}.{empty}")));

        // Written to after the snapshot: the delete commits data, so the inline attempt does not start it (nothing
        // is written, no journal entry) and it is queued; the drain loop runs it.
        var full = Guid.NewGuid();
        await bed.RunOkAsync(new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = vol, SnapshotId = full }, nameof(SnapshotCreated));
        await Tools.WriteAsync(bed.PathOf($"volume-{vol}.{full}"), "qcow2", 0x22, 2 * MiB, 1 * MiB);
        // What the volume must read after the commit, made before the delete from the base (untouched since the write
        // of 0x11) plus the write the overlay holds.
        await using var expected = new TempDirectoryHandle();
        var reference = Path.Combine(expected.Path, "expected.raw");
        File.Copy(bed.PathOf($"volume-{vol}"), reference);
        await Tools.WriteAsync(reference, "raw", 0x22, 2 * MiB, 1 * MiB);
        Assert.NotEqual(0, await Tools.CompareAsync(bed.PathOf($"volume-{vol}"), "raw", reference, "raw"));

        var slow = new DeleteSnapshot { CommandId = Guid.NewGuid(), VolumeId = vol, SnapshotId = full };
        var deleted = await bed.RunOkAsync(slow, nameof(SnapshotDeleted));
        Assert.False(deleted.AlreadyDone);
        Assert.Equal((1, 1), (LogsOf(bed, RunningInlineLog, slow.CommandId), LogsOf(bed, AcceptedLog, slow.CommandId)));
        Assert.Single(bed.Events.TerminalOf(slow.CommandId));
        Assert.False(File.Exists(bed.PathOf($"volume-{vol}.{full}")));
        Assert.Equal(0, await Tools.CompareAsync(bed.PathOf($"volume-{vol}"), "raw", reference, "raw"));
        await Tools.WaitForEmptyInboxAsync(bed.Share);
        Assert.Equal("", await Tools.CheckShareAsync(bed.Share));
    }

    [Fact]
    public async Task A_CreateSnapshot_whose_volume_another_operation_holds_does_not_wait_inline_but_queues_and_runs_once_the_lock_is_free()
    {
        await using var bed = await WorkerTestBed.StartAsync(output, "inline-busy");
        var share = bed.Worker.Services.GetRequiredService<ShareMap>().All.Single();
        var vol = Guid.NewGuid();
        await bed.RunOkAsync(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = vol, SizeBytes = 4 * MiB }, nameof(VolumeCreated));
        var snap = new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = vol, SnapshotId = Guid.NewGuid() };
        var other = new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = Ids.InPartition(PartitionKey.PartitionOf(vol, WorkerSettings.Partitions), 1).First(), SizeBytes = 4 * MiB };

        // Another operation (nfsvol, the oslo adapter's lease holder, a format-1 drainer) holds the volume's lock.
        using (await VolumeLock.AcquireAsync(share, vol, TimeSpan.FromSeconds(5), CancellationToken.None))
        {
            await bed.Producer.PublishAsync(snap);
            var queued = await Eventually.WaitAsync(() => Tools.InboxEntries(bed.Share).Count, n => n == 1, TimeSpan.FromSeconds(30));
            Assert.Equal(1, queued);
            Assert.Equal(1, LogsOf(bed, InlineDeferredLog, snap.CommandId));
            Assert.Equal(1, LogsOf(bed, AcceptedLog, snap.CommandId));
            Assert.Empty(bed.Events.TerminalOf(snap.CommandId));
            // The partition was not held meanwhile: a command of another volume runs.
            await bed.RunOkAsync(other, nameof(VolumeCreated));
        }

        var done = await bed.Events.WaitForAsync(snap.CommandId, TimeSpan.FromSeconds(60));
        Assert.Equal(nameof(SnapshotCreated), done.Type);
        Assert.False(done.AlreadyDone);
        Assert.Single(bed.Events.TerminalOf(snap.CommandId));
        await Tools.WaitForEmptyInboxAsync(bed.Share);
        Assert.Empty(Tools.InboxEntries(bed.Share));
        Assert.Equal("", await Tools.CheckShareAsync(bed.Share));
    }

    [Fact]
    public async Task An_inline_command_redelivered_after_its_event_went_out_is_answered_from_its_outcome_record_and_runs_nothing()
    {
        await using var bed = await WorkerTestBed.StartAsync(output, "inline-redeliver");
        var (share, vol, snap, first) = await InlineSnapshotPublishedAsync(bed);
        Assert.Equal(1, LogsOf(bed, RunningInlineLog, snap.CommandId));
        await Tools.WaitForEmptyInboxAsync(bed.Share);
        var files = VolumeFiles(bed);
        var info = File.ReadAllText(bed.PathOf($"volume-{vol}.info"));

        // What a crash after the event was confirmed but before the ack brings: the same message, redelivered.
        await SendToPartitionAsync(bed, snap, redelivered: true);
        await Eventually.WaitAsync(() => bed.Worker.Logs.Count(DuplicateLog), n => n >= 1, TimeSpan.FromSeconds(30));
        Assert.Equal(1, bed.Worker.Logs.Count(DuplicateLog)); // logged after deciding to publish nothing
        Assert.Single(bed.Events.TerminalOf(snap.CommandId));

        // A producer sending it again gets the very same event again, and still nothing runs.
        await bed.Producer.PublishAsync(snap);
        var again = await Eventually.WaitAsync(() => bed.Events.TerminalOf(snap.CommandId), l => l.Count >= 2, TimeSpan.FromSeconds(30));
        Assert.Equal(2, again.Count);
        Assert.Equal((first.MessageId, first.MessageJson), (again[1].MessageId, again[1].MessageJson));
        Assert.Equal(1, bed.Worker.Logs.Count(RepublishedLog));
        Assert.Equal(1, LogsOf(bed, RunningInlineLog, snap.CommandId));
        Assert.Empty(Tools.InboxEntries(bed.Share));
        Assert.Equal(files, VolumeFiles(bed));
        Assert.Equal(info, File.ReadAllText(bed.PathOf($"volume-{vol}.info")));
    }

    [Fact]
    public async Task A_redelivered_command_whose_record_an_older_worker_marked_with_a_published_file_publishes_nothing_and_one_without_a_mark_is_republished()
    {
        await using var bed = await WorkerTestBed.StartAsync(output, "inline-older-mark");
        var (share, vol, snap, first) = await InlineSnapshotPublishedAsync(bed);

        // What a worker before the mode-bit mark leaves: the record without the bit, an empty <id>.published beside it.
        var record = CommandOutcomes.PathOf(share, snap.CommandId);
        File.SetUnixFileMode(record, File.GetUnixFileMode(record) & ~UnixFileMode.StickyBit);
        var olderMark = CommandOutcomes.PublishedMarkOf(share, snap.CommandId);
        File.WriteAllBytes(olderMark, []);

        await SendToPartitionAsync(bed, snap, redelivered: true);
        await Eventually.WaitAsync(() => bed.Worker.Logs.Count(DuplicateLog), n => n >= 1, TimeSpan.FromSeconds(30));
        Assert.Equal(1, bed.Worker.Logs.Count(DuplicateLog));
        Assert.Single(bed.Events.TerminalOf(snap.CommandId));

        // Without that file the same redelivery finds no mark: the event goes out again, and the record is marked.
        File.Delete(olderMark);
        await SendToPartitionAsync(bed, snap, redelivered: true);
        var events = await Eventually.WaitAsync(() => bed.Events.TerminalOf(snap.CommandId), l => l.Count >= 2, TimeSpan.FromSeconds(30));
        Assert.Equal(2, events.Count);
        Assert.Equal((first.MessageId, first.MessageJson), (events[1].MessageId, events[1].MessageJson));
        Assert.True(await Eventually.WaitAsync(() => File.GetUnixFileMode(record).HasFlag(UnixFileMode.StickyBit), m => m, TimeSpan.FromSeconds(10)));
        Assert.False(File.Exists(olderMark));
        Assert.Equal(1, LogsOf(bed, RunningInlineLog, snap.CommandId));
    }

    [Fact]
    public async Task An_outcome_record_torn_by_a_crash_counts_as_absent_the_redelivered_command_runs_again_to_AlreadyDone_and_the_record_is_replaced()
    {
        await using var bed = await WorkerTestBed.StartAsync(output, "inline-torn");
        var (share, vol, snap, first) = await InlineSnapshotPublishedAsync(bed);
        var files = VolumeFiles(bed);
        var info = File.ReadAllText(bed.PathOf($"volume-{vol}.info"));

        // What a crash before the record's fsync returned leaves: the record cut short, no event, no ack.
        var record = CommandOutcomes.PathOf(share, snap.CommandId);
        var whole = File.ReadAllBytes(record);
        File.WriteAllBytes(record, whole[..(whole.Length / 2)]);
        File.SetUnixFileMode(record, File.GetUnixFileMode(record) & ~UnixFileMode.StickyBit); // no mark: its event never went out
        Assert.Null(OutcomeRecord.TryFromBytes(File.ReadAllBytes(record)));

        await SendToPartitionAsync(bed, snap, redelivered: true);
        var events = await Eventually.WaitAsync(() => bed.Events.TerminalOf(snap.CommandId), l => l.Count >= 2, TimeSpan.FromSeconds(30));

        Assert.Equal(2, events.Count);
        Assert.Equal(nameof(SnapshotCreated), events[1].Type);
        Assert.True(events[1].AlreadyDone); // the engine found the snapshot made: success, the same kind of event
        Assert.Equal(first.MessageId, events[1].MessageId);
        Assert.Equal(1, bed.Worker.Logs.Count(UnreadableOutcomeLog));
        Assert.Equal(2, LogsOf(bed, RunningInlineLog, snap.CommandId));
        var replaced = OutcomeRecord.TryFromBytes(File.ReadAllBytes(record));
        Assert.NotNull(replaced);
        Assert.True(((SnapshotCreated)replaced.ToEvent()).AlreadyDone);
        await WaitMarkedPublishedAsync(share, snap.CommandId);
        Assert.Empty(Directory.EnumerateFiles(Path.GetDirectoryName(record)!, "*.unreadable"));
        Assert.Empty(Directory.EnumerateFiles(Path.GetDirectoryName(record)!, ".*tmp-*")); // the slow path's temp file went
        Assert.Equal(files, VolumeFiles(bed));
        Assert.Equal(info, File.ReadAllText(bed.PathOf($"volume-{vol}.info")));
        Assert.Equal("", await Tools.CheckShareAsync(bed.Share));
    }

    [Fact]
    public async Task A_stop_during_an_inline_run_lets_it_finish_and_acks_its_message_before_the_partition_is_released()
    {
        var broker = await RabbitMqBroker.SharedAsync();
        using var root = new TempDirectory();
        var shareDirectory = Path.Combine(root.Path, "share");
        Directory.CreateDirectory(shareDirectory);
        await using var vhost = await broker.CreateVirtualHostAsync("inline-stop");
        await using var events = await EventCollector.StartAsync(vhost.AmqpUri);
        await using var producer = await CommandBus.StartAsync(vhost.AmqpUri);
        var vol = Guid.NewGuid();
        using var gate = new StepGate(OperationSteps.CreateSnapshotOverlayCreated, vol); // a step both overlay writers pass
        var worker = await InProcessWorker.StartAsync(vhost.AmqpUri, shareDirectory, output, services: s => s.AddSingleton<IStepObserver>(gate));
        await using var stopOnFailure = new StopOnFailure(worker);
        var create = new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = vol, SizeBytes = 4 * MiB };
        await producer.PublishAsync(create);
        await events.WaitForAsync(create.CommandId);
        var snap = new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = vol, SnapshotId = Guid.NewGuid() };
        await producer.PublishAsync(snap);
        Assert.True(await gate.Reached.WaitAsync(TimeSpan.FromSeconds(30)), "the inline run never reached the overlay's creation");

        // SIGTERM's path: the host stops; its first step releases the partitions, each waiting for its delivery. The
        // idle ones go at once; this volume's stays while the inline run goes on.
        var queue = PartitionKey.QueueName(PartitionKey.PartitionOf(vol, WorkerSettings.Partitions));
        var stop = worker.DisposeAsync().AsTask();
        static List<string> Held(IReadOnlyList<ConsumerInfo> all) =>
            all.Where(c => c.Queue.StartsWith("nfsvol.partition", StringComparison.Ordinal) || c.Queue == Messaging.Topology.IngressQueue).Select(c => c.Queue).ToList();
        var held = Held(await Eventually.WaitAsync(() => vhost.ListConsumersAsync(), c => Held(c).SequenceEqual([queue]), TimeSpan.FromSeconds(30), pollMs: 250));
        Assert.Equal([queue], held);
        Assert.False(stop.IsCompleted);
        Assert.Equal(1, LogsOf(worker, RunningInlineLog, snap.CommandId));
        Assert.Empty(events.TerminalOf(snap.CommandId));
        gate.Open();
        await stop.WaitAsync(TimeSpan.FromSeconds(60));
        stopOnFailure.Stopped = true;

        var done = Assert.Single(events.TerminalOf(snap.CommandId));
        Assert.Equal(nameof(SnapshotCreated), done.Type);
        Assert.False(done.AlreadyDone);
        // Acked before its channel closed: nothing went back to the queue for the next owner to run again.
        await using var connection = await vhost.ConnectAsync("test-inspector");
        await using var channel = await connection.CreateChannelAsync();
        Assert.Equal(0u, (await channel.QueueDeclarePassiveAsync(queue)).MessageCount);
        Assert.Empty(Tools.InboxEntries(shareDirectory));
        Assert.Equal("", await Tools.CheckShareAsync(shareDirectory));
    }

    /// <summary>Stops the worker when the test ends before it did (a failed assertion), so it does not outlive its vhost.</summary>
    private sealed class StopOnFailure(InProcessWorker worker) : IAsyncDisposable
    {
        public bool Stopped { get; set; }

        public async ValueTask DisposeAsync()
        {
            if (!Stopped)
            {
                await worker.DisposeAsync();
            }
        }
    }

    /// <summary>Holds the engine right after one step of one volume until opened.</summary>
    private sealed class StepGate(string step, Guid volumeId) : IStepObserver, IDisposable
    {
        private readonly ManualResetEventSlim _open = new();
        private readonly TaskCompletionSource _reached = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Task<bool> Reached => _reached.Task.ContinueWith(t => t.IsCompletedSuccessfully, TaskScheduler.Default);

        public void OnStep(string stepName, Guid volume)
        {
            if (stepName == step && volume == volumeId)
            {
                _reached.TrySetResult();
                _open.Wait(TimeSpan.FromSeconds(60));
            }
        }

        public void Open() => _open.Set();

        public void Dispose()
        {
            _open.Set();
            _open.Dispose();
        }
    }

    /// <summary>The command straight into its partition queue, as the router forwards it; <paramref name="redelivered"/>
    /// marks it as the router marks a message the broker gave it again.</summary>
    private static Task SendToPartitionAsync(WorkerTestBed bed, VolumeCommand command, bool redelivered)
    {
        var queue = PartitionKey.QueueName(PartitionKey.PartitionOf(command.VolumeId, WorkerSettings.Partitions));
        var json = JsonSerializer.Serialize(command, command.GetType(), InboxRecord.Json);
        var headers = redelivered ? new Dictionary<string, object?> { [Topology.RedeliveredHeader] = true } : null;
        return RawSend.ToQueueAsync(bed.VirtualHost.AmqpUri, queue, RawSend.Envelope(json, command.GetType().Name), headers: headers);
    }

    private static int LogsOf(WorkerTestBed bed, int eventId, Guid commandId) => LogsOf(bed.Worker, eventId, commandId);

    private static int LogsOf(InProcessWorker worker, int eventId, Guid commandId) =>
        worker.Logs.Entries.Count(e => e.Id.Id == eventId && e.Message.Contains(commandId.ToString(), StringComparison.Ordinal));

    private static List<string> VolumeFiles(WorkerTestBed bed) =>
        Tools.Tree(bed.Share).Where(p => !p.StartsWith(".nfsvolumeworker", StringComparison.Ordinal)).ToList();

    /// <summary>Counts the worker's fsyncs (nfsvolumeworker.storage.syncs) while it lives: the tests of this project
    /// run one at a time, and the worker runs in this process.</summary>
    private sealed class SyncCounter : IDisposable
    {
        private readonly MeterListener _listener = new();
        private long _total;

        public SyncCounter()
        {
            _listener.InstrumentPublished = (i, l) =>
            {
                if (i.Meter.Name == StorageTelemetry.SourceName && i.Name == "nfsvolumeworker.storage.syncs")
                {
                    l.EnableMeasurementEvents(i);
                }
            };
            _listener.SetMeasurementEventCallback<long>((_, value, _, _) => Interlocked.Add(ref _total, value));
            _listener.Start();
        }

        public long Total => Interlocked.Read(ref _total);

        public void Dispose() => _listener.Dispose();
    }
}
