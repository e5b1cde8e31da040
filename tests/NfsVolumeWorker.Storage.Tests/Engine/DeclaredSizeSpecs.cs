using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Tests.Support;
using static NfsVolumeWorker.Storage.Tests.Support.EngineTestBed;

namespace NfsVolumeWorker.Storage.Tests.Engine;

/// <summary>Cinder sizes a snapshot's overlay from its database ("%dG" % volume.size), not from the backing file:
/// so does the engine when told the declared size, and the volume then passes Cinder's size check.</summary>
public sealed class DeclaredSizeSpecs : IDisposable
{
    private const long GiB = 1024 * MiB;
    private readonly EngineTestBed _bed = new();

    public void Dispose() => _bed.Dispose();

    [Fact]
    public async Task A_snapshot_of_a_volume_smaller_than_declared_gets_an_overlay_of_the_declared_size()
    {
        var volume = await _bed.CreateVolumeAsync(64 * MiB);
        _bed.GuestWrite(volume, 0, 4 * MiB, 0x5a);
        var before = _bed.SaveReference(volume, "before");
        var snapshot = Guid.NewGuid();

        await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, volume, snapshot, VolumeSizeBytes: GiB));

        var chain = _bed.Engine.ReadChain(Export, volume);
        Assert.Equal(GiB, chain.Active.VirtualSize);
        Assert.Equal(64 * MiB, chain.Base.VirtualSize);
        Assert.True(_bed.SnapshotShows(volume, snapshot, before));
        Assert.True(_bed.ImageReads(_bed.PathOf(chain.Active.FileName), ImageFormat.Qcow2, 0, 4 * MiB, 0x5a));
        Assert.True(_bed.ImageReads(_bed.PathOf(chain.Active.FileName), ImageFormat.Qcow2, 512 * MiB, MiB, 0x00));
        // What Cinder's initialize_connection checks: the active image has the declared size.
        Assert.Equal(GiB, _bed.Engine.GetConnectionInfo(new ConnectionInfoRequest(Export, volume, GiB)).VirtualSize);

        // Deleting the snapshot grows the base first, so the merged volume keeps the declared size.
        await _bed.Engine.DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, volume, snapshot));
        chain = _bed.Engine.ReadChain(Export, volume);
        Assert.Equal(GiB, chain.Active.VirtualSize);
        Assert.True(_bed.ImageReads(_bed.PathOf(chain.Active.FileName), ImageFormat.Raw, 0, 4 * MiB, 0x5a));
        Assert.Empty(_bed.ShareProblems());
    }

    [Fact]
    public async Task A_declared_size_smaller_than_the_active_image_is_refused_and_changes_nothing()
    {
        var volume = await _bed.CreateVolumeAsync(64 * MiB);
        var before = _bed.Listing();
        var e = await Assert.ThrowsAsync<StorageException>(() => _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, volume, Guid.NewGuid(), VolumeSizeBytes: 32 * MiB)));
        Assert.Equal(StorageErrorCode.ShrinkNotAllowed, e.Code);
        Assert.Equal(before, _bed.Listing());
    }

    [Fact]
    public async Task A_repeated_snapshot_with_the_declared_size_is_already_done()
    {
        var volume = await _bed.CreateVolumeAsync(64 * MiB);
        var snapshot = Guid.NewGuid();
        await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, volume, snapshot, VolumeSizeBytes: GiB));
        var again = await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, volume, snapshot, VolumeSizeBytes: GiB));
        Assert.Equal(OperationOutcome.AlreadyDone, again.Outcome);
    }
}
