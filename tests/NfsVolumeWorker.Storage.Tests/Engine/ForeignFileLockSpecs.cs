using System.Diagnostics;
using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Qcow2;
using NfsVolumeWorker.Storage.Tests.Support;
using static NfsVolumeWorker.Storage.Tests.Support.EngineTestBed;

namespace NfsVolumeWorker.Storage.Tests.Engine;

/// <summary>
/// The engine takes no advisory lock of its own on the files it reads and writes: .NET emulates FileShare on Linux
/// with flock(2), which on NFS becomes a lock round trip to the server (a LOCK and a LOCKU per open) and which another
/// program's lock on a volume file turns into a failed command. Every project turns the emulation off
/// (System.IO.DisableFileLocking in Directory.Build.props); the engine's own exclusion is its OFD volume lock.
/// </summary>
public sealed class ForeignFileLockSpecs : IDisposable
{
    private static readonly Guid Volume = Guid.Parse("4d5e6f70-0000-4000-8000-0000000000a1");
    private static readonly Guid First = Guid.Parse("aaaaaaaa-0000-4000-8000-0000000000a2");
    private static readonly Guid Second = Guid.Parse("bbbbbbbb-0000-4000-8000-0000000000a3");

    private readonly EngineTestBed _bed = new(new VolumeEngineOptions { LockTimeout = TimeSpan.FromSeconds(30) });

    public void Dispose() => _bed.Dispose();

    [Fact]
    public void File_locking_emulation_is_off_in_this_process()
    {
        Assert.True(AppContext.TryGetSwitch("System.IO.DisableFileLocking", out var off) && off,
            "System.IO.DisableFileLocking is not set: Directory.Build.props sets it for every project");
    }

    [Fact]
    public async Task A_snapshot_whose_delete_merges_data_is_deleted_while_another_program_holds_an_exclusive_flock_on_every_volume_file()
    {
        await _bed.Engine.CreateVolumeAsync(new CreateVolumeRequest(Export, Volume, 64 * MiB, ImageFormat.Raw));
        _bed.GuestWrite(Volume, 0, MiB, 0x31);
        await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, Volume, First));
        _bed.GuestWrite(Volume, 8 * MiB, MiB, 0x42);
        await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, Volume, Second));
        _bed.GuestWrite(Volume, 16 * MiB, MiB, 0x53);
        var now = _bed.SaveReference(Volume, "now");

        var holders = Directory.EnumerateFiles(_bed.Share.LocalPath, VolumeFileNames.Base(Volume) + "*").Select(HoldExclusiveFlock).ToList();
        OperationResult deleted;
        try
        {
            Assert.True(holders.Count >= 4, $"expected the base, two overlays and the .info to be held, got {holders.Count}");
            // First's overlay maps data and a newer image sits on it: the delete moves data and fsyncs the image it wrote.
            deleted = await _bed.Engine.DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, Volume, First));
            Assert.All(holders, h => Assert.False(h.HasExited, "a holder let go of its lock before the engine ran: the test proved nothing"));
        }
        finally
        {
            foreach (var holder in holders)
            {
                holder.Kill();
                await holder.WaitForExitAsync();
                holder.Dispose();
            }
        }
        Assert.Equal(OperationOutcome.Completed, deleted.Outcome);
        Assert.Equal([Second], _bed.Info(Volume)!.Snapshots.Keys);
        var active = _bed.Engine.ReadChain(Export, Volume).Active;
        Assert.True(_bed.SameContents(_bed.PathOf(active.FileName), active.Format, now), "the volume no longer shows its data after the merge");
    }

    /// <summary>Starts <c>flock -x FILE</c> and returns once it holds the lock (it prints a line then).</summary>
    private static Process HoldExclusiveFlock(string path)
    {
        var start = new ProcessStartInfo("flock", ["--exclusive", "--nonblock", path, "sh", "-c", "echo held; exec sleep 600"])
        {
            RedirectStandardOutput = true,
        };
        var process = Process.Start(start) ?? throw new InvalidOperationException("flock did not start");
        var line = process.StandardOutput.ReadLine();
        Assert.True(line == "held", $"flock could not lock {path} (exit {(process.HasExited ? process.ExitCode : -1)})");
        return process;
    }
}
