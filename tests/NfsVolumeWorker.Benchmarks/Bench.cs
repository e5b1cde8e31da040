using System.Diagnostics;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.QemuImg;
using NfsVolumeWorker.Storage.Shares;

namespace NfsVolumeWorker.Benchmarks;

/// <summary>
/// The four scenarios. Each timed run starts from freshly laid-out, identical files for the engine and
/// for the Cinder replay; within a run the variants take turns in a rotating order, so drift (page cache,
/// ext4 journal, a noisy neighbour) falls on all of them alike. Before every timed step dirty pages are
/// flushed (and for copies and merges the page cache is dropped when the kernel allows it), so no step
/// pays for the previous one's writes.
/// </summary>
internal sealed class Bench(Settings settings, Fixtures fx, Results results, TextWriter output)
{
    private const string Export = "bench:/export";

    private readonly CinderNfsDriver _cinder = new(fx.Dir);
    private bool _dropCaches;

    /// <summary>An engine whose full copies read and write in the given mode (mode pinned, no server-side copy), so
    /// that each variant measures what its name says.</summary>
    public VolumeEngine NewEngine(bool directIo, int coroutines, IStepObserver? steps = null) => NewEngine(
        new VolumeEngineOptions { CopyWithDirectIo = directIo, CopyCoroutines = coroutines, ServerSideCopy = false }, steps);

    /// <summary>An engine with every default: server-side copy where the file system offers it, else the measured mode.</summary>
    public VolumeEngine NewDefaultEngine() => NewEngine(new VolumeEngineOptions());

    private VolumeEngine NewEngine(VolumeEngineOptions options, IStepObserver? steps = null) => new(
        new ShareMap([new Share(Export, fx.Dir, null)]),
        new QemuImgRunner(Options.Create(new QemuImgOptions()), NullLogger<QemuImgRunner>.Instance),
        Options.Create(options),
        NullLogger<VolumeEngine>.Instance,
        steps);

    /// <summary>The mode the rows call "default": the engine measures the faster one per share when it is not pinned
    /// (O_DIRECT was the fixed default before, and wins ties).</summary>
    public static bool DefaultDirectIo(VolumeEngineOptions defaults) => defaults.CopyWithDirectIo ?? true;

    /// <summary>Decides whether the page cache can be dropped between runs (and says so).</summary>
    public void ProbeCacheDrop()
    {
        if (settings.Warm)
        {
            output.WriteLine("page cache  kept warm (--warm)");
            return;
        }
        _dropCaches = Machine.TryDropCaches();
        output.WriteLine(_dropCaches
            ? "page cache  dropped before every copy/merge run (echo 3 > /proc/sys/vm/drop_caches worked)"
            : "page cache  NOT dropped: writing /proc/sys/vm/drop_caches was refused (container?); figures are warm-cache");
    }

    /// <summary>Flushes dirty pages; drops the cache when asked and allowed, then reloads the binaries
    /// every variant starts (so a dropped cache costs no variant a cold qemu-img or Python start).</summary>
    public async Task SettleAsync(bool cold)
    {
        Machine.Sync();
        if (cold && _dropCaches)
        {
            Machine.TryDropCaches();
            await Proc.RunAsync("qemu-img", "--version");
            await Proc.RunAsync(CinderNfsDriver.Python, "-m", "oslo_concurrency.prlimit", "--as=1073741824", "--", "true");
            await Proc.RunAsync("cp", "--version");
        }
    }

