using System.Text.Json;
using NfsVolumeWorker.Cli.Tests.Support;

namespace NfsVolumeWorker.Cli.Tests;

/// <summary>`nfsvol diff`: the byte ranges written between two points, as a table with totals and as JSON.</summary>
public sealed class DiffTests
{
    [Fact]
    public async Task Diff_lists_what_was_written_after_a_snapshot_with_totals()
    {
        using var share = new TestShare();
        var volume = TestShare.Id();
        var snapshot = TestShare.Id();
        await TestShare.Ok(share.Args("volume", "create", volume, "--size", "16M"));
        await TestShare.Ok(share.Args("snapshot", "create", volume, snapshot));
        RequiredTool.RunChecked("qemu-io", "-f", "qcow2", "-c", "write -P 0x42 4M 2M", share.File(TestShare.Overlay(volume, snapshot)));

        var json = await Nfsvol.RunAsync(share.Args("--json", "diff", volume, snapshot, "active"));
        Assert.Equal(0, json.ExitCode);
        using var doc = JsonDocument.Parse(json.Stdout);
        var root = doc.RootElement;
        Assert.Equal(2 * 1024 * 1024, root.GetProperty("totalBytes").GetInt64());
        var extent = Assert.Single(root.GetProperty("extents").EnumerateArray().ToList());
        Assert.Equal(4 * 1024 * 1024, extent.GetProperty("offset").GetInt64());
        Assert.Equal(2 * 1024 * 1024, extent.GetProperty("length").GetInt64());

        var text = await Nfsvol.RunAsync(share.Args("diff", volume, "base", "active"));
        Assert.Equal(0, text.ExitCode);
        Assert.Contains("1 range(s)", text.Stdout, StringComparison.Ordinal);
        Assert.Contains("4194304", text.Stdout, StringComparison.Ordinal);

        var backwards = await Nfsvol.RunAsync(share.Args("diff", volume, "active", snapshot));
        Assert.Equal(2, backwards.ExitCode); // a usage error: InvalidRequest
        Assert.Contains("older point first", backwards.Stderr, StringComparison.Ordinal);
    }
}
