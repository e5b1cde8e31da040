using System.Diagnostics;
using System.Globalization;
using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Storage.Qcow2;
using NfsVolumeWorker.Testing;
using static NfsVolumeWorker.Storage.Tests.Qcow2.Qcow2TestImages;

namespace NfsVolumeWorker.Storage.Tests.Qcow2;

/// <summary>
/// <see cref="ImageHeaderReader.Prefetch"/> (a chain read asks for all headers at once): it really starts the reads,
/// on real files with their pages dropped (<c>dd iflag=nocache</c>, seen with <c>fincore</c>), and it follows nothing
/// that <see cref="ImageHeaderReader.Read(string)"/> refuses.
/// </summary>
public sealed class ImageHeaderPrefetchTests : IDisposable
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);
    private readonly TempDirectory _dir = new("qcow2-prefetch-");

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void Prefetching_reads_the_headers_of_cold_images_into_the_page_cache()
    {
        var images = new[] { Image("volume-a"), Image("volume-b") };
        foreach (var image in images)
        {
            DropFromCache(image);
        }
        Assert.All(images, i => Assert.Equal(0, ResidentBytes(i)));

        ImageHeaderReader.Prefetch(images);

        Assert.All(images, i => Assert.True(WaitUntil(() => ResidentBytes(i) > 0), $"{i}: no page read in within {Patience}"));
    }

    [Fact]
    public async Task Prefetching_skips_a_missing_file_a_symlink_a_directory_and_a_fifo_without_blocking_and_Read_still_refuses_them()
    {
        var linked = Image("volume-linked");
        var link = _dir.File("volume-link");
        File.CreateSymbolicLink(link, linked);
        Directory.CreateDirectory(_dir.File("volume-dir"));
        RequiredTool.RunChecked(RequiredTool.Find("mkfifo", "coreutils"), _dir.File("volume-fifo"));
        var sentinel = Image("volume-sentinel");
        DropFromCache(linked);
        DropFromCache(sentinel);

        // A FIFO opened without O_NONBLOCK would block here until a writer came.
        var prefetch = Task.Run(() => ImageHeaderReader.Prefetch(
            [_dir.File("volume-missing"), link, _dir.File("volume-dir"), _dir.File("volume-fifo"), sentinel]));
        await prefetch.WaitAsync(Patience); // throws TimeoutException when it blocked

        // The sentinel came after the link: once it is read in, a read through the link would have been started too.
        Assert.True(WaitUntil(() => ResidentBytes(sentinel) > 0), "the sentinel after the refused paths was not read in");
        Assert.Equal(0, ResidentBytes(linked));
        Assert.Equal(StorageErrorCode.ChainBroken, ReadFails(_dir.File("volume-missing")));
        Assert.Equal(StorageErrorCode.UnsafePath, ReadFails(link));
        Assert.Equal(StorageErrorCode.UnsafePath, ReadFails(_dir.File("volume-dir")));
        Assert.Equal(StorageErrorCode.UnsafePath, ReadFails(_dir.File("volume-fifo")));
    }

    private string Image(string name)
    {
        var path = _dir.File(name);
        RunQemuImg("create", "-q", "-f", "qcow2", path, "1G");
        RequiredTool.RunChecked(RequiredTool.Find("sync", "coreutils"), path); // clean pages can be dropped
        return path;
    }

    private static StorageErrorCode ReadFails(string path) => Assert.Throws<StorageException>(() => ImageHeaderReader.Read(path)).Code;

    /// <summary>Drops the file's clean pages from the page cache (coreutils documents <c>count=0</c> with nocache so).</summary>
    private static void DropFromCache(string path) =>
        RequiredTool.RunChecked(RequiredTool.Find("dd", "coreutils"), $"if={path}", "iflag=nocache", "count=0", "status=none");

    private static long ResidentBytes(string path)
    {
        var (code, stdout, stderr) = RequiredTool.Run(RequiredTool.Find("fincore", "util-linux"), "--bytes", "--noheadings", "--output", "RES", path);
        Assert.True(code == 0, $"fincore {path}: {stderr}");
        return long.Parse(stdout.Trim(), CultureInfo.InvariantCulture);
    }

    private static bool WaitUntil(Func<bool> condition)
    {
        var started = Stopwatch.GetTimestamp();
        var delay = TimeSpan.FromMilliseconds(1);
        while (!condition())
        {
            if (Stopwatch.GetElapsedTime(started) > Patience)
            {
                return false;
            }
            Thread.Sleep(delay);
            delay = TimeSpan.FromMilliseconds(Math.Min(delay.TotalMilliseconds * 2, 100));
        }
        return true;
    }
}