    /// <summary>One untimed pass of every operation on a tiny volume: JIT, binaries and Python modules warm.</summary>
    public async Task WarmUpAsync()
    {
        var engine = NewDefaultEngine();
        var e = fx.CreateVolume(Fixtures.GiB);
        var c = fx.CreateVolume(Fixtures.GiB);
        var es1 = Guid.NewGuid();
        var cs1 = Guid.NewGuid();
        Expect(await engine.CreateSnapshotAsync(new CreateSnapshotRequest(null, e.Id, es1) { BaseFormat = ImageFormat.Raw }));
        await _cinder.CreateSnapshotAsync(c.BaseName, cs1, 1);
        Expect(await engine.CreateSnapshotAsync(new CreateSnapshotRequest(null, e.Id, Guid.NewGuid()) { BaseFormat = ImageFormat.Raw }));
        await _cinder.CreateSnapshotAsync(c.BaseName, Guid.NewGuid(), 1);
        var clone = Guid.NewGuid();
        Expect(await engine.CreateVolumeFromSnapshotAsync(new CreateVolumeFromSnapshotRequest(null, e.Id, es1, clone) { BaseFormat = ImageFormat.Raw }));
        await _cinder.CreateVolumeFromSnapshotAsync(c.BaseName, cs1, VolumeFileNames.Base(Guid.NewGuid()), 1);
        Expect(await engine.DeleteSnapshotAsync(new DeleteSnapshotRequest(null, e.Id, es1) { BaseFormat = ImageFormat.Raw }));
        await _cinder.DeleteSnapshotAsync(c.BaseName, cs1);
        foreach (var file in Directory.EnumerateFiles(fx.Dir, "volume-*"))
        {
            File.Delete(file);
        }
        if (engine.OverlapsDetected != 0)
        {
            throw new HarnessException("the engine reported overlapping operations on one volume");
        }
    }

    // ---- 1. create snapshot ----------------------------------------------------------------------

    public async Task CreateSnapshotAsync()
    {
        var engine = NewDefaultEngine();
        foreach (var second in new[] { false, true })
        {
            var scenario = second ? "create-snapshot, 2nd (qcow2 active)" : "create-snapshot, 1st (raw base)";
            output.WriteLine($"running {scenario} x{settings.Runs}");
            var processes = "";
            for (var run = 0; run < settings.Runs; run++)
            {
                var e = fx.CreateVolume(Fixtures.GiB);
                var c = fx.CreateVolume(Fixtures.GiB);
                if (second)
                {
                    await fx.AddSnapshotAsync(e);
                    await fx.AddSnapshotAsync(c);
                }
                var steps = new (string Name, Func<Task> Body)[]
                {
                    ("engine", async () => Expect(await engine.CreateSnapshotAsync(new CreateSnapshotRequest(null, e.Id, Guid.NewGuid()) { BaseFormat = ImageFormat.Raw }))),
                    ("cinder", async () =>
                    {
                        var (before, infos) = (_cinder.ProcessCount, _cinder.InfoCount);
                        await _cinder.CreateSnapshotAsync(c.BaseName, Guid.NewGuid(), 1);
                        processes = $"{_cinder.ProcessCount - before} processes, {_cinder.InfoCount - infos} of them qemu-img info under python prlimit";
                    }),
                };
                foreach (var (name, body) in Rotate(steps, run))
                {
                    await SettleAsync(cold: false);
                    await results.TimeAsync(scenario, name, "engine", body);
                }
                fx.DeleteVolume(e.Id);
                fx.DeleteVolume(c.Id);
            }
            results.Get(scenario, "cinder").Note = processes;
            results.Get(scenario, "engine").Note = new VolumeEngineOptions().NativeOverlayHeaders
                ? "no process (native overlay); fsyncs file, dir, .info"
                : "1 process (qemu-img create); fsyncs file, dir, .info";
        }
    }

    // ---- 2. delete snapshot ----------------------------------------------------------------------

