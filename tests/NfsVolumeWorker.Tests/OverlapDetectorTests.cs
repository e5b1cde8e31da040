using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Locking;
using NfsVolumeWorker.Storage.QemuImg;
using NfsVolumeWorker.Storage.Shares;
using NfsVolumeWorker.Tests.Support;

namespace NfsVolumeWorker.Tests;

/// <summary>The cross-process overlap witness the multi-instance tests rely on: a running marker of a live
/// process counts as an overlap; one left by a dead process (a crash) does not; the marker is gone after.</summary>
public sealed class OverlapDetectorTests
{
    private static (VolumeEngine Engine, Share Share) Engine(string dir)
    {
        var share = new Share(dir, dir, null);
        var engine = new VolumeEngine(new ShareMap([share]), new QemuImgRunner(Options.Create(new QemuImgOptions()), NullLogger<QemuImgRunner>.Instance),
            Options.Create(new VolumeEngineOptions()), NullLogger<VolumeEngine>.Instance);
        return (engine, share);
    }

    private static string StartTime(int pid)
    {
        var stat = File.ReadAllText($"/proc/{pid}/stat");
        return stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[19];
    }

    [Fact]
    public async Task A_running_marker_of_a_live_process_counts_as_an_overlap_and_one_of_a_dead_process_does_not()
    {
        using var dir = new TempDirectory();
        var (engine, share) = Engine(dir.Path);
        var vol = Guid.NewGuid();
        await engine.CreateVolumeAsync(new CreateVolumeRequest(null, vol, 1024 * 1024));
        Assert.Equal(0, engine.OverlapsDetected);
        Assert.False(File.Exists(RunningMarker.PathFor(share, vol)));

        // A crash left a marker: its process is gone.
        using (var dead = Process.Start("true")!)
        {
            dead.WaitForExit();
            File.WriteAllText(RunningMarker.PathFor(share, vol), $"{Environment.MachineName} {dead.Id} 1 create-snapshot");
        }
        await engine.CreateSnapshotAsync(new CreateSnapshotRequest(null, vol, Guid.NewGuid()));
        Assert.Equal(0, engine.OverlapsDetected);
        Assert.False(File.Exists(RunningMarker.PathFor(share, vol)));

        // A worker killed with -9 and not yet reaped by its parent is a zombie: it holds no lock and runs nothing.
        using (var parent = Process.Start("sh", ["-c", "sleep 0 & exec sleep 30"])!)
        {
            try
            {
                var zombie = await Eventually.WaitAsync(() => ProcessTree.Children(parent.Id, "sleep"), l => l.Count == 1 && File.ReadAllText($"/proc/{l[0]}/stat").Contains(") Z ", StringComparison.Ordinal), TimeSpan.FromSeconds(10));
                Assert.Single(zombie);
                File.WriteAllText(RunningMarker.PathFor(share, vol), string.Create(CultureInfo.InvariantCulture, $"{Environment.MachineName} {zombie[0]} {StartTime(zombie[0])} create-snapshot"));
                await engine.CreateSnapshotAsync(new CreateSnapshotRequest(null, vol, Guid.NewGuid()));
                Assert.Equal(0, engine.OverlapsDetected);
            }
            finally
            {
                parent.Kill();
            }
        }

        // Another live process (here: a sleep) is inside an operation on the volume while this one starts.
        using var live = Process.Start("sleep", "30")!;
        try
        {
            File.WriteAllText(RunningMarker.PathFor(share, vol), string.Create(CultureInfo.InvariantCulture, $"{Environment.MachineName} {live.Id} {StartTime(live.Id)} delete-snapshot"));
            await engine.ExtendVolumeAsync(new ExtendVolumeRequest(null, vol, 2 * 1024 * 1024));
            Assert.Equal(1, engine.OverlapsDetected);
        }
        finally
        {
            live.Kill();
        }
    }
}
