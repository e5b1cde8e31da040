using System.Globalization;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Storage.Chains;
using NfsVolumeWorker.Storage.Durability;
using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Shares;
using NfsVolumeWorker.Storage.Tests.QemuImg;
using NfsVolumeWorker.Storage.Tests.Support;
using static NfsVolumeWorker.Storage.Engine.OperationSteps;
using static NfsVolumeWorker.Storage.Tests.Engine.CrashAssertions;
using static NfsVolumeWorker.Storage.Tests.Support.EngineTestBed;

namespace NfsVolumeWorker.Storage.Tests.Engine;

/// <summary>
/// A snapshot delete merges in the direction that writes fewer bytes: committing the overlay down (Cinder's way), or
/// pulling the image below up into the overlay, which then takes that image's name. Either way the share ends with the
/// same file names, the same .info bytes and the same data, so Cinder cannot tell which way it went.
/// </summary>
public sealed class MergeDirectionSpecs : IDisposable
{
    private static readonly Guid Volume = Guid.Parse("3c4d5e6f-0000-4000-8000-00000000000c");
    private static readonly Guid Old = Guid.Parse("aaaaaaaa-0000-4000-8000-0000000000a1");
    private static readonly Guid Mid = Guid.Parse("bbbbbbbb-0000-4000-8000-0000000000b2");
    private static readonly Guid New = Guid.Parse("cccccccc-0000-4000-8000-0000000000c3");

    private readonly List<EngineTestBed> _beds = [];

    public void Dispose()
    {
        foreach (var bed in _beds)
        {
            bed.Dispose();
        }
    }

    private EngineTestBed Bed(MergePlanning planning = MergePlanning.ByCost, IStepObserver? steps = null)
    {
        var bed = new EngineTestBed(new VolumeEngineOptions { LockTimeout = TimeSpan.FromSeconds(30), MergePlanning = planning }, steps);
        _beds.Add(bed);
        return bed;
    }

    private static VolumeEngine EngineWithLog(EngineTestBed bed, RecordingLogger<VolumeEngine> log) =>
        new(new ShareMap([bed.Share]), bed.Qemu, Options.Create(bed.Options_), log);