    public async Task DeleteSnapshotAsync()
    {
        var engine = NewDefaultEngine();
        var data = settings.DeleteDataMiB * Fixtures.MiB;
        foreach (var middle in new[] { false, true })
        {
            var scenario = $"delete-snapshot, {(middle ? "middle" : "newest")} ({settings.DeleteDataMiB} MiB to merge)";
            output.WriteLine($"running {scenario} x{settings.Runs}");
            var processes = "";
            for (var run = 0; run < settings.Runs; run++)
            {
                var e = await DeleteFixtureAsync(middle, data);
                var c = await DeleteFixtureAsync(middle, data);
                var steps = new (string Name, Func<Task> Body)[]
                {
                    ("engine", () => results.TimeAsync(scenario, "engine", "engine", async () =>
                        Expect(await engine.DeleteSnapshotAsync(new DeleteSnapshotRequest(null, e.Id, e.Snapshots[0]) { BaseFormat = ImageFormat.Raw })))),
                    ("cinder", async () =>
                    {
                        var (before, infos) = (_cinder.ProcessCount, _cinder.InfoCount);
                        var started = Stopwatch.GetTimestamp();
                        await _cinder.DeleteSnapshotAsync(c.BaseName, c.Snapshots[0]);
                        var done = Stopwatch.GetElapsedTime(started).TotalSeconds;
                        processes = $"{_cinder.ProcessCount - before} processes ({_cinder.InfoCount - infos} qemu-img info under prlimit), no fsync";
                        await Proc.RunAsync("sync");
                        results.Get(scenario, "cinder", "engine").Add(done);
                        results.Get(scenario, "cinder + sync", "engine").Add(Stopwatch.GetElapsedTime(started).TotalSeconds);
                    }),
                };
                foreach (var (_, body) in Rotate(steps, run))
                {
                    await SettleAsync(cold: true);
                    await body();
                }
                fx.DeleteVolume(e.Id);
                fx.DeleteVolume(c.Id);
            }
            results.Get(scenario, "cinder").Note = processes;
            results.Get(scenario, "engine").Note = "journal; commit -d; fsync; " + (middle ? "rebase -u; fsync; " : "") + ".info; rm";
        }
    }

    /// <summary>base (raw, 1 GiB) &lt;- A [&lt;- B], with <paramref name="data"/> bytes written into A: deleting
    /// snapshot A merges them into the base.</summary>
    private async Task<BenchVolume> DeleteFixtureAsync(bool middle, long data)
    {
        var v = fx.CreateVolume(Fixtures.GiB);
        var a = await fx.AddSnapshotAsync(v);
        await Fixtures.WriteAsync(fx.PathOf(v.OverlayName(a)), "qcow2", 0, data);
        if (middle)
        {
            await fx.AddSnapshotAsync(v);
        }
        return v;
    }

    // ---- 3. clone from snapshot ------------------------------------------------------------------

