using Microsoft.Extensions.Options;
using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Qcow2;
using NfsVolumeWorker.Storage.Shares;
using NfsVolumeWorker.Storage.Tests.QemuImg;
using NfsVolumeWorker.Storage.Tests.Support;
using static NfsVolumeWorker.Storage.Engine.OperationSteps;
using static NfsVolumeWorker.Storage.Tests.Engine.CrashAssertions;
using static NfsVolumeWorker.Storage.Tests.Support.EngineTestBed;

namespace NfsVolumeWorker.Storage.Tests.Engine;

/// <summary>
/// A snapshot command costs a few durable writes: create writes the native overlay under its final name (3 syncs), and
/// a delete whose overlay maps no data is only the chain edit (the newest snapshot's: 3 syncs, no journal, no qemu-img
/// commit), leaving exactly the files, .info bytes and data that the commit path leaves.
/// </summary>
public sealed class FewSyncsSpecs : IDisposable
{
    private static readonly Guid Volume = Guid.Parse("4d5e6f70-0000-4000-8000-00000000000d");
    private static readonly Guid First = Guid.Parse("aaaaaaaa-0000-4000-8000-0000000000f1");
    private static readonly Guid Second = Guid.Parse("bbbbbbbb-0000-4000-8000-0000000000f2");

    private readonly List<EngineTestBed> _beds = [];

    public void Dispose()
    {
        foreach (var bed in _beds)
        {
            bed.Dispose();
        }
    }

    private EngineTestBed Bed(MergePlanning planning = MergePlanning.ByCost, bool native = true)
    {
        var bed = new EngineTestBed(new VolumeEngineOptions { LockTimeout = TimeSpan.FromSeconds(30), MergePlanning = planning, NativeOverlayHeaders = native });
        _beds.Add(bed);
        return bed;
    }

    private static long Total(Dictionary<string, long> syncs) => syncs.Values.Sum();

