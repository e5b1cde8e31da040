using System.Diagnostics;
using System.Text.Json;
using NfsVolumeWorker.Cli.Tests.Support;
using NfsVolumeWorker.Storage.Engine;

namespace NfsVolumeWorker.Cli.Tests;

/// <summary>The NFSVOL_PAUSE_AT_STEP hook: a child nfsvol stops at a step, is killed with SIGKILL there, and
/// check (--repair) deals with what it left.</summary>
public sealed class PauseAtStepTests
{
    /// <summary>Starts nfsvol with the hook, waits for its PAUSED line, checks it is still running, and kills it.</summary>
    private static async Task KillAtStepAsync(string step, string[] args)
    {
        var psi = Nfsvol.StartInfo(new Dictionary<string, string> { ["NFSVOL_PAUSE_AT_STEP"] = step }, args);
        using var process = Process.Start(psi) ?? throw new InvalidOperationException("could not start nfsvol");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var seen = new List<string>();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(1));
        try
        {
            while (true)
            {
                var line = await process.StandardError.ReadLineAsync(timeout.Token)
                    ?? throw new InvalidOperationException($"nfsvol exited ({(process.WaitForExit(5000) ? process.ExitCode : -1)}) without pausing: {string.Join('\n', seen)} {await stdout}");
                seen.Add(line);
                if (line == $"PAUSED {step}")
                {
                    break;
                }
            }
            // Paused means paused: it has not exited a moment later.
            Assert.False(process.WaitForExit(300), "nfsvol went on after PAUSED");
        }
        finally
        {
            if (!process.HasExited)
            {
                process.Kill(); // SIGKILL on Linux: no finally blocks, no lock release but the kernel's.
            }
            await process.WaitForExitAsync(CancellationToken.None);
        }
        Assert.Equal(137, process.ExitCode); // 128 + SIGKILL
    }

    [Fact]
    public async Task A_child_paused_in_a_middle_snapshot_delete_prints_PAUSED_stops_and_check_repair_finishes_the_delete()
    {
        using var share = new TestShare();
        var (volume, first, second) = await share.VolumeWithTwoSnapshotsAsync();

        await KillAtStepAsync(OperationSteps.DeleteSnapshotRebased, share.Args("snapshot", "delete", volume, first)); // a step of both the commit and the nothing-to-move path

        var run = await Nfsvol.RunProcessAsync(share.Args("check", "--json"));
        Assert.True(run.ExitCode == 1, run.ToString());
        using (var doc = JsonDocument.Parse(run.Stdout))
        {
            Assert.Contains(doc.RootElement.GetProperty("findings").EnumerateArray(), f => f.GetProperty("kind").GetString() == "PendingOperation");
        }

        run = await Nfsvol.RunProcessAsync(share.Args("check", "--repair"));
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.False(File.Exists(share.File(TestShare.Overlay(volume, first))));

        run = await Nfsvol.RunProcessAsync(share.Args("--json", "chain", volume));
        Assert.True(run.ExitCode == 0, run.ToString());
        using (var doc = JsonDocument.Parse(run.Stdout))
        {
            Assert.Equal(TestShare.Overlay(volume, second), doc.RootElement.GetProperty("active").GetString());
            Assert.Equal(2, doc.RootElement.GetProperty("images").GetArrayLength());
        }
        Assert.Equal(0, (await Nfsvol.RunAsync(share.Args("check"))).ExitCode);
    }

    [Fact]
    public async Task A_child_killed_before_the_info_write_of_a_snapshot_leaves_an_orphan_that_check_repair_removes()
    {
        using var share = new TestShare();
        var volume = TestShare.Id();
        var snapshot = TestShare.Id();
        await TestShare.Ok(share.Args("volume", "create", volume, "--size", "8M"));

        await KillAtStepAsync(OperationSteps.CreateSnapshotOverlayCreated, share.Args("snapshot", "create", volume, snapshot));

        Assert.True(File.Exists(share.File(TestShare.Overlay(volume, snapshot))));
        var run = await Nfsvol.RunAsync(share.Args("check", "--json"));
        Assert.True(run.ExitCode == 1, run.ToString());
        Assert.Contains("OrphanOverlay", run.Stdout);

        run = await Nfsvol.RunAsync(share.Args("check", "--repair"));
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.False(File.Exists(share.File(TestShare.Overlay(volume, snapshot))));
        Assert.Equal(0, (await Nfsvol.RunAsync(share.Args("check"))).ExitCode);
    }

    [Fact]
    public async Task The_nfsvol_process_exits_with_2_for_a_bad_id_and_an_unknown_share_and_3_for_a_missing_snapshot()
    {
        using var share = new TestShare();
        var volume = TestShare.Id();
        await TestShare.Ok(share.Args("volume", "create", volume, "--size", "1M"));

        var run = await Nfsvol.RunProcessAsync(share.Args("chain", "volume-1"));
        Assert.True(run.ExitCode == 2, run.ToString());

        var config = share.File("nfs_shares");
        await File.WriteAllTextAsync(config, "192.0.2.10:/export\n");
        run = await Nfsvol.RunProcessAsync("--shares-config", config, "--share", "192.0.2.11:/elsewhere", "chain", volume);
        Assert.True(run.ExitCode == 2, run.ToString());

        run = await Nfsvol.RunProcessAsync(share.Args("snapshot", "revert", volume, TestShare.Id()));
        Assert.True(run.ExitCode == 3, run.ToString());
        Assert.Contains("SnapshotNotFound", run.Stderr);
    }
}