    public async Task CloneAsync()
    {
        var data = settings.CloneDataMiB * Fixtures.MiB;
        var scenario = $"clone-from-snapshot ({settings.CloneDataMiB} MiB data, {2 * settings.CloneDataMiB} MiB virtual)";
        const string Cp = "cp --sparse=always + sync";
        output.WriteLine($"running {scenario} x{settings.Runs}");

        // The snapshot's data is the raw base (the only source Cinder 21.3.1 can clone from: a qcow2 source
        // with a backing file fails its format safety check, bug 2074377), so cp copies exactly the bytes.
        var v = fx.CreateVolume(2 * data);
        await Fixtures.WriteAsync(fx.PathOf(v.BaseName), "raw", 0, data);
        var snapshot = await fx.AddSnapshotAsync(v);
        var source = fx.PathOf(v.BaseName);
        var sizeGiB = (int)Math.Max(1, (v.VirtualBytes + Fixtures.GiB - 1) / Fixtures.GiB);

        var defaults = new VolumeEngineOptions();
        var configs = new[] { (Direct: false, M: 8), (Direct: false, M: 1), (Direct: true, M: 8), (Direct: true, M: 1) };
        var steps = new List<(string Name, Func<Task> Body)>();
        var clocks = new List<(string Name, StepClock Clock)>();
        foreach (var (direct, m) in configs)
        {
            var clock = new StepClock();
            var engine = NewEngine(direct, m, clock);
            var name = EngineVariant(direct, m, direct == DefaultDirectIo(defaults) && m == defaults.CopyCoroutines);
            clocks.Add((name, clock));
            steps.Add((name, async () =>
            {
                var target = Guid.NewGuid();
                await results.TimeAsync(scenario, name, Cp, async () =>
                {
                    clock.Start();
                    Expect(await engine.CreateVolumeFromSnapshotAsync(new CreateVolumeFromSnapshotRequest(null, v.Id, snapshot, target) { BaseFormat = ImageFormat.Raw }));
                    clock.Stop();
                });
                fx.DeleteVolume(target);
            }));
        }
        // Diagnostic (--diag): the engine's own qemu-img command line and fsync, without the engine around
        // it (lock, journal, chain read, rename, directory fsync). Tells engine overhead from qemu-img cost.
        if (settings.Diagnostics)
        {
            steps.Add(("engine command", EngineCommandAsync));
        }
        async Task EngineCommandAsync()
        {
            var target = "engine-command-" + Guid.NewGuid().ToString("N");
            List<string> args = ["convert", "-f", "raw", "-O", "raw"];
            if (DefaultDirectIo(defaults))
            {
                args.AddRange(["-t", "none"]);
            }
            args.AddRange(["-W", "-m", defaults.CopyCoroutines.ToString(System.Globalization.CultureInfo.InvariantCulture), "-q", source, fx.PathOf(target)]);
            var started = Stopwatch.GetTimestamp();
            await Proc.RunAsync("qemu-img", args);
            var converted = Stopwatch.GetElapsedTime(started).TotalSeconds;
            NfsVolumeWorker.Storage.Durability.DurableFile.FsyncFile(fx.PathOf(target));
            results.Get(scenario, "diag: engine's qemu-img command, no engine", Cp).Add(converted);
            results.Get(scenario, "diag: engine's qemu-img command + fsync, no engine", Cp).Add(Stopwatch.GetElapsedTime(started).TotalSeconds);
            fx.DeleteFile(target);
        }
        steps.Add(("cinder convert", async () =>
        {
            var target = "cinder-convert-" + Guid.NewGuid().ToString("N");
            var started = Stopwatch.GetTimestamp();
            await _cinder.ConvertAsync(source, fx.PathOf(target));
            var converted = Stopwatch.GetElapsedTime(started).TotalSeconds;
            await Proc.RunAsync("sync");
            results.Get(scenario, "cinder: qemu-img convert -O raw", Cp).Add(converted);
            results.Get(scenario, "cinder: convert + sync", Cp).Add(Stopwatch.GetElapsedTime(started).TotalSeconds);
            fx.DeleteFile(target);
        }));
        steps.Add(("cinder driver", async () =>
        {
            var target = VolumeFileNames.Base(Guid.NewGuid());
            await results.TimeAsync(scenario, "cinder: whole driver sequence, no sync", Cp, () => _cinder.CreateVolumeFromSnapshotAsync(v.BaseName, snapshot, target, sizeGiB));
            fx.DeleteFile(target);
        }));
        steps.Add(("cp", async () =>
        {
            var target = "cp-" + Guid.NewGuid().ToString("N");
            await results.TimeAsync(scenario, Cp, Cp, async () =>
            {
                await Proc.RunAsync("cp", "--sparse=always", source, fx.PathOf(target));
                await Proc.RunAsync("sync");
            });
            fx.DeleteFile(target);
        }));

        for (var run = 0; run < settings.Runs; run++)
        {
            foreach (var (_, body) in Rotate(steps, run))
            {
                await SettleAsync(cold: true);
                await body();
            }
        }
        fx.DeleteVolume(v.Id);
        output.WriteLine("  engine phases (median; clone:copied is after convert and fsync of the copy):");
        foreach (var (name, clock) in clocks)
        {
            output.WriteLine($"    {name}: {clock.Describe()}");
        }
    }

