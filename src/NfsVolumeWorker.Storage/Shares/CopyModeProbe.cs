using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using NfsVolumeWorker.Storage.Durability;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Locking;
using NfsVolumeWorker.Storage.QemuImg;

namespace NfsVolumeWorker.Storage.Shares;

/// <summary>How qemu-img writes a full copy: both are durable before success (O_DIRECT, or fsync after).</summary>
public enum CopyMode
{
    /// <summary><c>qemu-img convert -t none</c>: O_DIRECT, past the page cache.</summary>
    DirectIo,

    /// <summary>Through the page cache, then fsync.</summary>
    PageCache,
}

/// <summary>A measurement of both copy modes on one share and the faster of them.</summary>
/// <param name="Fastest">The mode copies use on this share.</param>
/// <param name="DirectIoBytesPerSecond">Rate with O_DIRECT over all rounds; 0 when the file system refuses O_DIRECT.</param>
/// <param name="PageCacheBytesPerSecond">Rate through the page cache, fsync included, over all rounds.</param>
/// <param name="ProbeBytes">Size of the scratch image copied.</param>
/// <param name="MeasuredAt">When.</param>
public sealed record CopyModeMeasurement(CopyMode Fastest, double DirectIoBytesPerSecond, double PageCacheBytesPerSecond, long ProbeBytes, DateTimeOffset MeasuredAt)
{
    /// <summary>How much faster the page cache must measure to be chosen. The probe flatters it: its image fits in
    /// memory, while a copy of many gigabytes meets the dirty-page limits, and it does not see what the writeback costs
    /// everyone else (on the test VM, with a 4 GiB clone running, a 4 KiB write+fsync beside it had a p99 of 170 ms
    /// with the page cache, 14 ms with O_DIRECT, 2-5 ms idle; the clone itself took 10.6 s against 8.5 s, after a probe
    /// that had measured the page cache 1.5% faster).</summary>
    public const double PageCacheMargin = 1.25;

    /// <summary>O_DIRECT unless the page cache measured more than <see cref="PageCacheMargin"/> times as fast (or
    /// O_DIRECT was refused).</summary>
    public static CopyMode Choose(double directIoBytesPerSecond, double pageCacheBytesPerSecond) =>
        pageCacheBytesPerSecond > directIoBytesPerSecond * PageCacheMargin ? CopyMode.PageCache : CopyMode.DirectIo;

    public string Describe() => string.Create(CultureInfo.InvariantCulture,
        $"copy mode {Name(Fastest)} (measured {Mb(DirectIoBytesPerSecond)} MB/s with O_DIRECT, {Mb(PageCacheBytesPerSecond)} MB/s with page cache + fsync; {ProbeBytes / (1024 * 1024)} MiB at {MeasuredAt:yyyy-MM-ddTHH:mm:ssZ})");

    public static string Name(CopyMode mode) => mode == CopyMode.DirectIo ? "O_DIRECT" : "page cache + fsync";

    private static string Mb(double bytesPerSecond) => (bytesPerSecond / 1e6).ToString("0", CultureInfo.InvariantCulture);
}

/// <summary>
/// Measures which copy mode is faster on a share: a scratch raw image of random data (zeros would be skipped) is
/// copied with qemu-img three times in each mode, alternating, and each mode's rate is its bytes over its total time:
/// the page cache's occasional long fsync (writeback catching up) is part of its cost, not noise. It runs in the worker's
/// <c>tmp</c> directory, removes every file it made whatever happens, and is kept per share and process until it
/// is older than the caller allows (which mode wins changes with the server's load and cache, day to day).
/// </summary>
public static class CopyModeProbe
{
    private const int Rounds = 3;
    private const string ScratchName = "copy-mode-probe";

    /// <summary>A scratch file this old was left by a process killed while measuring (a measurement takes seconds;
    /// younger ones may belong to another instance measuring the same share now).</summary>
    private static readonly TimeSpan Abandoned = TimeSpan.FromHours(1);
    private static readonly ConcurrentDictionary<string, CopyModeMeasurement> Measured = new(StringComparer.Ordinal);
    private static readonly ConcurrentDictionary<string, SemaphoreSlim> Gates = new(StringComparer.Ordinal);

    /// <summary>The latest measurement of this share in this process, or null.</summary>
    public static CopyModeMeasurement? Latest(Share share)
    {
        ArgumentNullException.ThrowIfNull(share);
        return Measured.TryGetValue(share.LocalPath, out var m) ? m : null;
    }

    /// <summary>Keeps <paramref name="measurement"/> as the share's latest (tests set one this way).</summary>
    internal static void Record(Share share, CopyModeMeasurement measurement) => Measured[share.LocalPath] = measurement;

    /// <summary>True when there is no measurement, or it is at least <paramref name="maxAge"/> old.</summary>
    public static bool IsDue(CopyModeMeasurement? latest, DateTimeOffset now, TimeSpan maxAge) =>
        latest is null || now - latest.MeasuredAt >= maxAge;

