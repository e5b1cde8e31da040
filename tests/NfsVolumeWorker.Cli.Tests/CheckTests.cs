using System.Text.Json;
using NfsVolumeWorker.Cli.Tests.Support;

namespace NfsVolumeWorker.Cli.Tests;

public sealed class CheckTests
{
    private static List<JsonElement> Findings(CliRun run, string list = "findings")
    {
        using var doc = JsonDocument.Parse(run.Stdout);
        return [.. doc.RootElement.GetProperty(list).EnumerateArray().Select(e => e.Clone())];
    }

    private static JsonElement Single(CliRun run, string kind) =>
        Assert.Single(Findings(run), f => f.GetProperty("kind").GetString() == kind);

    /// <summary>qemu-img can open the whole chain from the active image (explicit format, as the engine would).</summary>
    private static void ChainOpens(TestShare share, string activeFile, int expectedImages)
    {
        var json = share.Qemu("info", "--backing-chain", "--output=json", "-f", "qcow2", share.File(activeFile));
        using var doc = JsonDocument.Parse(json);
        Assert.Equal(expectedImages, doc.RootElement.GetArrayLength());
    }

    [Fact]
    public async Task A_healthy_share_checks_clean_with_exit_code_0()
    {
        using var share = new TestShare();
        await share.VolumeWithTwoSnapshotsAsync();
        var run = await Nfsvol.RunAsync(share.Args("check", "--json"));
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Empty(Findings(run));
        Assert.True(JsonDocument.Parse(run.Stdout).RootElement.GetProperty("healthy").GetBoolean());
    }

    [Fact]
    public async Task Check_finds_an_orphan_overlay_and_repair_removes_it()
    {
        using var share = new TestShare();
        var (volume, _, second) = await share.VolumeWithTwoSnapshotsAsync();
        // A crash after creating the overlay, before the .info write: an overlay on the active image nobody records.
        var orphan = TestShare.Overlay(volume, TestShare.Id());
        share.Qemu("create", "-q", "-f", "qcow2", "-b", TestShare.Overlay(volume, second), "-F", "qcow2", share.File(orphan), "16M");

        var run = await Nfsvol.RunAsync(share.Args("check", "--json"));
        Assert.True(run.ExitCode == 1, run.ToString());
        var finding = Single(run, "OrphanOverlay");
        Assert.Equal(orphan, finding.GetProperty("file").GetString());
        Assert.True(finding.GetProperty("repairable").GetBoolean());
        Assert.True(File.Exists(share.File(orphan)), "check without --repair changes nothing");

        run = await Nfsvol.RunAsync(share.Args("check", "--repair", "--json"));
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.False(File.Exists(share.File(orphan)));
        var repair = Assert.Single(Findings(run, "repairs"));
        Assert.Contains("removed " + orphan, repair.GetProperty("action").GetString());
        Assert.Equal(0, (await Nfsvol.RunAsync(share.Args("check"))).ExitCode);
        ChainOpens(share, TestShare.Overlay(volume, second), 3);
    }

    [Fact]
    public async Task Check_finds_a_truncated_info_file_and_repair_rebuilds_it_from_the_headers()
    {
        using var share = new TestShare();
        var (volume, _, second) = await share.VolumeWithTwoSnapshotsAsync();
        var infoPath = share.File(TestShare.Info(volume));
        var original = await File.ReadAllTextAsync(infoPath);
        // Cinder rewrites .info in place: a crash mid-write leaves it truncated.
        await File.WriteAllTextAsync(infoPath, original[..(original.Length / 2)]);

        var run = await Nfsvol.RunAsync(share.Args("check", "--json"));
        Assert.True(run.ExitCode == 1, run.ToString());
        var finding = Single(run, "InfoFileCorrupt");
        Assert.Equal("Error", finding.GetProperty("severity").GetString());
        Assert.True(finding.GetProperty("repairable").GetBoolean());
        Assert.Equal(3, (await Nfsvol.RunAsync(share.Args("chain", volume))).ExitCode);

        run = await Nfsvol.RunAsync(share.Args("check", "--repair"));
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Equal(original, await File.ReadAllTextAsync(infoPath));
        ChainOpens(share, TestShare.Overlay(volume, second), 3);
        Assert.Equal(0, (await Nfsvol.RunAsync(share.Args("check"))).ExitCode);
    }

