using System.Text.Json;
using NfsVolumeWorker.Cli.Tests.Support;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Locking;
using NfsVolumeWorker.Storage.Shares;

namespace NfsVolumeWorker.Cli.Tests;

public sealed class ChainAndOperationTests
{
    [Fact]
    public async Task Chain_json_after_two_snapshots_lists_the_active_overlay_first_and_which_snapshot_each_image_holds()
    {
        using var share = new TestShare();
        var (volume, first, second) = await share.VolumeWithTwoSnapshotsAsync();

        var run = await TestShare.Ok(share.Args("chain", volume, "--json"));

        using var doc = JsonDocument.Parse(run.Stdout);
        var root = doc.RootElement;
        Assert.Equal(volume, root.GetProperty("volumeId").GetString());
        Assert.Equal(TestShare.Overlay(volume, second), root.GetProperty("active").GetString());
        Assert.Equal(TestShare.Overlay(volume, first), root.GetProperty("snapshots").GetProperty(first).GetString());
        var images = root.GetProperty("images").EnumerateArray().ToList();
        Assert.Equal(3, images.Count);

        Assert.Equal(TestShare.Overlay(volume, second), images[0].GetProperty("file").GetString());
        Assert.True(images[0].GetProperty("active").GetBoolean());
        Assert.Equal(second, images[0].GetProperty("overlayOfSnapshot").GetString());
        Assert.Equal(JsonValueKind.Null, images[0].GetProperty("dataOfSnapshot").ValueKind);
        Assert.Equal(TestShare.Overlay(volume, first), images[0].GetProperty("backingFile").GetString());

        Assert.Equal(TestShare.Overlay(volume, first), images[1].GetProperty("file").GetString());
        Assert.Equal(first, images[1].GetProperty("overlayOfSnapshot").GetString());
        Assert.Equal(second, images[1].GetProperty("dataOfSnapshot").GetString());
        Assert.Equal("qcow2", images[1].GetProperty("format").GetString());

        Assert.Equal(TestShare.Base(volume), images[2].GetProperty("file").GetString());
        Assert.Equal("raw", images[2].GetProperty("format").GetString());
        Assert.Equal(first, images[2].GetProperty("dataOfSnapshot").GetString());
        Assert.Equal(JsonValueKind.Null, images[2].GetProperty("backingFile").ValueKind);
        Assert.All(images, i => Assert.Equal(16L << 20, i.GetProperty("virtualSize").GetInt64()));
        Assert.All(images, i => Assert.True(i.GetProperty("allocatedBytes").GetInt64() >= 0));
        Assert.Empty(root.GetProperty("problems").EnumerateArray());
    }

    [Fact]
    public async Task Chain_without_json_draws_a_tree_with_the_active_image_at_the_top()
    {
        using var share = new TestShare();
        var (volume, first, second) = await share.VolumeWithTwoSnapshotsAsync();
        var run = await TestShare.Ok(share.Args("chain", volume));
        var top = run.Stdout.IndexOf(TestShare.Overlay(volume, second), StringComparison.Ordinal);
        var middle = run.Stdout.IndexOf(TestShare.Overlay(volume, first) + ",", StringComparison.Ordinal);
        Assert.True(top >= 0 && middle > top, run.ToString());
        Assert.Contains("(active)", run.Stdout);
        Assert.Contains($"holds data of snapshot {first}", run.Stdout);
    }