    /// <summary>The share's measurement, measured now when there is none younger than <paramref name="maxAge"/>
    /// (<see cref="TimeSpan.Zero"/>: always). Concurrent callers for one share wait for one measurement.</summary>
    public static async Task<CopyModeMeasurement> MeasureAsync(Share share, QemuImgRunner qemuImg, long probeBytes, int coroutines, TimeSpan maxAge,
        TimeProvider time, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(share);
        ArgumentNullException.ThrowIfNull(qemuImg);
        ArgumentNullException.ThrowIfNull(time);
        ArgumentOutOfRangeException.ThrowIfLessThan(probeBytes, 1024 * 1024);
        var gate = Gates.GetOrAdd(share.LocalPath, _ => new SemaphoreSlim(1, 1));
        await gate.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            var latest = Latest(share);
            if (!IsDue(latest, time.GetUtcNow(), maxAge))
            {
                return latest!;
            }
            var measured = await RunAsync(share, qemuImg, probeBytes, coroutines, time, ct).ConfigureAwait(false);
            Record(share, measured);
            return measured;
        }
        finally
        {
            gate.Release();
        }
    }

    private static async Task<CopyModeMeasurement> RunAsync(Share share, QemuImgRunner qemuImg, long probeBytes, int coroutines, TimeProvider time, CancellationToken ct)
    {
        var dir = WorkerDirectories.Ensure(share, "tmp");
        RemoveAbandoned(dir, time);
        var source = Path.Combine(dir, DurableFile.TempName(ScratchName));
        var target = Path.Combine(dir, DurableFile.TempName(ScratchName));
        try
        {
            WriteScratchImage(source, probeBytes);
            double directSeconds = 0, pagedSeconds = 0;
            var directRefused = false;
            for (var round = 0; round < Rounds; round++)
            {
                // Alternate the order, so that neither mode always runs on a cache the other warmed.
                foreach (var mode in round % 2 == 0 ? new[] { CopyMode.DirectIo, CopyMode.PageCache } : [CopyMode.PageCache, CopyMode.DirectIo])
                {
                    if (mode == CopyMode.DirectIo && directRefused)
                    {
                        continue;
                    }
                    var seconds = await CopyOnceAsync(qemuImg, source, target, mode, coroutines, time, ct).ConfigureAwait(false);
                    if (mode == CopyMode.PageCache)
                    {
                        pagedSeconds += seconds!.Value;
                    }
                    else if (seconds is { } s)
                    {
                        directSeconds += s;
                    }
                    else
                    {
                        directRefused = true;
                    }
                }
            }
            var direct = directRefused ? 0 : Rounds * probeBytes / Math.Max(directSeconds, 1e-6);
            var paged = Rounds * probeBytes / Math.Max(pagedSeconds, 1e-6);
            return new CopyModeMeasurement(CopyModeMeasurement.Choose(direct, paged), direct, paged, probeBytes, time.GetUtcNow());
        }
        finally
        {
            DurableFile.TryDelete(source);
            DurableFile.TryDelete(target);
        }
    }

    /// <summary>Seconds of one durable copy in <paramref name="mode"/>; null when the file system refuses O_DIRECT.</summary>
    private static async Task<double?> CopyOnceAsync(QemuImgRunner qemuImg, string source, string target, CopyMode mode, int coroutines,
        TimeProvider time, CancellationToken ct)
    {
        DurableFile.TryDelete(target);
        var started = time.GetTimestamp();
        try
        {
            await qemuImg.ConvertAsync(new ConvertRequest(source, ImageFormat.Raw, target, ImageFormat.Raw,
                DirectIo: mode == CopyMode.DirectIo, OutOfOrderWrites: true, Coroutines: coroutines), null, ct).ConfigureAwait(false);
        }
        catch (QemuImgException) when (mode == CopyMode.DirectIo)
        {
            return null; // O_DIRECT refused (tmpfs, some FUSE): the page cache wins
        }
        DurableFile.FsyncFile(target); // both modes end durable, as a clone's copy does
        var elapsed = time.GetElapsedTime(started);
        DurableFile.TryDelete(target);
        return elapsed.TotalSeconds;
    }

    private static void RemoveAbandoned(string dir, TimeProvider time)
    {
        foreach (var file in Directory.EnumerateFiles(dir, $".{ScratchName}.tmp-*"))
        {
            if (time.GetUtcNow().UtcDateTime - File.GetLastWriteTimeUtc(file) > Abandoned)
            {
                DurableFile.TryDelete(file);
            }
        }
    }

    private static void WriteScratchImage(string path, long bytes)
    {
        var chunk = new byte[1024 * 1024];
        Random.Shared.NextBytes(chunk); // random data: qemu-img skips zero blocks, which would measure nothing
        using (var stream = new FileStream(path, new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite }))
        {
            for (long written = 0; written < bytes; written += chunk.Length)
            {
                stream.Write(chunk, 0, (int)Math.Min(chunk.Length, bytes - written));
            }
        }
        DurableFile.FsyncFile(path);
    }
}
