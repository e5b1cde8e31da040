using System.Globalization;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Storage.Durability;
using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.QemuImg;
using NfsVolumeWorker.Storage.Shares;

namespace NfsVolumeWorker.Benchmarks;

/// <summary>
/// Clones on a file system that shares extents, side by side in one run: a volume of 4 GiB with 2 GiB in the base
/// and 64 MiB in each of 3 overlays, cloned from the oldest snapshot (the base's data) and from the newest (base and
/// the 3 overlays), by the engine sharing extents, against <c>cp --reflink=always</c> of the base (the limit; also with
/// its directory fsynced, as a durable clone's name must be), the limit plus copying the overlays' 192 MiB from their files (read and written, then fsync: what a clone that copies
/// them costs), and the engine's full copy (<c>Engine:ShareExtents=false</c>). The XFS (<c>mkfs.xfs -m reflink=1</c>)
/// is a sparse image the harness loop-mounts under its working directory. Every timed run starts with the page cache
/// flushed and dropped (<see cref="Bench.SettleAsync"/>), as in the other copy scenarios.
/// </summary>
internal sealed class ReflinkBench(Settings settings, Results results, TextWriter output, string workDir, Bench bench)
{
    public const string Scenario = "reflink clone (4 GiB volume, 2 GiB base, 3 x 64 MiB overlays)";
    public const string Limit = "cp --reflink=always of the base";
    /// <summary>The limit as a durable clone has it: the new name made durable too (its directory fsynced), which
    /// <see cref="Limit"/> (file fsync only) leaves to chance; the engine's target stays against <see cref="Limit"/>.</summary>
    public const string LimitDurableName = "cp --reflink=always of the base + directory fsync";
    /// <summary>What <see cref="Limit"/> asks of the kernel (FICLONE into a new file, fsync of the file), made from this
    /// process: <c>cp</c> and <c>sync</c> without their process starts, which cost 1-7 ms each on these VMs from one
    /// day to the next (a cold page cache reloads their binaries); the engine, in process, pays none.</summary>
    public const string LimitInProcess = "FICLONE + fsync, in process (cp's system calls, no process start)";
    public const string LimitPlusOverlays = "cp --reflink + 192 MiB copied from the overlays + fsync";
    /// <summary>The floor before 2026-12-05: zeroes from /dev/zero, so it read nothing; kept to compare with older figures.</summary>
    public const string LimitPlusZeroes = "cp --reflink + 192 MiB of zeroes written + fsync";
    private const string Export = "bench:/xfs";

    public async Task RunAsync()
    {
        if (Environment.UserName != "root")
        {
            output.WriteLine("reflink     skipped: loop-mounting an XFS needs root");
            return;
        }
        var dataMiB = settings.Quick ? 512 : 2048;
        var overlayMiB = settings.Quick ? 16 : 64;
        var mount = Path.Combine(workDir, "xfs");
        var image = Path.Combine(workDir, "xfs.img");
        Directory.CreateDirectory(mount);
        using (var f = File.Create(image))
        {
            f.SetLength(3L * dataMiB * Fixtures.MiB + 1024 * Fixtures.MiB);
        }
        await Proc.RunAsync("mkfs.xfs", "-q", "-f", "-m", "reflink=1", image);
        await Proc.RunAsync("mount", "-o", "loop", image, mount);
        try
        {
            await MeasureAsync(new Fixtures(mount), dataMiB, overlayMiB);
        }
        finally
        {
            await Proc.RunAsync("umount", ["-l", mount], check: false);
            File.Delete(image);
        }
    }

    private static VolumeEngine Engine(string dir, bool share) => new(
        new ShareMap([new Share(Export, dir, null)]),
        new QemuImgRunner(Options.Create(new QemuImgOptions()), NullLogger<QemuImgRunner>.Instance),
        // The full copy reads and writes, as before: copy_file_range on XFS would share extents too.
        Options.Create(new VolumeEngineOptions { ShareExtents = share, ServerSideCopy = share, CopyWithDirectIo = true }), NullLogger<VolumeEngine>.Instance);

