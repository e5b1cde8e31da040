using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Storage.QemuImg;
using NfsVolumeWorker.Storage.Shares;
using NfsVolumeWorker.Storage.Tests.Support;
using static NfsVolumeWorker.Storage.Tests.Support.EngineTestBed;

namespace NfsVolumeWorker.Storage.Tests.Engine;

/// <summary>An unmounted or replaced share is refused as ShareUnavailable and nothing is written to the local
/// directory left behind (the empty mount point).</summary>
public sealed class ShareAvailabilitySpecs : IDisposable
{
    private readonly TempDirectory _root = new("nfsvol-avail-");

    public void Dispose() => _root.Dispose();

    private static VolumeEngine EngineOn(Share share, IStepObserver? steps = null) => new(new ShareMap([share]),
        new QemuImgRunner(Options.Create(new QemuImgOptions()), NullLogger<QemuImgRunner>.Instance),
        Options.Create(new VolumeEngineOptions { LockTimeout = TimeSpan.FromSeconds(10) }), NullLogger<VolumeEngine>.Instance, steps);

    [Fact]
    public async Task A_Cinder_share_that_is_not_mounted_is_refused_and_its_mount_point_stays_empty()
    {
        var mountBase = Path.Combine(_root.Path, "mnt");
        var share = ShareMap.FromDefinition(mountBase, Export, null, null, requireMounted: true);
        Directory.CreateDirectory(share.LocalPath);

        var e = await Assert.ThrowsAsync<StorageException>(() => EngineOn(share).CreateVolumeAsync(new CreateVolumeRequest(Export, Guid.NewGuid(), MiB)));
        Assert.Equal(StorageErrorCode.ShareUnavailable, e.Code);
        Assert.True(e.IsTransient);
        Assert.Contains("not mounted", e.Message, StringComparison.Ordinal);
        Assert.Empty(Directory.EnumerateFileSystemEntries(share.LocalPath));

        // Mounted, the same share works.
        using var disk = LoopFileSystem.MountExt4(share.LocalPath, _root.Path, 32 * MiB);
        var volume = Guid.NewGuid();
        await EngineOn(share).CreateVolumeAsync(new CreateVolumeRequest(Export, volume, MiB));
        Assert.True(File.Exists(Path.Combine(share.LocalPath, $"volume-{volume}")));
    }

    [Fact]
    public async Task A_share_unmounted_after_first_use_is_refused_until_it_is_back()
    {
        var dir = Path.Combine(_root.Path, "share");
        Directory.CreateDirectory(dir);
        var share = ShareMap.FromDefinition(_root.Path, dir, null, null);
        using var disk = LoopFileSystem.MountExt4(dir, _root.Path, 32 * MiB);
        var engine = EngineOn(share);
        var volume = Guid.NewGuid();
        await engine.CreateVolumeAsync(new CreateVolumeRequest(dir, volume, MiB));

        disk.Unmount();
        var e = await Assert.ThrowsAsync<StorageException>(() => engine.CreateSnapshotAsync(new CreateSnapshotRequest(dir, volume, Guid.NewGuid())));
        Assert.Equal(StorageErrorCode.ShareUnavailable, e.Code);
        Assert.Contains(ShareMarker.FileName, e.Message, StringComparison.Ordinal);
        Assert.Empty(Directory.EnumerateFileSystemEntries(dir));

        disk.Remount();
        var snapshot = Guid.NewGuid();
        await engine.CreateSnapshotAsync(new CreateSnapshotRequest(dir, volume, snapshot));
        Assert.True(File.Exists(Path.Combine(dir, $"volume-{volume}.{snapshot}")));
    }

    [Fact]
    public async Task An_operation_the_share_vanishes_under_fails_as_ShareUnavailable_not_as_a_missing_volume()
    {
        var dir = Path.Combine(_root.Path, "share");
        Directory.CreateDirectory(dir);
        var share = ShareMap.FromDefinition(_root.Path, dir, null, null);
        using var disk = LoopFileSystem.MountExt4(dir, _root.Path, 32 * MiB);
        var unmountAt = new UnmountAt(OperationSteps.CreateSnapshotOverlayCreated, disk);
        var engine = EngineOn(share, unmountAt);
        var volume = Guid.NewGuid();
        await engine.CreateVolumeAsync(new CreateVolumeRequest(dir, volume, MiB));

        var e = await Assert.ThrowsAnyAsync<StorageException>(() => engine.CreateSnapshotAsync(new CreateSnapshotRequest(dir, volume, Guid.NewGuid())));
        Assert.Equal(StorageErrorCode.ShareUnavailable, e.Code);
        Assert.True(e.IsTransient);
        Assert.Empty(Directory.EnumerateFileSystemEntries(dir));
    }

    private sealed class UnmountAt(string step, LoopFileSystem disk) : IStepObserver
    {
        public void OnStep(string stepName, Guid volumeId)
        {
            if (stepName == step)
            {
                disk.Unmount();
            }
        }
    }
}
