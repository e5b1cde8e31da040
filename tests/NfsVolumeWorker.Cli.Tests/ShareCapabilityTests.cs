using System.Text.Json;
using NfsVolumeWorker.Cli.Tests.Support;

namespace NfsVolumeWorker.Cli.Tests;

/// <summary>`nfsvol check` says what each share's file system offers: extent sharing or not, and free space.</summary>
public sealed class ShareCapabilityTests
{
    private static JsonElement ShareOf(CliRun run)
    {
        Assert.Equal(0, run.ExitCode);
        using var doc = JsonDocument.Parse(run.Stdout);
        return doc.RootElement.GetProperty("shares")[0].Clone();
    }

    [Fact]
    public async Task Check_reports_no_extent_sharing_on_ext4_and_extent_sharing_on_xfs_with_reflink()
    {
        using var plain = new TestShare();
        var onExt4 = ShareOf(await Nfsvol.RunAsync(plain.Args("--json", "check")));
        Assert.False(onExt4.GetProperty("extentSharing").GetBoolean());
        Assert.True(onExt4.GetProperty("freeBytes").GetInt64() > 0);

        using var xfs = new TestShare();
        using var images = new TempDirectory("nfsvol-cli-xfs-");
        using var disk = LoopFileSystem.MountXfsWithReflink(xfs.Path, images.Path, 320L * 1024 * 1024);
        var onXfs = ShareOf(await Nfsvol.RunAsync(xfs.Args("--json", "check")));
        Assert.True(onXfs.GetProperty("extentSharing").GetBoolean());

        var text = await Nfsvol.RunAsync(xfs.Args("check"));
        Assert.Contains("extent sharing (reflink)", text.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Check_reports_server_side_copy_and_with_measure_copy_the_faster_copy_mode_leaving_no_file()
    {
        using var share = new TestShare();
        var plain = ShareOf(await Nfsvol.RunAsync(share.Args("--json", "check")));
        Assert.True(plain.GetProperty("serverSideCopy").GetBoolean(), "copy_file_range works within the test machine's ext4");
        Assert.False(plain.GetProperty("copiesOnServer").GetBoolean(), "the test machine's ext4 copies in this host's kernel, not on a server");
        Assert.Equal(JsonValueKind.Null, plain.GetProperty("copyMode").ValueKind);

        var measured = ShareOf(await Nfsvol.RunAsync(share.Args("--json", "check", "--measure-copy", "--probe-size", "16M")));
        var mode = measured.GetProperty("copyMode");
        var direct = mode.GetProperty("directIoBytesPerSecond").GetDouble();
        var paged = mode.GetProperty("pageCacheBytesPerSecond").GetDouble();
        Assert.True(paged > 0, mode.ToString());
        Assert.Equal(paged > direct * NfsVolumeWorker.Storage.Shares.CopyModeMeasurement.PageCacheMargin ? "PageCache" : "DirectIo", mode.GetProperty("fastest").GetString());
        Assert.Equal(16L * 1024 * 1024, mode.GetProperty("probeBytes").GetInt64());
        Assert.DoesNotContain(Directory.EnumerateFiles(share.Path, "*", SearchOption.AllDirectories), f => f.Contains("probe", StringComparison.Ordinal));

        var text = await Nfsvol.RunAsync(share.Args("check", "--measure-copy", "--probe-size", "16M"));
        Assert.Contains("in-kernel copy (copy_file_range", text.Stdout, StringComparison.Ordinal);
        Assert.Contains("MB/s with O_DIRECT", text.Stdout, StringComparison.Ordinal);
    }
}