    [Fact]
    public async Task Operations_print_their_result_as_json()
    {
        using var share = new TestShare();
        var (volume, first, second) = await share.VolumeWithTwoSnapshotsAsync("qcow2");
        var clone = TestShare.Id();

        var run = await TestShare.Ok(share.Args("--json", "snapshot", "clone", volume, first, clone, "--format", "qcow2", "--size", "32M"));
        using (var doc = JsonDocument.Parse(run.Stdout))
        {
            Assert.Equal("Completed", doc.RootElement.GetProperty("outcome").GetString());
            Assert.Equal(TestShare.Base(clone), doc.RootElement.GetProperty("activeFile").GetString());
        }
        Assert.Contains("\"virtual-size\": 33554432", share.Qemu("info", "--output=json", "-f", "qcow2", share.File(TestShare.Base(clone))));

        run = await TestShare.Ok(share.Args("--json", "snapshot", "delete", volume, first));
        using (var doc = JsonDocument.Parse(run.Stdout))
        {
            Assert.Equal(TestShare.Overlay(volume, second), doc.RootElement.GetProperty("activeFile").GetString());
        }
        await TestShare.Ok(share.Args("snapshot", "revert", volume, second));
        await TestShare.Ok(share.Args("volume", "extend", volume, "--size", "32M"));
        run = await TestShare.Ok(share.Args("--json", "connection-info", volume, "--size", "32M"));
        using (var doc = JsonDocument.Parse(run.Stdout))
        {
            Assert.Equal("nfs", doc.RootElement.GetProperty("driver_volume_type").GetString());
            Assert.Equal(TestShare.Overlay(volume, second), doc.RootElement.GetProperty("data").GetProperty("name").GetString());
            Assert.Equal("qcow2", doc.RootElement.GetProperty("data").GetProperty("format").GetString());
        }
        await TestShare.Ok(share.Args("volume", "clone", volume, TestShare.Id()));
        run = await TestShare.Ok(share.Args("--json", "volume", "delete", clone));
        Assert.False(File.Exists(share.File(TestShare.Base(clone))));
        Assert.Equal(0, (await Nfsvol.RunAsync(share.Args("check"))).ExitCode);
    }

    [Fact]
    public async Task Revert_to_a_snapshot_that_does_not_exist_fails_with_exit_code_3()
    {
        using var share = new TestShare();
        var (volume, _, _) = await share.VolumeWithTwoSnapshotsAsync();
        var run = await Nfsvol.RunAsync(share.Args("--json", "snapshot", "revert", volume, TestShare.Id()));
        Assert.Equal(3, run.ExitCode);
        Assert.Contains("SnapshotNotFound", run.Stderr);
        using var doc = JsonDocument.Parse(run.Stdout);
        Assert.Equal("SnapshotNotFound", doc.RootElement.GetProperty("error").GetProperty("code").GetString());
    }

    [Fact]
    public async Task A_connection_info_size_mismatch_fails_with_exit_code_3()
    {
        using var share = new TestShare();
        var volume = TestShare.Id();
        await TestShare.Ok(share.Args("volume", "create", volume, "--size", "1M"));
        var run = await Nfsvol.RunAsync(share.Args("connection-info", volume, "--size", "2M"));
        Assert.Equal(3, run.ExitCode);
        Assert.Contains("SizeMismatch", run.Stderr);
    }

    [Fact]
    public async Task A_volume_whose_lock_is_held_elsewhere_is_busy_with_exit_code_4()
    {
        using var share = new TestShare();
        var volume = TestShare.Id();
        await TestShare.Ok(share.Args("volume", "create", volume, "--size", "1M"));
        var s = ShareMap.FromDefinition("/unused", share.Path, null, null);
        // Waits, not TimeSpan.Zero: a qemu-img started by a test running beside this one (same process) is forked
        // with a copy of every descriptor until it execs, so the lock `volume create` just released can look held
        // for an instant. What this test checks is the CLI's answer while the lock is held.
        using (await VolumeLock.AcquireAsync(s, Ids.Parse(volume, "volume id"), TimeSpan.FromSeconds(30), CancellationToken.None))
        {
            var run = await Nfsvol.RunAsync(share.Args("--lock-timeout", "0", "snapshot", "create", volume, TestShare.Id()));
            Assert.Equal(4, run.ExitCode);
            Assert.Contains("VolumeBusy", run.Stderr);
        }
    }
}
