using System.Diagnostics;
using System.Globalization;
using NfsVolumeWorker.Benchmarks;
using NfsVolumeWorker.Storage.Engine;

// The benchmark harness: times the engine against Cinder's own command sequence and the disk's limit on
// the same files in the same run, prints a table and a targets block. It reports; it does not assert:
// the exit code is 0 unless the harness itself fails.

Settings settings;
try
{
    settings = Settings.Parse(args);
}
catch (ArgumentException e)
{
    Console.Error.WriteLine(e.Message);
    Console.Error.WriteLine(Settings.Usage);
    return 2;
}
if (settings.Help)
{
    Console.WriteLine(Settings.Usage);
    return 0;
}

var output = Console.Out;
var started = Stopwatch.GetTimestamp();
var dir = Path.Combine(settings.ParentDir, $"nfsvol-bench-{DateTime.UtcNow:yyyyMMdd-HHmmss}-{Environment.ProcessId}");
Directory.CreateDirectory(dir);
try
{
    await Machine.PrintFactsAsync(dir, output);
    var results = new Results();
    var bench = new Bench(settings, new Fixtures(dir), results, output);
    bench.ProbeCacheDrop();
    output.WriteLine($"settings    runs={settings.Runs}{(settings.Quick ? " (quick)" : "")}, scenarios={string.Join(',', settings.Only)}, " +
        $"clone data={settings.CloneDataMiB} MiB, delete data={settings.DeleteDataMiB} MiB, merge data={settings.MergeDataMiB} MiB, sparse data={settings.SparseDataMiB} MiB at {string.Join('/', settings.SparseSizesGiB)} GiB");
    output.WriteLine();

    if (settings.TimesTheEngine)
    {
        await bench.WarmUpAsync();
    }
    if (settings.Includes("create"))
    {
        await bench.CreateSnapshotAsync();
    }
    if (settings.Includes("delete"))
    {
        await bench.DeleteSnapshotAsync();
    }
    if (settings.Includes("clone"))
    {
        await bench.CloneAsync();
    }
    if (settings.Includes("sparse"))
    {
        await bench.SparseAsync();
    }
    if (settings.Includes("reflink"))
    {
        await new ReflinkBench(settings, results, output, dir, bench).RunAsync();
    }
    if (settings.Includes("overlay"))
    {
        await new OverlayBench(settings, results, output, new Fixtures(dir)).RunAsync();
    }
    if (settings.Includes("merge"))
    {
        await new MergeBench(settings, results, output, new Fixtures(dir), () => bench.SettleAsync(cold: true)).RunAsync();
    }
    IdleSweepFigures? idle = null;
    if (settings.Includes(IdleSweepBench.Scenario))
    {
        idle = await IdleSweepBench.MeasureAsync(dir, settings.IdleVolumes, TimeSpan.FromSeconds(settings.IdleSeconds), TimeSpan.FromSeconds(2), output);
    }

    output.WriteLine();
    output.WriteLine("== figures (median, min and max of the timed runs; ratio = this median / the median of the 'vs' row) ==");
    results.PrintTable(output);
    output.WriteLine();
    output.WriteLine("== targets ==");
    Targets.Print(results, settings, output);
    if (idle is not null)
    {
        Targets.PrintIdleSweep(idle, output);
    }
    output.WriteLine();
    output.WriteLine($"load at the end: {Machine.LoadLine()}");
    output.WriteLine($"total {Stopwatch.GetElapsedTime(started).TotalSeconds:0} s; working directory {dir}{(settings.Keep ? " kept" : " removed")}");
    return 0;
}
catch (Exception e) when (e is HarnessException or IOException or UnauthorizedAccessException or System.ComponentModel.Win32Exception
    or NotImplementedException or NfsVolumeWorker.Storage.Errors.StorageException or NfsVolumeWorker.Storage.QemuImg.QemuImgException)
{
    Console.Out.Flush();
    Console.Error.WriteLine($"benchmark harness failed: {e.GetType().Name}: {e.Message}");
    Console.Error.WriteLine(e.StackTrace);
    return 1;
}
finally
{
    if (!settings.Keep)
    {
        try
        {
            Directory.Delete(dir, recursive: true);
        }
        catch (IOException e)
        {
            Console.Error.WriteLine($"could not remove {dir}: {e.Message}");
        }
    }
}