    public static string EngineVariant(bool directIo, int coroutines, bool isDefault) =>
        $"engine: {(directIo ? "O_DIRECT (-t none)" : "page cache + fsync")}, -m {coroutines}{(isDefault ? " (default)" : "")}";

    // ---- 4. sparse scaling -----------------------------------------------------------------------

    public async Task SparseAsync()
    {
        var scenario = $"sparse clone ({settings.SparseDataMiB} MiB data)";
        output.WriteLine($"running {scenario} at {string.Join(", ", settings.SparseSizesGiB)} GiB virtual x{settings.Runs}");
        var engine = NewDefaultEngine();
        var half = settings.SparseDataMiB * Fixtures.MiB / 2;
        var sizes = settings.SparseSizesGiB;
        var volumes = new List<(int SizeGiB, BenchVolume Volume, Guid Snapshot, string Source)>();
        foreach (var size in sizes)
        {
            // base (raw, sparse) with half the data at 0 <- A with the other half in the middle <- B.
            // Snapshot 2's data is A over the base: a qcow2 chain, read the way a real clone reads it.
            var v = fx.CreateVolume(size * Fixtures.GiB);
            await Fixtures.WriteAsync(fx.PathOf(v.BaseName), "raw", 0, half);
            var s1 = await fx.AddSnapshotAsync(v);
            await Fixtures.WriteAsync(fx.PathOf(v.OverlayName(s1)), "qcow2", v.VirtualBytes / 2, half);
            var s2 = await fx.AddSnapshotAsync(v);
            volumes.Add((size, v, s2, fx.PathOf(v.OverlayName(s1))));
        }
        var smallest = sizes[0];
        var allocated = new Dictionary<int, long>();
        for (var run = 0; run < settings.Runs; run++)
        {
            var steps = new List<(string Name, Func<Task> Body)>();
            foreach (var (size, v, snapshot, source) in volumes)
            {
                steps.Add(($"engine {size}", async () =>
                {
                    var target = Guid.NewGuid();
                    await results.TimeAsync(scenario, $"engine, {size} GiB virtual", $"engine, {smallest} GiB virtual", async () =>
                        Expect(await engine.CreateVolumeFromSnapshotAsync(new CreateVolumeFromSnapshotRequest(null, v.Id, snapshot, target) { BaseFormat = ImageFormat.Raw })));
                    allocated[size] = await Fixtures.AllocatedBytesAsync(fx.PathOf(VolumeFileNames.Base(target)));
                    fx.DeleteVolume(target);
                }));
                steps.Add(($"cinder {size}", async () =>
                {
                    var target = "cinder-convert-" + Guid.NewGuid().ToString("N");
                    await results.TimeAsync(scenario, $"cinder convert, {size} GiB virtual", $"cinder convert, {smallest} GiB virtual",
                        () => _cinder.ConvertAsync(source, fx.PathOf(target)));
                    fx.DeleteFile(target);
                }));
            }
            foreach (var (_, body) in Rotate(steps, run))
            {
                await SettleAsync(cold: true);
                await body();
            }
        }
        foreach (var (size, _, _, _) in volumes)
        {
            results.Get(scenario, $"engine, {size} GiB virtual").Note = $"copy occupies {allocated[size] / (double)Fixtures.MiB:0.#} MiB";
        }
        foreach (var (_, v, _, _) in volumes)
        {
            fx.DeleteVolume(v.Id);
        }
    }

    // ---- helpers ---------------------------------------------------------------------------------

    private static void Expect(OperationResult result)
    {
        if (result.Outcome != OperationOutcome.Completed)
        {
            throw new HarnessException($"the engine did no work: {result.Message}");
        }
    }

    /// <summary>The items starting at position <paramref name="by"/> (mod count): each run begins with a different variant.</summary>
    private static IEnumerable<T> Rotate<T>(IReadOnlyList<T> items, int by)
    {
        for (var i = 0; i < items.Count; i++)
        {
            yield return items[(i + by) % items.Count];
        }
    }
}
