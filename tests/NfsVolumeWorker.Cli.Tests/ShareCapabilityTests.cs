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
}