    /// <summary>The volume (fixed ids, so two beds compare byte for byte): <paramref name="beforeOld"/> MiB written,
    /// snapshot Old, <paramref name="afterOld"/> MiB, snapshot Mid, <paramref name="afterMid"/> MiB, snapshot New, 1 MiB.
    /// Returns what the volume showed at each snapshot and now.</summary>
    private static async Task<Dictionary<string, string>> SetUpAsync(EngineTestBed bed, ImageFormat format, int beforeOld = 2, int afterOld = 2, int afterMid = 2)
    {
        var refs = new Dictionary<string, string>();
        await bed.Engine.CreateVolumeAsync(new CreateVolumeRequest(Export, Volume, 64 * MiB, format));
        bed.GuestWrite(Volume, 0, beforeOld * MiB, 0x21);
        refs["old"] = bed.SaveReference(Volume, "old");
        await bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, Volume, Old));
        bed.GuestWrite(Volume, 4 * MiB, afterOld * MiB, 0x32);
        refs["mid"] = bed.SaveReference(Volume, "mid");
        await bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, Volume, Mid));
        bed.GuestWrite(Volume, 30 * MiB, afterMid * MiB, 0x43);
        refs["new"] = bed.SaveReference(Volume, "new");
        await bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, Volume, New));
        bed.GuestWrite(Volume, 60 * MiB, 1 * MiB, 0x54);
        refs["now"] = bed.SaveReference(Volume, "now");
        return refs;
    }

    private static ChainImage Image(string name, long size, ImageFormat format = ImageFormat.Qcow2, string? backing = "volume-x.y") =>
        new(name, format, size, backing, backing is null ? null : ImageFormat.Qcow2, null, false);

    public static TheoryData<MergePlanning, ImageFormat, long, long, long, MergeDirection?> Plans => new()
    {
        // planning, lower's format, overlay's bytes, lower's bytes, free bytes: direction (null: NoSpace)
        { MergePlanning.ByCost, ImageFormat.Qcow2, 500 * MiB, 10 * MiB, 10_000 * MiB, MergeDirection.PullUp },
        { MergePlanning.ByCost, ImageFormat.Qcow2, 10 * MiB, 500 * MiB, 10_000 * MiB, MergeDirection.CommitDown },
        { MergePlanning.ByCost, ImageFormat.Qcow2, 10 * MiB, 10 * MiB, 10_000 * MiB, MergeDirection.CommitDown },
        { MergePlanning.ByCost, ImageFormat.Qcow2, 10 * MiB + MergePlan.PullUpMarginBytes - 1, 10 * MiB, 10_000 * MiB, MergeDirection.CommitDown },
        { MergePlanning.ByCost, ImageFormat.Qcow2, 10 * MiB + MergePlan.PullUpMarginBytes + 1, 10 * MiB, 10_000 * MiB, MergeDirection.PullUp },
        { MergePlanning.ByCost, ImageFormat.Raw, 500 * MiB, 10 * MiB, 10_000 * MiB, MergeDirection.CommitDown },
        { MergePlanning.ByCost, ImageFormat.Qcow2, 500 * MiB, 10 * MiB, 100 * MiB, MergeDirection.PullUp },
        { MergePlanning.ByCost, ImageFormat.Qcow2, 500 * MiB, 10 * MiB, 5 * MiB, null },
        { MergePlanning.ByCost, ImageFormat.Raw, 500 * MiB, 10 * MiB, 100 * MiB, null },
        { MergePlanning.AlwaysCommitDown, ImageFormat.Qcow2, 500 * MiB, 10 * MiB, 10_000 * MiB, MergeDirection.CommitDown },
        { MergePlanning.AlwaysCommitDown, ImageFormat.Qcow2, 500 * MiB, 10 * MiB, 100 * MiB, null },
        { MergePlanning.PullUpWherePossible, ImageFormat.Qcow2, 10 * MiB, 500 * MiB, 10_000 * MiB, MergeDirection.PullUp },
        { MergePlanning.PullUpWherePossible, ImageFormat.Raw, 10 * MiB, 500 * MiB, 10_000 * MiB, MergeDirection.CommitDown },
    };

    [Theory]
    [MemberData(nameof(Plans))]
    public void The_plan_picks_the_direction_that_writes_fewer_bytes_among_those_that_fit_and_are_allowed(
        MergePlanning planning, ImageFormat lowerFormat, long upperBytes, long lowerBytes, long free, MergeDirection? expected)
    {
        var upper = Image("volume-x.u", GiB);
        var lower = Image("volume-x.l", GiB, lowerFormat, lowerFormat == ImageFormat.Raw ? null : "volume-x.b");

        var plan = MergePlan.Choose(upper, lower, upperBytes, lowerBytes, free, planning);

        Assert.Equal(expected, plan?.Direction);
        if (plan is not null)
        {
            Assert.Equal((upperBytes, lowerBytes), (plan.DownBytes, plan.UpBytes));
            Assert.Equal(plan.Direction == MergeDirection.PullUp ? lowerBytes : upperBytes, plan.Bytes);
            Assert.Equal(("volume-x.u", "volume-x.l", lower.BackingFile), (plan.Upper, plan.Lower, plan.LowerBacking));
            Assert.False(string.IsNullOrWhiteSpace(plan.Reason));
        }
    }

    [Fact]
    public void A_lower_image_larger_than_the_overlay_is_never_pulled_up()
    {
        var plan = MergePlan.Choose(Image("volume-x.u", GiB), Image("volume-x.l", 2 * GiB), 500 * MiB, MiB, long.MaxValue, MergePlanning.PullUpWherePossible);

        Assert.Equal(MergeDirection.CommitDown, plan!.Direction);
        Assert.Contains("larger", plan.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void A_share_without_hard_links_only_commits_down()
    {
        var plan = MergePlan.Choose(Image("volume-x.u", GiB), Image("volume-x.l", GiB), 500 * MiB, MiB, long.MaxValue, MergePlanning.ByCost, hardLinks: false);

        Assert.Equal(MergeDirection.CommitDown, plan!.Direction);
        Assert.Contains("hard links", plan.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void The_test_share_has_hard_links()
    {
        using var bed = new EngineTestBed();

        Assert.True(ShareCapabilities.Of(bed.Share).HardLinks);
        Assert.DoesNotContain("hard links", ShareCapabilities.Of(bed.Share).Describe(), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_large_overlay_on_a_small_one_is_pulled_up_and_leaves_exactly_what_a_commit_leaves(bool newest)
    {
        var planned = Bed();
        var committed = Bed(MergePlanning.AlwaysCommitDown);
        // Middle: Mid's overlay holds 24 MiB, Old's below it 2 MiB. Newest: New's overlay (the active image) gets 24 MiB
        // more, Mid's below it holds 2.
        var refs = await SetUpAsync(planned, ImageFormat.Raw, afterMid: newest ? 2 : 24);
        await SetUpAsync(committed, ImageFormat.Raw, afterMid: newest ? 2 : 24);
        var snapshot = newest ? New : Mid;
        if (newest)
        {
            planned.GuestWrite(Volume, 8 * MiB, 24 * MiB, 0x65);
            committed.GuestWrite(Volume, 8 * MiB, 24 * MiB, 0x65);
            refs["now"] = planned.SaveReference(Volume, "now-newest");
        }
        var log = new RecordingLogger<VolumeEngine>();
        var lowerName = VolumeFileNames.Overlay(Volume, newest ? Mid : Old);
        var upperInode = FileOwnership.InodeOf(planned.PathOf(VolumeFileNames.Overlay(Volume, snapshot)));

        var result = await EngineWithLog(planned, log).DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, Volume, snapshot));
        var reference = await committed.Engine.DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, Volume, snapshot));

        Assert.Contains("pull-up", result.Message, StringComparison.Ordinal);
        Assert.Contains("commit of", reference.Message, StringComparison.Ordinal);
        var planLog = Assert.Single(log.Entries, e => e.EventId.Id == 1020).Message;
        Assert.Contains("merges by PullUp", planLog, StringComparison.Ordinal);
        var bytes = Regex.Match(planLog, @"committing \S+ down writes (\d+) bytes, pulling \S+ up writes (\d+) bytes");
        Assert.True(bytes.Success, planLog);
        Assert.True(long.Parse(bytes.Groups[1].Value, CultureInfo.InvariantCulture) > 20 * MiB + long.Parse(bytes.Groups[2].Value, CultureInfo.InvariantCulture), planLog);
        AssertSameFinalState(committed, planned, "pull-up against commit");
        Assert.Equal(reference.ActiveFile, result.ActiveFile);
        var chain = planned.Engine.ReadChain(Export, Volume);
        Assert.True(planned.SameContents(planned.PathOf(chain.Active.FileName), chain.Active.Format, refs["now"]));
        Assert.True(planned.SnapshotShows(Volume, Old, refs["old"]));
        Assert.True(newest ? planned.SnapshotShows(Volume, Mid, refs["mid"]) : planned.SnapshotShows(Volume, New, refs["new"]));
        // The merged image is the overlay's file under the lower image's name; the overlay's name is gone.
        Assert.Equal(upperInode, FileOwnership.InodeOf(planned.PathOf(lowerName)));
        Assert.False(File.Exists(planned.PathOf(VolumeFileNames.Overlay(Volume, snapshot))));
        Assert.Empty(chain.Problems);
    }

    [Fact]
    public async Task A_small_overlay_on_a_large_image_is_committed_down()
    {
        var bed = Bed();
        await SetUpAsync(bed, ImageFormat.Qcow2, beforeOld: 24);
        var log = new RecordingLogger<VolumeEngine>();

        // Old's overlay holds 2 MiB; the base below it 24 MiB.
        var result = await EngineWithLog(bed, log).DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, Volume, Old));

        Assert.Contains("commit of", result.Message, StringComparison.Ordinal);
        Assert.Contains(log.Entries, e => e.EventId.Id == 1020 && e.Message.Contains("merges by CommitDown", StringComparison.Ordinal));
        Assert.Empty(bed.ShareProblems());
    }

    [Fact]
    public async Task A_raw_base_is_never_replaced_by_a_pulled_up_qcow2_image_even_when_forced()
    {
        var bed = Bed(MergePlanning.PullUpWherePossible);
        var refs = await SetUpAsync(bed, ImageFormat.Raw, afterOld: 24);

        var result = await bed.Engine.DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, Volume, Old));

        Assert.Contains("commit of", result.Message, StringComparison.Ordinal);
        Assert.Contains("raw", result.Message, StringComparison.Ordinal);
        Assert.False(IsQcow2(bed.PathOf(VolumeFileNames.Base(Volume))));
        Assert.True(bed.SnapshotShows(Volume, Mid, refs["mid"]));
    }

    private static readonly string[] BasePullUpSteps =
        [DeleteSnapshotJournaled, DeleteSnapshotPulledUp, DeleteSnapshotLowerReplaced, DeleteSnapshotRebased, DeleteSnapshotInfoWritten, DeleteSnapshotOverlayDeleted];

    /// <summary>The oldest snapshot of a qcow2 volume, its overlay holding 24 MiB and the base 2 MiB: the base is pulled
    /// up into the overlay, which becomes standalone and takes the name volume-&lt;id&gt;. Crashed after every step, then
    /// run again: the same end as an uninterrupted run.</summary>
    [Fact]
    public async Task Pulling_a_qcow2_base_up_survives_a_crash_after_every_step_and_the_merged_image_keeps_the_base_name()
    {
        var recorder = new StepRecorder();
        var uninterrupted = Bed(steps: recorder);
        var refs = await SetUpAsync(uninterrupted, ImageFormat.Qcow2, afterOld: 24);
        recorder.Seen.Clear();
        var done = await uninterrupted.Engine.DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, Volume, Old));
        Assert.Contains("pull-up", done.Message, StringComparison.Ordinal);
        Assert.Equal(BasePullUpSteps, recorder.Seen);
        Assert.True(IsQcow2(uninterrupted.PathOf(VolumeFileNames.Base(Volume))));
        var chain = uninterrupted.Engine.ReadChain(Export, Volume);
        Assert.Equal(VolumeFileNames.Base(Volume), chain.Base.FileName);
        Assert.Null(chain.Base.BackingFile);
        Assert.True(uninterrupted.SnapshotShows(Volume, Mid, refs["mid"]));

        foreach (var step in BasePullUpSteps)
        {
            var bed = Bed();
            await SetUpAsync(bed, ImageFormat.Qcow2, afterOld: 24);
            await Assert.ThrowsAsync<InjectedCrash>(() => bed.NewEngine(new CrashAtStep(step, 1)).DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, Volume, Old)));

            Assert.Empty(bed.ShareProblems());
            Assert.True(bed.SnapshotFileShows(Volume, Mid, refs["mid"]), $"after a crash at {step}: snapshot Mid lost its data");
            Assert.True(bed.SnapshotFileShows(Volume, New, refs["new"]), $"after a crash at {step}: snapshot New lost its data");
            var active = bed.Engine.ReadChain(Export, Volume).Active;
            Assert.True(bed.SameContents(bed.PathOf(active.FileName), active.Format, refs["now"]), $"after a crash at {step}: the volume lost its data");

            var again = await bed.NewEngine().DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, Volume, Old));
            Assert.Contains(again.Outcome, new[] { OperationOutcome.Completed, OperationOutcome.AlreadyDone });
            AssertSameFinalState(uninterrupted, bed, step);
        }
    }

    /// <summary><c>nfsvol check --repair</c>'s path: the check sees the interrupted pull-up (its mid states list the lower
    /// overlay outside the active chain, and for a base a chain that ends at the overlay), repairs nothing by hand, and
    /// has the engine finish the journaled delete first; the volume ends as after an uninterrupted run.</summary>
    [Theory]
    [InlineData(DeleteSnapshotPulledUp)]
    [InlineData(DeleteSnapshotLowerReplaced)]
    [InlineData(DeleteSnapshotRebased)]
    public async Task Check_with_repair_finishes_an_interrupted_pull_up(string step)
    {
        var uninterrupted = Bed();
        var refs = await SetUpAsync(uninterrupted, ImageFormat.Qcow2, afterOld: 24);
        await uninterrupted.Engine.DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, Volume, Old));
        var bed = Bed();
        await SetUpAsync(bed, ImageFormat.Qcow2, afterOld: 24);
        await Assert.ThrowsAsync<InjectedCrash>(() => bed.NewEngine(new CrashAtStep(step, 1)).DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, Volume, Old)));
        var check = new Storage.Recovery.ShareCheck(new ShareMap([bed.Share]), bed.Qemu, bed.Engine, Options.Create(bed.Options_),
            Microsoft.Extensions.Logging.Abstractions.NullLogger<Storage.Recovery.ShareCheck>.Instance);

        var report = await check.CheckAsync(Export, Volume, repair: true);

        Assert.Contains(report.Findings, f => f.Kind == Storage.Recovery.FindingKind.PendingOperation);
        Assert.Contains(report.Repairs, r => r.Succeeded && r.Action.Contains("finished the interrupted delete", StringComparison.Ordinal));
        Assert.True(report.Healthy, string.Join("; ", report.Remaining.Select(f => f.Message)));
        AssertSameFinalState(uninterrupted, bed, step + " then check --repair");
        Assert.True(bed.SnapshotShows(Volume, Mid, refs["mid"]));
    }

    private const long GiB = 1024 * MiB;
}