    [Fact]
    public async Task Check_finds_an_empty_info_file_and_repair_rebuilds_it()
    {
        using var share = new TestShare();
        var (volume, _, _) = await share.VolumeWithTwoSnapshotsAsync("qcow2");
        var infoPath = share.File(TestShare.Info(volume));
        var original = await File.ReadAllTextAsync(infoPath);
        await File.WriteAllTextAsync(infoPath, "");

        var run = await Nfsvol.RunAsync(share.Args("check", "--volume", volume, "--repair"));
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Equal(original, await File.ReadAllTextAsync(infoPath));
    }

    [Fact]
    public async Task Check_finds_a_leftover_temp_file_and_repair_removes_it()
    {
        using var share = new TestShare();
        var (volume, _, _) = await share.VolumeWithTwoSnapshotsAsync();
        var temp = $".{TestShare.Info(volume)}.tmp-{Guid.NewGuid():N}";
        await File.WriteAllTextAsync(share.File(temp), "{\"act");

        var run = await Nfsvol.RunAsync(share.Args("check", "--json"));
        Assert.Equal(1, run.ExitCode);
        Assert.Equal(temp, Single(run, "TempFile").GetProperty("file").GetString());

        run = await Nfsvol.RunAsync(share.Args("check", "--repair"));
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.False(File.Exists(share.File(temp)));
    }

    [Fact]
    public async Task An_info_file_naming_a_foreign_file_is_a_security_refusal_that_repair_never_touches()
    {
        using var share = new TestShare();
        var (volume, _, _) = await share.VolumeWithTwoSnapshotsAsync();
        var infoPath = share.File(TestShare.Info(volume));
        var hostile = "{\n \"active\": \"../../etc/shadow\"\n}";
        await File.WriteAllTextAsync(infoPath, hostile);

        var run = await Nfsvol.RunAsync(share.Args("check", "--repair", "--json"));
        Assert.True(run.ExitCode == 1, run.ToString());
        var finding = Single(run, "SecurityRefusal");
        Assert.False(finding.GetProperty("repairable").GetBoolean());
        Assert.Empty(Findings(run, "repairs"));
        Assert.Equal(hostile, await File.ReadAllTextAsync(infoPath));
    }

    [Fact]
    public async Task A_recorded_snapshot_whose_overlay_is_gone_is_a_stale_record_that_repair_drops()
    {
        using var share = new TestShare();
        var (volume, first, second) = await share.VolumeWithTwoSnapshotsAsync();
        var ghost = TestShare.Id();
        var infoPath = share.File(TestShare.Info(volume));
        var text = await File.ReadAllTextAsync(infoPath);
        await File.WriteAllTextAsync(infoPath, text.Replace("{\n", $"{{\n \"{ghost}\": \"{TestShare.Overlay(volume, ghost)}\",\n", StringComparison.Ordinal));

        var run = await Nfsvol.RunAsync(share.Args("check", "--json"));
        Assert.Equal(1, run.ExitCode);
        Assert.True(Single(run, "StaleSnapshotRecord").GetProperty("repairable").GetBoolean());

        run = await Nfsvol.RunAsync(share.Args("check", "--repair"));
        Assert.True(run.ExitCode == 0, run.ToString());
        var repaired = await File.ReadAllTextAsync(infoPath);
        Assert.DoesNotContain(ghost, repaired);
        Assert.Contains(first, repaired);
        Assert.Contains(second, repaired);
    }