/// <summary>The targets block: each figure the project promises, the measured value, PASS/FAIL (reported, not asserted).</summary>
internal static class Targets
{
    public static void Print(Results results, Settings settings, TextWriter output)
    {
        ReflinkBench.PrintTargets(results, output, Line);
        OverlayBench.PrintTargets(results, output);
        MergeBench.PrintTargets(results, settings, output, Line);
        foreach (var scenario in new[] { "create-snapshot, 1st (raw base)", "create-snapshot, 2nd (qcow2 active)" })
        {
            if (results.Find(scenario, "engine") is not null)
            {
                var speedup = results.Ratio(scenario, "cinder", "engine");
                Line(output, $"{scenario}: engine speedup vs cinder", $"{X(speedup)} (of min: {X(results.RatioOfMin(scenario, "cinder", "engine"))})", "target >= 3x", speedup >= 3);
            }
        }
        foreach (var which in new[] { "newest", "middle" })
        {
            var scenario = $"delete-snapshot, {which} ({settings.DeleteDataMiB} MiB to merge)";
            if (results.Find(scenario, "engine") is not null)
            {
                output.WriteLine($"{scenario}: engine speedup vs cinder {X(results.Ratio(scenario, "cinder", "engine"))} (cinder does not sync), " +
                    $"vs cinder + sync {X(results.Ratio(scenario, "cinder + sync", "engine"))} (no target)");
            }
        }

        var clone = $"clone-from-snapshot ({settings.CloneDataMiB} MiB data, {2 * settings.CloneDataMiB} MiB virtual)";
        const string Cp = "cp --sparse=always + sync";
        if (results.Find(clone, Cp) is not null)
        {
            var defaults = new VolumeEngineOptions();
            var defaultName = Bench.EngineVariant(Bench.DefaultDirectIo(defaults), defaults.CopyCoroutines, true);
            var toCp = results.Ratio(clone, defaultName, Cp);
            Line(output, $"clone-from-snapshot: engine (default options) vs cp+sync", $"{X(toCp)} (of min: {X(results.RatioOfMin(clone, defaultName, Cp))})", "target <= 1.10x", toCp <= 1.10);
            var engines = new[] { (false, 8), (false, 1), (true, 8), (true, 1) }
                .Select(c => Bench.EngineVariant(c.Item1, c.Item2, c.Item1 == Bench.DefaultDirectIo(defaults) && c.Item2 == defaults.CopyCoroutines))
                .Select(name => results.Find(clone, name)!)
                .OrderBy(s => s.Median)
                .ToList();
            var best = engines[0];
            output.WriteLine($"clone-from-snapshot: best engine options: {best.Variant.Replace("engine: ", "", StringComparison.Ordinal)} " +
                $"({X(best.Median / results.Find(clone, Cp)!.Median)} of cp+sync); ranking: " +
                string.Join(" < ", engines.Select(s => $"{s.Variant.Replace("engine: ", "", StringComparison.Ordinal)} {Results.Ms(s.Median)}")));
            var vsCinderSync = results.Ratio(clone, "cinder: convert + sync", defaultName);
            var vsCinder = results.Ratio(clone, "cinder: qemu-img convert -O raw", defaultName);
            output.WriteLine($"clone-from-snapshot: engine (default) speedup vs cinder convert + sync {X(vsCinderSync)}, vs cinder convert without sync {X(vsCinder)} (no target)");
        }

        var sparse = $"sparse clone ({settings.SparseDataMiB} MiB data)";
        var sizes = settings.SparseSizesGiB;
        if (results.Find(sparse, $"engine, {sizes[0]} GiB virtual") is not null && sizes.Count > 1)
        {
            var (small, large) = (sizes.Min(), sizes.Max());
            var engineScale = results.Ratio(sparse, $"engine, {large} GiB virtual", $"engine, {small} GiB virtual");
            var cinderScale = results.Ratio(sparse, $"cinder convert, {large} GiB virtual", $"cinder convert, {small} GiB virtual");
            Line(output, $"sparse clone: engine time {large} GiB / {small} GiB virtual (same {settings.SparseDataMiB} MiB data)",
                $"{X(engineScale)} (of min: {X(results.RatioOfMin(sparse, $"engine, {large} GiB virtual", $"engine, {small} GiB virtual"))})",
                "target <= 2x: scales with data, not virtual size (threshold chosen by the harness)", engineScale <= 2);
            output.WriteLine($"sparse clone: cinder convert {large} GiB / {small} GiB virtual: {X(cinderScale)} (for comparison)");
        }
    }

    /// <summary>Issue #9's target: an idle worker's sweep over 100,000 volumes that each had a command costs at most 1% of a core.</summary>
    public static void PrintIdleSweep(IdleSweepFigures idle, TextWriter output)
    {
        output.WriteLine($"idle sweep over {idle.Volumes} volumes, format 1 (before): {idle.Format1.CoreShare * 100:0.00}% of a core (reference, no target)");
        output.WriteLine($"idle sweep: cleanup of the format-1 directories took {idle.Cleanup.Wall.TotalSeconds:0} s ({idle.Cleanup.Sweeps} sweeps, {idle.Cleanup.CoreShare * 100:0}% of a core meanwhile)");
        Line(output, $"idle sweep over {idle.Volumes} volumes, format 2 (after the cleanup)", $"{idle.Idle.CoreShare * 100:0.00}% of a core", "target <= 1%", idle.Idle.CoreShare <= 0.01);
    }

    private static void Line(TextWriter output, string what, string value, string target, bool pass) =>
        output.WriteLine($"{what}: {value} ({target}): {(pass ? "PASS" : "FAIL")}");

    private static string X(double ratio) => double.IsNaN(ratio) ? "n/a" : ratio.ToString("0.00", CultureInfo.InvariantCulture) + "x";
}