    private async Task MeasureAsync(Fixtures fx, int dataMiB, int overlayMiB)
    {
        output.WriteLine($"running {Scenario} x{settings.Runs} ({dataMiB} MiB base, {overlayMiB} MiB per overlay)");
        var v = fx.CreateVolume(2L * dataMiB * Fixtures.MiB);
        await Fixtures.WriteAsync(fx.PathOf(v.BaseName), "raw", 0, dataMiB * Fixtures.MiB);
        var oldest = await fx.AddSnapshotAsync(v);
        Guid newest = oldest;
        for (var i = 0; i < 3; i++)
        {
            var active = v.OverlayName(newest);
            await Fixtures.WriteAsync(fx.PathOf(active), "qcow2", (long)(dataMiB + (i * overlayMiB)) * Fixtures.MiB, overlayMiB * Fixtures.MiB);
            newest = await fx.AddSnapshotAsync(v);
        }
        await Proc.RunAsync("sync");
        var sharing = Engine(fx.Dir, share: true);
        var copying = Engine(fx.Dir, share: false);
        var overlayBytes = 3L * overlayMiB * Fixtures.MiB;
        // The floor copies each overlay's data from where qemu-io put it in the file to where the guest sees it.
        var overlayData = new List<(string File, MapExtent Extent)>();
        var qemuImg = new QemuImgRunner(Options.Create(new QemuImgOptions()), NullLogger<QemuImgRunner>.Instance);
        foreach (var written in v.Snapshots.Take(3))
        {
            var file = fx.PathOf(v.OverlayName(written)); // the overlay that was active when that data was written
            overlayData.AddRange((await qemuImg.MapAsync(file, ImageFormat.Qcow2)).Where(e => e.Depth == 0 && e.Data).Select(e => (file, e)));
        }
        if (overlayData.Sum(d => d.Extent.Length) != overlayBytes || overlayData.Any(d => d.Extent.Offset is null))
        {
            throw new HarnessException($"the overlays do not hold the {overlayBytes} bytes of data the floor copies");
        }

        // Untimed: a process's first operation on a share probes it (marker, capabilities), once per process, not
        // per clone; timed, it made the first run of the engine's row 50+ ms.
        var probe = Guid.NewGuid();
        Check(await sharing.CreateVolumeFromSnapshotAsync(new CreateVolumeFromSnapshotRequest(Export, v.Id, oldest, probe) { BaseFormat = ImageFormat.Raw }), true);
        fx.DeleteVolume(probe);

        for (var run = 0; run < settings.Runs; run++)
        {
            await bench.SettleAsync(cold: true);
            await results.TimeAsync(Scenario, Limit, null, async () =>
            {
                await Proc.RunAsync("cp", "--reflink=always", fx.PathOf(v.BaseName), fx.PathOf("limit"));
                await Proc.RunAsync("sync", fx.PathOf("limit"));
            });
            fx.DeleteFile("limit");
            await bench.SettleAsync(cold: true);
            await results.TimeAsync(Scenario, LimitDurableName, Limit, async () =>
            {
                await Proc.RunAsync("cp", "--reflink=always", fx.PathOf(v.BaseName), fx.PathOf("limit"));
                await Proc.RunAsync("sync", fx.PathOf("limit"), fx.Dir); // sync fsyncs each argument, the directory too
            });
            fx.DeleteFile("limit");
            await bench.SettleAsync(cold: true);
            await results.TimeAsync(Scenario, LimitInProcess, Limit, () =>
            {
                if (!ExtentSharing.TryClone(fx.PathOf(v.BaseName), fx.PathOf("limit"), UnixFileMode.UserRead | UnixFileMode.UserWrite))
                {
                    throw new HarnessException("FICLONE refused on the benchmark's XFS");
                }
                DurableFile.FsyncFile(fx.PathOf("limit"));
                return Task.CompletedTask;
            });
            fx.DeleteFile("limit");
            await bench.SettleAsync(cold: true);
            await results.TimeAsync(Scenario, LimitPlusOverlays, null, async () =>
            {
                await Proc.RunAsync("cp", "--reflink=always", fx.PathOf(v.BaseName), fx.PathOf("limit"));
                foreach (var (file, e) in overlayData)
                {
                    await Proc.RunAsync("dd", $"if={file}", $"of={fx.PathOf("limit")}", "bs=1M", "iflag=skip_bytes,count_bytes", "oflag=seek_bytes",
                        $"skip={e.Offset}", $"seek={e.Start}", $"count={e.Length}", "conv=notrunc", "status=none");
                }
                await Proc.RunAsync("sync", fx.PathOf("limit"));
            });
            fx.DeleteFile("limit");
            await bench.SettleAsync(cold: true);
            await results.TimeAsync(Scenario, LimitPlusZeroes, null, async () =>
            {
                await Proc.RunAsync("cp", "--reflink=always", fx.PathOf(v.BaseName), fx.PathOf("limit"));
                await Proc.RunAsync("dd", "if=/dev/zero", $"of={fx.PathOf("limit")}", "bs=1M", $"seek={dataMiB}",
                    $"count={overlayBytes / Fixtures.MiB}", "conv=notrunc,fsync", "status=none");
            });
            fx.DeleteFile("limit");
            foreach (var (name, snapshot) in new[] { ("oldest", oldest), ("newest", newest) })
            {
                var target = Guid.NewGuid();
                await bench.SettleAsync(cold: true);
                await results.TimeAsync(Scenario, $"engine, sharing extents, from the {name} snapshot", name == "oldest" ? Limit : LimitPlusOverlays,
                    async () => Check(await sharing.CreateVolumeFromSnapshotAsync(new CreateVolumeFromSnapshotRequest(Export, v.Id, snapshot, target) { BaseFormat = ImageFormat.Raw }), true));
                fx.DeleteVolume(target);
            }
            if (run < Math.Min(settings.Runs, 2))
            {
                // The full copy is slow (2 GiB through the disk): two runs are enough to see the ratio.
                foreach (var (name, snapshot) in new[] { ("oldest", oldest), ("newest", newest) })
                {
                    var target = Guid.NewGuid();
                    await bench.SettleAsync(cold: true);
                    await results.TimeAsync(Scenario, $"engine, full copy (ShareExtents=false), from the {name} snapshot", $"engine, sharing extents, from the {name} snapshot",
                        async () => Check(await copying.CreateVolumeFromSnapshotAsync(new CreateVolumeFromSnapshotRequest(Export, v.Id, snapshot, target) { BaseFormat = ImageFormat.Raw }), false));
                    fx.DeleteVolume(target);
                }
            }
        }
        fx.DeleteVolume(v.Id);
    }