    /// <summary>Volume (raw 64 MiB) with 2 MiB written, then snapshot First; with <paramref name="middle"/>, snapshot Second
    /// right after and 1 MiB written on top (First's overlay is then an empty middle image), else nothing more (First's
    /// overlay is the empty active image).</summary>
    private static async Task SetUpAsync(EngineTestBed bed, bool middle)
    {
        await bed.Engine.CreateVolumeAsync(new CreateVolumeRequest(Export, Volume, 64 * MiB, ImageFormat.Raw));
        bed.GuestWrite(Volume, 0, 2 * MiB, 0x31);
        await bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, Volume, First));
        if (middle)
        {
            await bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, Volume, Second));
            bed.GuestWrite(Volume, 8 * MiB, MiB, 0x42);
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Deleting_a_snapshot_whose_overlay_maps_no_data_leaves_what_the_commit_leaves(bool middle)
    {
        var shortcut = Bed();
        var commit = Bed(MergePlanning.AlwaysCommitDown);
        await SetUpAsync(shortcut, middle);
        await SetUpAsync(commit, middle);
        var now = commit.SaveReference(Volume, "now");
        var steps = new StepRecorder();

        var result = await shortcut.NewEngine(steps).DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, Volume, First));
        var committed = new StepRecorder();
        await commit.NewEngine(committed).DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, Volume, First));

        Assert.Equal(OperationOutcome.Completed, result.Outcome);
        Assert.Contains("no data moved", result.Message, StringComparison.Ordinal);
        Assert.Equal(middle
            ? [DeleteSnapshotJournaled, DeleteSnapshotRebased, DeleteSnapshotInfoWritten, DeleteSnapshotOverlayDeleted]
            : [DeleteSnapshotInfoWritten, DeleteSnapshotOverlayDeleted], steps.Seen);
        Assert.Contains(DeleteSnapshotCommitted, committed.Seen);
        // Same names, same .info bytes, same chains and data (qemu-img compare), nothing left over.
        AssertSameFinalState(commit, shortcut, "the nothing-to-move delete");
        var active = shortcut.Engine.ReadChain(Export, Volume).Active;
        Assert.True(shortcut.SameContents(shortcut.PathOf(active.FileName), active.Format, now));
        Assert.Equal(middle ? VolumeFileNames.Overlay(Volume, Second) : VolumeFileNames.Base(Volume), shortcut.Info(Volume)!.Active);
        Assert.False(File.Exists(shortcut.PathOf(VolumeFileNames.Overlay(Volume, First))));
    }

    [Fact]
    public async Task Deleting_the_newest_snapshot_with_nothing_to_move_costs_three_syncs_and_no_journal()
    {
        var bed = Bed();
        await SetUpAsync(bed, middle: false);

        var (syncs, result) = await SyncCount.OfAsync(() => bed.Engine.DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, Volume, First)));

        Assert.Equal(OperationOutcome.Completed, result.Outcome);
        // The .info write (temp file fsync, directory fsync after the rename), then the directory fsync of the unlink.
        Assert.Equal(new Dictionary<string, long> { ["file"] = 1, ["directory"] = 2 }, syncs);
        Assert.Empty(JournalEntries(bed.Share));
    }

    [Fact]
    public async Task A_delete_that_moves_data_costs_more_syncs_than_one_that_does_not()
    {
        var bed = Bed();
        await SetUpAsync(bed, middle: false);
        bed.GuestWrite(Volume, 4 * MiB, MiB, 0x55);
        _ = Shares.ShareCapabilities.Of(bed.Share); // probed once per share and process (its files are fsynced), not per delete

        var (syncs, _) = await SyncCount.OfAsync(() => bed.Engine.DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, Volume, First)));

        // Journal (2), the commit's fsync (1), the .info (2), the unlink (1), the journal's removal (1).
        Assert.Equal(7, Total(syncs));
    }

    [Theory]
    [InlineData("data", false)]
    [InlineData("empty-middle", true)]
    public async Task A_delete_asked_to_be_metadata_only_that_is_not_is_not_started_and_touches_nothing(string kind, bool middle)
    {
        var bed = Bed();
        await SetUpAsync(bed, middle);
        if (kind == "data")
        {
            bed.GuestWrite(Volume, 4 * MiB, MiB, 0x55);
        }
        _ = Shares.ShareCapabilities.Of(bed.Share); // the merge planner's probe, once per share and process (it fsyncs its own files)
        var listing = bed.Listing();
        var info = File.ReadAllBytes(bed.PathOf(VolumeFileNames.Info(Volume)));
        var stamps = listing.ToDictionary(n => n, n => File.GetLastWriteTimeUtc(bed.PathOf(n)));

        var (syncs, result) = await SyncCount.OfAsync(() => bed.Engine.DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, Volume, First) { OnlyIfNothingToMove = true }));

        Assert.Equal(OperationOutcome.NotStarted, result.Outcome);
        Assert.Equal(0, Total(syncs));
        Assert.Equal(listing, bed.Listing());
        Assert.Equal(info, File.ReadAllBytes(bed.PathOf(VolumeFileNames.Info(Volume))));
        Assert.Equal(stamps, listing.ToDictionary(n => n, n => File.GetLastWriteTimeUtc(bed.PathOf(n))));
        Assert.Empty(JournalEntries(bed.Share));
        // Asked again without the limit, it runs.
        var done = await bed.Engine.DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, Volume, First));
        Assert.Equal(OperationOutcome.Completed, done.Outcome);
        Assert.False(bed.Info(Volume)!.Snapshots.ContainsKey(First));
    }

    [Fact]
    public async Task A_metadata_only_delete_of_the_newest_snapshot_runs_when_asked_to_be_metadata_only()
    {
        var bed = Bed();
        await SetUpAsync(bed, middle: false);

        var result = await bed.Engine.DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, Volume, First) { OnlyIfNothingToMove = true });

        Assert.Equal(OperationOutcome.Completed, result.Outcome);
        Assert.False(bed.Info(Volume)!.Snapshots.ContainsKey(First));
    }

    [Fact]
    public async Task Deleting_an_empty_middle_snapshot_keeps_its_journal_and_skips_only_the_commit()
    {
        var bed = Bed();
        await SetUpAsync(bed, middle: true);

        var (syncs, _) = await SyncCount.OfAsync(() => bed.Engine.DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, Volume, First)));

        // Journal (2), the re-pointed image's fsync (1), the .info (2), the unlink (1), the journal's removal (1).
        Assert.Equal(7, Total(syncs));
        Assert.Empty(JournalEntries(bed.Share));
    }

    [Fact]
    public async Task Creating_a_snapshot_with_a_native_overlay_costs_three_syncs()
    {
        var bed = Bed();
        await bed.Engine.CreateVolumeAsync(new CreateVolumeRequest(Export, Volume, 64 * MiB, ImageFormat.Raw));

        var (syncs, result) = await SyncCount.OfAsync(() => bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, Volume, First)));

        Assert.Equal(OperationOutcome.Completed, result.Outcome);
        // The overlay's fsync, then the .info write (temp file fsync, directory fsync after the rename).
        Assert.Equal(new Dictionary<string, long> { ["file"] = 2, ["directory"] = 1 }, syncs);
        Assert.DoesNotContain(bed.Listing(), n => n.Contains(".tmp-", StringComparison.Ordinal));
        var overlay = bed.PathOf(VolumeFileNames.Overlay(Volume, First));
        Assert.True(new OverlayImage(64 * MiB, VolumeFileNames.Base(Volume), ImageFormat.Raw).Matches(overlay));
        Assert.Empty(bed.ShareProblems());
    }

    [Fact]
    public async Task Creating_a_snapshot_with_qemu_img_keeps_the_temp_file_and_rename_four_syncs()
    {
        var bed = Bed(native: false);
        await bed.Engine.CreateVolumeAsync(new CreateVolumeRequest(Export, Volume, 64 * MiB, ImageFormat.Raw));

        var (syncs, _) = await SyncCount.OfAsync(() => bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, Volume, First)));

        Assert.Equal(new Dictionary<string, long> { ["file"] = 2, ["directory"] = 2 }, syncs);
        Assert.Empty(bed.ShareProblems());
    }

    [Theory]
    [InlineData("torn")]
    [InlineData("other-qcow2")]
    [InlineData("garbage")]
    public async Task A_leftover_at_the_overlays_name_that_is_not_exactly_the_overlay_is_replaced(string kind)
    {
        var bed = Bed();
        await bed.Engine.CreateVolumeAsync(new CreateVolumeRequest(Export, Volume, 64 * MiB, ImageFormat.Raw));
        var overlayName = VolumeFileNames.Overlay(Volume, First);
        var overlay = bed.PathOf(overlayName);
        var expected = new OverlayImage(64 * MiB, VolumeFileNames.Base(Volume), ImageFormat.Raw);
        switch (kind)
        {
            case "torn":
                // What a crash between the header write and the final length leaves: the right header, too short.
                expected.Create(overlay, UnixFileMode.UserRead | UnixFileMode.UserWrite);
                File.SetAttributes(overlay, FileAttributes.Normal);
                using (var f = new FileStream(overlay, FileMode.Open, FileAccess.Write))
                {
                    f.SetLength(3 * 65536);
                }
                break;
            case "other-qcow2":
                // The right backing file and size, but not these bytes (another cluster size).
                RequiredTool.RunChecked(RequiredTool.QemuImg, "create", "-f", "qcow2", "-o", "cluster_size=4096", "-b", VolumeFileNames.Base(Volume), "-F", "raw", overlay, (64 * MiB).ToString(System.Globalization.CultureInfo.InvariantCulture));
                break;
            default:
                File.WriteAllText(overlay, "not an image");
                break;
        }
        Assert.False(expected.Matches(overlay));

        await bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, Volume, First));

        Assert.True(expected.Matches(overlay));
        Assert.Equal(overlayName, bed.Info(Volume)!.Active);
        Assert.Empty(bed.ShareProblems());
    }

    [Fact]
    public async Task A_leftover_that_is_exactly_the_overlay_is_kept_and_made_durable()
    {
        var bed = Bed();
        await bed.Engine.CreateVolumeAsync(new CreateVolumeRequest(Export, Volume, 64 * MiB, ImageFormat.Raw));
        var overlay = bed.PathOf(VolumeFileNames.Overlay(Volume, First));
        new OverlayImage(64 * MiB, VolumeFileNames.Base(Volume), ImageFormat.Raw).Create(overlay, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        var inode = Durability.FileOwnership.InodeOf(overlay);

        var (syncs, _) = await SyncCount.OfAsync(() => bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, Volume, First)));

        Assert.Equal(inode, Durability.FileOwnership.InodeOf(overlay));
        Assert.Equal(3, Total(syncs)); // kept, but fsynced like a new one: it may never have been
        Assert.Equal(VolumeFileNames.Overlay(Volume, First), bed.Info(Volume)!.Active);
        Assert.Empty(bed.ShareProblems());
    }

    [Fact]
    public async Task The_merge_plan_log_says_nothing_moves_and_why_and_a_delete_with_data_says_what_was_seen()
    {
        var bed = Bed();
        await SetUpAsync(bed, middle: true);
        var log = new RecordingLogger<VolumeEngine>();
        var engine = new VolumeEngine(new ShareMap([bed.Share]), bed.Qemu, Options.Create(bed.Options_), log);

        await engine.DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, Volume, First));
        await engine.DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, Volume, Second));

        var plans = log.Entries.Where(e => e.EventId.Id == 1020).Select(e => e.Message).ToList();
        Assert.Contains("merges by NothingToMove (0 bytes)", plans[0], StringComparison.Ordinal);
        Assert.Contains($"{VolumeFileNames.Overlay(Volume, First)} holds no guest data (no L1 entry is set)", plans[0], StringComparison.Ordinal);
        Assert.Contains("merges by CommitDown", plans[1], StringComparison.Ordinal);
        var seen = Assert.Single(log.Entries, e => e.EventId.Id == 1040);
        Assert.Contains("is allocated", seen.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_resumed_nothing_to_move_delete_commits_after_all_when_the_overlay_now_holds_data()
    {
        var bed = Bed();
        await SetUpAsync(bed, middle: true);
        var crash = new CrashAtStep(DeleteSnapshotJournaled, 1);
        await Assert.ThrowsAsync<InjectedCrash>(() => bed.NewEngine(crash).DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, Volume, First)));
        Assert.Single(JournalEntries(bed.Share));
        // Data in First's overlay (a middle image) after the plan was journaled: what Second shows changes with it.
        var upper = bed.PathOf(VolumeFileNames.Overlay(Volume, First));
        RequiredTool.RunChecked(RequiredTool.Find("qemu-io", "qemu-utils"), "-f", "qcow2", "-c", $"write -P 0x77 {16 * MiB} {MiB}", upper);
        var secondShows = Path.Combine(bed.References, "second.raw");
        RequiredTool.RunChecked(RequiredTool.QemuImg, "convert", "-f", "qcow2", "-O", "raw", upper, secondShows);
        var steps = new StepRecorder();

        var result = await bed.NewEngine(steps).DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, Volume, First));

        Assert.Equal(OperationOutcome.Completed, result.Outcome);
        Assert.Contains(DeleteSnapshotCommitted, steps.Seen);
        Assert.True(bed.SnapshotShows(Volume, Second, secondShows));
        Assert.Empty(JournalEntries(bed.Share));
        Assert.Empty(bed.ShareProblems());
    }

    [Fact]
    public async Task A_pull_up_of_a_lower_overlay_that_maps_no_data_only_re_points_and_leaves_what_the_commit_leaves()
    {
        // First taken, Second right after it (First's overlay, the lower image, maps nothing), 8 MiB written: deleting
        // Second pulls First's overlay up by cost, and there is nothing in it to pull.
        var planned = Bed();
        var committed = Bed(MergePlanning.AlwaysCommitDown);
        foreach (var bed in new[] { planned, committed })
        {
            await SetUpAsync(bed, middle: true);
            bed.GuestWrite(Volume, 20 * MiB, 8 * MiB, 0x66);
        }
        var now = committed.SaveReference(Volume, "now");
        var log = new RecordingLogger<VolumeEngine>();
        var engine = new VolumeEngine(new ShareMap([planned.Share]), planned.Qemu, Options.Create(planned.Options_), log);

        var result = await engine.DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, Volume, Second));
        await committed.Engine.DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, Volume, Second));

        Assert.Contains("pull-up", result.Message, StringComparison.Ordinal);
        Assert.Contains("holds no guest data, so the pull-up only re-points", Assert.Single(log.Entries, e => e.EventId.Id == 1020).Message, StringComparison.Ordinal);
        AssertSameFinalState(committed, planned, "the re-point-only pull-up");
        var active = planned.Engine.ReadChain(Export, Volume).Active;
        Assert.Equal(VolumeFileNames.Overlay(Volume, First), active.FileName);
        Assert.True(planned.SameContents(planned.PathOf(active.FileName), active.Format, now));
    }
}
