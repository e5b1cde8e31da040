using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Storage.Tests.Support;
using static NfsVolumeWorker.Storage.Tests.Support.EngineTestBed;

namespace NfsVolumeWorker.Storage.Tests.Engine;

/// <summary>Known writes between snapshots, then the changed extents between any two points are exactly their union
/// (writes are cluster-aligned here), across a merge too, and growth counts as changed.</summary>
public sealed class ChangedExtentsSpecs : IDisposable
{
    private readonly EngineTestBed _bed = new();

    public void Dispose() => _bed.Dispose();

    private static ByteRange R(long offsetMiB, long lengthMiB) => new(offsetMiB * MiB, lengthMiB * MiB);

    private Task<ChangedExtents> DiffAsync(Guid volume, VolumePoint from, VolumePoint to) =>
        _bed.Engine.GetChangedExtentsAsync(Export, volume, from, to);

    private async Task<Guid> SnapshotAsync(Guid volume)
    {
        var id = Guid.NewGuid();
        await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, volume, id));
        return id;
    }

    [Fact]
    public async Task The_changed_extents_between_two_points_are_the_writes_made_between_them()
    {
        var volume = await _bed.CreateVolumeAsync(64 * MiB);
        _bed.GuestWrite(volume, 0, MiB, 0x10);
        var s1 = await SnapshotAsync(volume);
        _bed.GuestWrite(volume, 10 * MiB, 2 * MiB, 0x11);
        var s2 = await SnapshotAsync(volume);
        _bed.GuestWrite(volume, 20 * MiB, MiB, 0x12);
        var active = _bed.PathOf(_bed.Info(volume)!.Active);
        RequiredTool.RunChecked("qemu-io", "-f", "qcow2", "-c", $"write -z {30 * MiB} {MiB}", active); // a discard is a change too
        var s3 = await SnapshotAsync(volume);
        _bed.GuestWrite(volume, 40 * MiB, 4 * MiB, 0x13);

        Assert.Empty((await DiffAsync(volume, VolumePoint.Base, VolumePoint.Snapshot(s1))).Extents); // s1's data is the base
        Assert.Equal([R(10, 2)], (await DiffAsync(volume, VolumePoint.Snapshot(s1), VolumePoint.Snapshot(s2))).Extents);
        Assert.Equal([R(20, 1), R(30, 1)], (await DiffAsync(volume, VolumePoint.Snapshot(s2), VolumePoint.Snapshot(s3))).Extents);
        Assert.Equal([R(40, 4)], (await DiffAsync(volume, VolumePoint.Snapshot(s3), VolumePoint.Now)).Extents);
        var all = await DiffAsync(volume, VolumePoint.Snapshot(s1), VolumePoint.Now);
        Assert.Equal([R(10, 2), R(20, 1), R(30, 1), R(40, 4)], all.Extents);
        Assert.Equal(8 * MiB, all.TotalBytes);
        // The base's own data is not a change since the base.
        Assert.Equal([R(10, 2), R(20, 1), R(30, 1), R(40, 4)], (await DiffAsync(volume, VolumePoint.Base, VolumePoint.Now)).Extents);

        // After merging the middle snapshot the images in between hold the union: still exact here.
        await _bed.Engine.DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, volume, s2));
        Assert.Equal([R(10, 2), R(20, 1), R(30, 1)], (await DiffAsync(volume, VolumePoint.Snapshot(s1), VolumePoint.Snapshot(s3))).Extents);
        Assert.Equal(all.Extents, (await DiffAsync(volume, VolumePoint.Snapshot(s1), VolumePoint.Now)).Extents);

        // Growth is a change.
        await _bed.Engine.ExtendVolumeAsync(new ExtendVolumeRequest(Export, volume, 96 * MiB));
        var grown = await DiffAsync(volume, VolumePoint.Snapshot(s3), VolumePoint.Now);
        Assert.Equal([R(40, 4), R(64, 32)], grown.Extents);
        Assert.Equal(96 * MiB, grown.VirtualSize);
        Assert.Empty(_bed.ShareProblems());
    }

    [Fact]
    public async Task Points_in_the_wrong_order_or_unknown_are_refused()
    {
        var volume = await _bed.CreateVolumeAsync(16 * MiB);
        var s1 = await SnapshotAsync(volume);
        var wrongOrder = await Assert.ThrowsAsync<StorageException>(() => DiffAsync(volume, VolumePoint.Now, VolumePoint.Snapshot(s1)));
        Assert.Equal(StorageErrorCode.InvalidRequest, wrongOrder.Code);
        var unknown = await Assert.ThrowsAsync<StorageException>(() => DiffAsync(volume, VolumePoint.Snapshot(Guid.NewGuid()), VolumePoint.Now));
        Assert.Equal(StorageErrorCode.SnapshotNotFound, unknown.Code);
        Assert.Equal(StorageErrorCode.InvalidRequest, Assert.Throws<StorageException>(() => VolumePoint.Parse("yesterday")).Code);
    }
}
