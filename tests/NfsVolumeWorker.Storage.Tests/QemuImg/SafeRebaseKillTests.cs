using System.Diagnostics;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.QemuImg;
using NfsVolumeWorker.Testing;
using static NfsVolumeWorker.Storage.Tests.QemuImg.QemuImgFixture;

namespace NfsVolumeWorker.Storage.Tests.QemuImg;

/// <summary>
/// The pull-up rebases a live image in place (docs/merges.md), so a kill anywhere in <c>qemu-img rebase</c> must leave
/// it reading as it did. With qemu's default write-back cache it did not: qemu-img rewrote the backing reference and
/// flushed the file before it wrote the cluster tables of what it had copied, and a kill in that window left the image
/// naming the new backing file without the copied clusters.
/// </summary>
public sealed class SafeRebaseKillTests : IDisposable
{
    private const int Kills = 14;
    private readonly TempDirectory _dir = new("rebase-kill-");
    private readonly QemuImgRunner _runner = Runner();

    public void Dispose() => _dir.Dispose();

    /// <summary>The image's chain as the guest sees it: the lower image's data over the base's, and the image's own.</summary>
    private static readonly (byte Pattern, long Offset, long Length)[] Expected =
    [
        (0x22, 0, 16 * MiB),       // the lower image's: what the rebase copies
        (0x11, 16 * MiB, 4 * MiB), // the base's, shown through both
        (0x00, 20 * MiB, 4 * MiB),
        (0x33, 24 * MiB, 4 * MiB), // the image's own
        (0x00, 28 * MiB, 4 * MiB),
    ];

    [Fact]
    public async Task A_safe_rebase_killed_anywhere_in_its_run_leaves_the_image_reading_as_it_did()
    {
        var template = await SetUpAsync(Directory.CreateDirectory(_dir.File("template")).FullName);
        // One run to the end: it reads as before, and its length spreads the kills below over the whole run.
        var image = CopyOf(template, "full");
        var watch = Stopwatch.StartNew();
        await _runner.RebaseAsync(image, "base.raw", ImageFormat.Raw);
        var length = watch.Elapsed;
        Assert.Equal("base.raw", (await _runner.InfoAsync(image, ImageFormat.Qcow2)).BackingFilename);
        AssertReadsAsBefore(image, "after a finished rebase");

        var interrupted = 0;
        for (var k = 0; k < Kills; k++)
        {
            image = CopyOf(template, $"kill-{k}");
            using var kill = new CancellationTokenSource(length * k / (Kills - 2)); // the last kills come after the end
            try
            {
                await _runner.RebaseAsync(image, "base.raw", ImageFormat.Raw, cancellationToken: kill.Token);
            }
            catch (OperationCanceledException)
            {
                interrupted++;
            }
            var backing = (await _runner.InfoAsync(image, ImageFormat.Qcow2)).BackingFilename;
            AssertReadsAsBefore(image, $"after a kill at {k}/{Kills - 2} of the run (backing file now {backing})");
        }
        // The runner kills with SIGKILL; a sweep in which nothing was killed would have tested nothing.
        Assert.True(interrupted > 0, $"none of the {Kills} kills landed inside a rebase of {length.TotalMilliseconds:F0} ms");
    }

    /// <summary>Base, lower image and image, in <paramref name="dir"/>; returns the image's path.</summary>
    private async Task<string> SetUpAsync(string dir)
    {
        var basePath = Path.Combine(dir, "base.raw");
        var lower = Path.Combine(dir, "lower.qcow2");
        var image = Path.Combine(dir, "image.qcow2");
        await _runner.CreateAsync(new CreateImageRequest(basePath, ImageFormat.Raw, 32 * MiB));
        Write(basePath, "raw", 0x11, 0, 20 * MiB);
        await _runner.CreateAsync(new CreateImageRequest(lower, ImageFormat.Qcow2, 32 * MiB, "base.raw", ImageFormat.Raw));
        Write(lower, "qcow2", 0x22, 0, 16 * MiB);
        await _runner.CreateAsync(new CreateImageRequest(image, ImageFormat.Qcow2, 32 * MiB, "lower.qcow2", ImageFormat.Qcow2));
        Write(image, "qcow2", 0x33, 24 * MiB, 4 * MiB);
        AssertReadsAsBefore(image, "before the rebase");
        return image;
    }

    /// <summary>The template's three files in a directory of their own (the backing references are relative).</summary>
    private string CopyOf(string templateImage, string name)
    {
        var dir = Directory.CreateDirectory(_dir.File(name)).FullName;
        foreach (var file in Directory.GetFiles(Path.GetDirectoryName(templateImage)!))
        {
            File.Copy(file, Path.Combine(dir, Path.GetFileName(file)));
        }
        return Path.Combine(dir, Path.GetFileName(templateImage));
    }

    /// <summary>Every range of <see cref="Expected"/> checked by one qemu-io.</summary>
    private static void AssertReadsAsBefore(string image, string when) =>
        Assert.True(ReadsAll(image, "qcow2", Expected, out var output),
            $"{when}: the image no longer reads as it did ({string.Join(", ", Expected.Select(e => $"0x{e.Pattern:x2} at {e.Offset / MiB} MiB"))}): {output}");
}
