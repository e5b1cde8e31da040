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
/// process counts as an overlap, in the volume lock's file (where this worker keeps it) as in an older worker's
/// <c>.running</c> file (a rolling upgrade); one left by a dead process (a crash) does not; the marker is gone after,
/// and no file is made for it.</summary>
public sealed class OverlapDetectorTests
{
    private static (VolumeEngine Engine, Share Share) Engine(string dir, IStepObserver? steps = null)
    {
        var share = new Share(dir, dir, null);
        var engine = new VolumeEngine(new ShareMap([share]), new QemuImgRunner(Options.Create(new QemuImgOptions()), NullLogger<QemuImgRunner>.Instance),
            Options.Create(new VolumeEngineOptions()), NullLogger<VolumeEngine>.Instance, steps);
        return (engine, share);
    }

    private static string StartTime(int pid)
    {
        var stat = File.ReadAllText($"/proc/{pid}/stat");
        return stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[19];
    }

    /// <summary>Where a marker is planted: the lock file's content (this worker's place) or an older worker's file.</summary>
    private static string MarkerPath(Share share, Guid vol, string where) =>
        where == "lock file" ? VolumeLock.PathFor(share, vol) : RunningMarker.LegacyPathFor(share, vol);

    [Theory]
    [InlineData("lock file")]
    [InlineData("older worker's .running file")]
    public async Task A_running_marker_of_a_live_process_counts_as_an_overlap_and_one_of_a_dead_process_does_not(string where)
    {
        using var dir = new TempDirectory();
        var (engine, share) = Engine(dir.Path);
        var vol = Guid.NewGuid();
        await engine.CreateVolumeAsync(new CreateVolumeRequest(null, vol, 1024 * 1024));
        Assert.Equal(0, engine.OverlapsDetected);
        Assert.Equal("", RunningMarker.Read(share, vol));
        Assert.False(File.Exists(RunningMarker.LegacyPathFor(share, vol)));

        // A crash left a marker: its process is gone.
        using (var dead = Process.Start("true")!)
        {
            dead.WaitForExit();
            File.WriteAllText(MarkerPath(share, vol, where), $"{Environment.MachineName} {dead.Id} 1 create-snapshot");
        }
        await engine.CreateSnapshotAsync(new CreateSnapshotRequest(null, vol, Guid.NewGuid()));
        Assert.Equal(0, engine.OverlapsDetected);
        Assert.Equal("", RunningMarker.Read(share, vol));

        // A worker killed with -9 and not yet reaped by its parent is a zombie: it holds no lock and runs nothing.
        using (var parent = Process.Start("sh", ["-c", "sleep 0 & exec sleep 30"])!)
        {
            try
            {
                var zombie = await Eventually.WaitAsync(() => ProcessTree.Children(parent.Id, "sleep"), l => l.Count == 1 && File.ReadAllText($"/proc/{l[0]}/stat").Contains(") Z ", StringComparison.Ordinal), TimeSpan.FromSeconds(10));
                Assert.Single(zombie);
                File.WriteAllText(MarkerPath(share, vol, where), string.Create(CultureInfo.InvariantCulture, $"{Environment.MachineName} {zombie[0]} {StartTime(zombie[0])} create-snapshot"));
                await engine.CreateSnapshotAsync(new CreateSnapshotRequest(null, vol, Guid.NewGuid()));
                Assert.Equal(0, engine.OverlapsDetected);
            }
            finally
            {
                parent.Kill();
            }
        }

        // Another live process (here: a sleep) is inside an operation on the volume while this one starts: it holds
        // no lock, so only the marker's content can tell (as when a second holder wrongly got the lock).
        using var live = Process.Start("sleep", "30")!;
        try
        {
            File.WriteAllText(MarkerPath(share, vol, where), string.Create(CultureInfo.InvariantCulture, $"{Environment.MachineName} {live.Id} {StartTime(live.Id)} delete-snapshot"));
            await engine.ExtendVolumeAsync(new ExtendVolumeRequest(null, vol, 2 * 1024 * 1024));
            Assert.Equal(1, engine.OverlapsDetected);
        }
        finally
        {
            live.Kill();
        }
        Assert.Equal("", RunningMarker.Read(share, vol));
    }

    [Fact]
    public async Task The_marker_is_in_the_lock_file_while_an_operation_runs_and_no_file_is_made_for_it()
    {
        using var dir = new TempDirectory();
        var seen = new List<(string Step, string? Marker, bool LegacyFile, string[] Locks)>();
        Share? observed = null;
        var steps = new RecordingSteps((step, vol) => seen.Add((step, RunningMarker.Read(observed!, vol), File.Exists(RunningMarker.LegacyPathFor(observed!, vol)),
            Directory.GetFiles(Path.GetDirectoryName(VolumeLock.PathFor(observed!, vol))!).Select(f => Path.GetFileName(f)).ToArray())));
        var (engine, share) = Engine(dir.Path, steps);
        observed = share;
        var vol = Guid.NewGuid();
        await engine.CreateVolumeAsync(new CreateVolumeRequest(null, vol, 1024 * 1024));
        seen.Clear();
        // A crash left a longer marker than this process's (a dead process of another operation): it is replaced whole.
        File.WriteAllText(VolumeLock.PathFor(share, vol), $"{Environment.MachineName} 999999999 1 {new string('x', 300)}");

        await engine.CreateSnapshotAsync(new CreateSnapshotRequest(null, vol, Guid.NewGuid()));

        Assert.NotEmpty(seen);
        var me = string.Create(CultureInfo.InvariantCulture, $"{Environment.MachineName} {Environment.ProcessId} {StartTime(Environment.ProcessId)} create-snapshot");
        Assert.All(seen, s =>
        {
            Assert.Equal(me, s.Marker);
            Assert.False(s.LegacyFile);
            Assert.Equal([Path.GetFileName(VolumeLock.PathFor(share, vol))], s.Locks);
        });
        Assert.Equal("", RunningMarker.Read(share, vol));
        Assert.Equal(0, engine.OverlapsDetected);
    }

    private sealed class RecordingSteps(Action<string, Guid> onStep) : IStepObserver
    {
        public void OnStep(string stepName, Guid volumeId) => onStep(stepName, volumeId);
    }
}