    private static void Check(OperationResult result, bool shared)
    {
        if (result.Message.Contains("shared the base's extents", StringComparison.Ordinal) != shared)
        {
            throw new HarnessException($"expected the clone {(shared ? "to share extents" : "to copy")}: {result.Message}");
        }
    }

    public static void PrintTargets(Results results, TextWriter output, Action<TextWriter, string, string, string, bool> line)
    {
        if (results.Find(Scenario, Limit) is null)
        {
            return;
        }
        var oldest = results.Ratio(Scenario, "engine, sharing extents, from the oldest snapshot", Limit);
        var oldestVsDurable = results.Ratio(Scenario, "engine, sharing extents, from the oldest snapshot", LimitDurableName);
        var oldestVsSyscalls = results.Ratio(Scenario, "engine, sharing extents, from the oldest snapshot", LimitInProcess);
        var newest = results.Ratio(Scenario, "engine, sharing extents, from the newest snapshot", LimitPlusOverlays);
        var newestVsZeroes = results.Ratio(Scenario, "engine, sharing extents, from the newest snapshot", LimitPlusZeroes);
        var oldestVsCopy = results.Ratio(Scenario, "engine, full copy (ShareExtents=false), from the oldest snapshot", "engine, sharing extents, from the oldest snapshot");
        var newestVsCopy = results.Ratio(Scenario, "engine, full copy (ShareExtents=false), from the newest snapshot", "engine, sharing extents, from the newest snapshot");
        foreach (var variant in new[] { Limit, LimitInProcess, "engine, sharing extents, from the oldest snapshot" })
        {
            output.WriteLine($"runs in order, {variant}: {string.Join(", ", results.Find(Scenario, variant)?.Samples.Select(Results.Ms) ?? [])}");
        }
        line(output, "reflink clone from the oldest snapshot vs cp --reflink", string.Create(CultureInfo.InvariantCulture, $"{oldest:0.00}x"), "target <= 2x", oldest <= 2);
        output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"reflink clone from the oldest snapshot vs cp --reflink + directory fsync (the name durable too) {oldestVsDurable:0.00}x"));
        output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"reflink clone from the oldest snapshot vs FICLONE + fsync in process (no process start on either side) {oldestVsSyscalls:0.00}x"));
        line(output, "reflink clone from the newest snapshot vs cp --reflink + 192 MiB copied", string.Create(CultureInfo.InvariantCulture, $"{newest:0.00}x"), "target <= 2x", newest <= 2);
        output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"reflink clone from the newest snapshot vs cp --reflink + 192 MiB of zeroes (the floor before 2026-12-05) {newestVsZeroes:0.00}x"));
        line(output, "reflink clone from the oldest snapshot: speedup vs full copy", string.Create(CultureInfo.InvariantCulture, $"{oldestVsCopy:0.0}x"), "target >= 20x", oldestVsCopy >= 20);
        // The sharing clone shares the overlays' clusters too (it writes no data), so the full copy's ratio is not bounded by them.
        line(output, "reflink clone from the newest snapshot: speedup vs full copy", string.Create(CultureInfo.InvariantCulture, $"{newestVsCopy:0.0}x"), "target >= 20x", newestVsCopy >= 20);
    }
}
