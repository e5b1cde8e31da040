using System.Globalization;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.QemuImg;
using NfsVolumeWorker.Storage.Shares;

namespace NfsVolumeWorker.Benchmarks;

/// <summary>
/// Snapshot deletes planned by cost against always committing down (Cinder's way, <c>Engine:MergePlanning=AlwaysCommitDown</c>),
/// side by side in one run, on two shapes of a middle snapshot (raw base &lt;- lower &lt;- overlay &lt;- above, deleting the
/// overlay's snapshot): a large lower image under a small overlay (both ways commit the small overlay down), and a small
/// lower image under a large overlay (planned: the small lower image is pulled up; always-commit: the large overlay is
/// committed down). What each run merged is checked from the engine's result, not assumed.
/// </summary>
internal sealed class MergeBench(Settings settings, Results results, TextWriter output, Fixtures fx, Func<Task> settle)
{
    public const string CommitDown = "always commit down (Cinder's way)";
    public const string Planned = "planned by cost (engine default)";
    private const string Export = "bench:/merge";

    public static string LargeUnderSmall(Settings s) => $"merge, large lower ({s.MergeDataMiB} MiB) under a small overlay ({SmallMiB(s)} MiB)";

    public static string SmallUnderLarge(Settings s) => $"merge, small lower ({SmallMiB(s)} MiB) under a large overlay ({s.MergeDataMiB} MiB)";

    private static int SmallMiB(Settings s) => Math.Max(1, s.MergeDataMiB / 16);

    private VolumeEngine Engine(MergePlanning planning) => new(
        new ShareMap([new Share(Export, fx.Dir, null)]),
        new QemuImgRunner(Options.Create(new QemuImgOptions()), NullLogger<QemuImgRunner>.Instance),
        Options.Create(new VolumeEngineOptions { MergePlanning = planning }), NullLogger<VolumeEngine>.Instance);

    public async Task RunAsync()
    {
        var engines = new (string Name, VolumeEngine Engine)[] { (CommitDown, Engine(MergePlanning.AlwaysCommitDown)), (Planned, Engine(MergePlanning.ByCost)) };
        var (large, small) = (settings.MergeDataMiB * Fixtures.MiB, SmallMiB(settings) * Fixtures.MiB);
        foreach (var (scenario, lower, upper) in new[] { (LargeUnderSmall(settings), large, small), (SmallUnderLarge(settings), small, large) })
        {
            output.WriteLine($"running {scenario} x{settings.Runs}");
            var directions = new Dictionary<string, string>();
            for (var run = 0; run < settings.Runs; run++)
            {
                // Each run starts with the other variant: neither always gets the cooler disk.
                foreach (var (name, engine) in run % 2 == 0 ? engines : engines.Reverse())
                {
                    var (v, snapshot) = await FixtureAsync(lower, upper);
                    await settle();
                    OperationResult? result = null;
                    await results.TimeAsync(scenario, name, CommitDown, async () =>
                        result = await engine.DeleteSnapshotAsync(new DeleteSnapshotRequest(null, v.Id, snapshot) { BaseFormat = ImageFormat.Raw }));
                    if (result!.Outcome != OperationOutcome.Completed)
                    {
                        throw new HarnessException($"the engine did no work: {result.Message}");
                    }
                    var direction = result.Message.Contains("merged by pull-up", StringComparison.Ordinal) ? "pull-up" : "commit";
                    if (name == CommitDown && direction != "commit")
                    {
                        throw new HarnessException($"AlwaysCommitDown pulled up: {result.Message}");
                    }
                    directions[name] = direction;
                    fx.DeleteVolume(v.Id);
                }
            }
            foreach (var (name, direction) in directions)
            {
                results.Get(scenario, name).Note = direction == "pull-up"
                    ? $"pulled the lower image up: {lower / Fixtures.MiB} MiB moved"
                    : $"committed the overlay down: {upper / Fixtures.MiB} MiB moved";
            }
        }
    }

    /// <summary>raw base (1 GiB + data) &lt;- lower (<paramref name="lower"/> bytes) &lt;- overlay (<paramref name="upper"/> bytes)
    /// &lt;- above (empty, active): deleting the overlay's snapshot merges the overlay with the lower image.</summary>
    private async Task<(BenchVolume Volume, Guid Snapshot)> FixtureAsync(long lower, long upper)
    {
        var v = fx.CreateVolume(Fixtures.GiB + Math.Max(lower, upper));
        var first = await fx.AddSnapshotAsync(v);
        await Fixtures.WriteAsync(fx.PathOf(v.OverlayName(first)), "qcow2", 0, lower);
        var second = await fx.AddSnapshotAsync(v);
        await Fixtures.WriteAsync(fx.PathOf(v.OverlayName(second)), "qcow2", Fixtures.GiB / 2, upper);
        await fx.AddSnapshotAsync(v);
        return (v, second);
    }

    public static void PrintTargets(Results results, Settings settings, TextWriter output, Action<TextWriter, string, string, string, bool> line)
    {
        var (largeUnder, smallUnder) = (LargeUnderSmall(settings), SmallUnderLarge(settings));
        if (results.Find(smallUnder, Planned) is null)
        {
            return;
        }
        var speedup = results.Ratio(smallUnder, CommitDown, Planned);
        var same = results.Ratio(largeUnder, CommitDown, Planned);
        // Both shapes move the small image when planned: their times should be alike, whichever image is the large one.
        var tracksSmaller = results.Find(largeUnder, Planned) is { } l ? results.Find(smallUnder, Planned)!.Median / l.Median : double.NaN;
        line(output, "merge, small lower under a large overlay: planned speedup vs always commit down", X(speedup),
            $"target >= 2x (moves {SmallMiB(settings)} MiB instead of {settings.MergeDataMiB})", speedup >= 2);
        output.WriteLine($"merge, large lower under a small overlay: planned vs always commit down {X(same)} (the same commit both ways: about 1x)");
        line(output, "merge cost tracks the smaller image: planned time, small lower under large overlay / large lower under small overlay", X(tracksSmaller),
            "target <= 2x", tracksSmaller <= 2);
    }

    private static string X(double ratio) => double.IsNaN(ratio) ? "n/a" : ratio.ToString("0.00", CultureInfo.InvariantCulture) + "x";
}