    [Fact]
    public async Task A_missing_backing_file_left_by_a_cinder_middle_delete_crash_is_re_pointed_by_the_nfsvol_process()
    {
        using var share = new TestShare();
        var (volume, first, second) = await share.VolumeWithTwoSnapshotsAsync();
        var middle = share.File(TestShare.Overlay(volume, first));
        var top = TestShare.Overlay(volume, second);
        share.Qemu("create", "-q", "-f", "qcow2", "-b", TestShare.Base(volume), "-F", "raw", share.File("unrelated-file-that-is-not-a-volume"), "16M");
        // What Cinder does for a middle snapshot: commit the overlay into its backing file, delete it...
        share.Qemu("commit", "-q", "-d", "-f", "qcow2", middle);
        File.Delete(middle);
        // ...and crash before 'qemu-img rebase -u' of the top: it still names the deleted file.
        Assert.NotEqual(0, RequiredTool.Run(share.QemuImg, "info", "--backing-chain", "-f", "qcow2", share.File(top)).ExitCode);

        var run = await Nfsvol.RunProcessAsync(share.Args("check", "--json"));
        Assert.True(run.ExitCode == 1, run.ToString());
        var finding = Single(run, "BackingFileMissing");
        Assert.Equal(top, finding.GetProperty("file").GetString());
        Assert.True(finding.GetProperty("repairable").GetBoolean());

        run = await Nfsvol.RunProcessAsync(share.Args("check", "--repair"));
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Contains("re-pointed", run.Stdout);
        ChainOpens(share, top, 2);
        var info = await File.ReadAllTextAsync(share.File(TestShare.Info(volume)));
        Assert.DoesNotContain(first, info);
        Assert.Contains(second, info);

        run = await Nfsvol.RunProcessAsync(share.Args("check"));
        Assert.True(run.ExitCode == 0, run.ToString());
        run = await Nfsvol.RunProcessAsync(share.Args("--json", "chain", volume));
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Equal(2, JsonDocument.Parse(run.Stdout).RootElement.GetProperty("images").GetArrayLength());
    }

    [Fact]
    public async Task A_missing_backing_file_is_re_pointed_onto_the_base_and_not_onto_an_orphan_overlay_on_it()
    {
        using var share = new TestShare();
        var (volume, first, second) = await share.VolumeWithTwoSnapshotsAsync();
        var orphan = TestShare.Overlay(volume, TestShare.Id());
        share.Qemu("create", "-q", "-f", "qcow2", "-b", TestShare.Base(volume), "-F", "raw", share.File(orphan), "16M");
        share.Qemu("commit", "-q", "-d", "-f", "qcow2", share.File(TestShare.Overlay(volume, first)));
        File.Delete(share.File(TestShare.Overlay(volume, first)));

        var run = await Nfsvol.RunAsync(share.Args("check", "--repair", "--json"));
        Assert.True(run.ExitCode == 0, run.ToString());
        using (var info = JsonDocument.Parse(share.Qemu("info", "--output=json", "-f", "qcow2", share.File(TestShare.Overlay(volume, second)))))
        {
            Assert.Equal(TestShare.Base(volume), info.RootElement.GetProperty("backing-filename").GetString());
        }
        Assert.False(File.Exists(share.File(orphan)));
        ChainOpens(share, TestShare.Overlay(volume, second), 2);
    }

    [Fact]
    public async Task A_missing_backing_file_with_two_candidates_is_reported_but_not_repaired()
    {
        using var share = new TestShare();
        var (volume, first, second) = await share.VolumeWithTwoSnapshotsAsync();
        File.Delete(share.File(TestShare.Overlay(volume, first)));
        // Two recorded images on the base: the headers no longer prove which one the top was meant to use.
        var infoPath = share.File(TestShare.Info(volume));
        foreach (var other in new[] { TestShare.Id(), TestShare.Id() })
        {
            share.Qemu("create", "-q", "-f", "qcow2", "-b", TestShare.Base(volume), "-F", "raw", share.File(TestShare.Overlay(volume, other)), "16M");
            var text = await File.ReadAllTextAsync(infoPath);
            await File.WriteAllTextAsync(infoPath, text.Replace("{\n", $"{{\n \"{other}\": \"{TestShare.Overlay(volume, other)}\",\n", StringComparison.Ordinal));
        }

        var run = await Nfsvol.RunAsync(share.Args("check", "--repair", "--json"));
        Assert.True(run.ExitCode == 1, run.ToString());
        Assert.False(Single(run, "BackingFileMissing").GetProperty("repairable").GetBoolean());
        Assert.Contains(TestShare.Overlay(volume, first), share.Qemu("info", "-f", "qcow2", share.File(TestShare.Overlay(volume, second))));
    }

    [Fact]
    public async Task Checking_a_volume_that_is_not_on_the_share_fails_with_exit_code_3()
    {
        using var share = new TestShare();
        var run = await Nfsvol.RunAsync(share.Args("check", "--volume", TestShare.Id()));
        Assert.Equal(3, run.ExitCode);
        Assert.Contains("VolumeNotFound", run.Stderr);
    }
}
