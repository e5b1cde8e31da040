using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Shares;
using NfsVolumeWorker.Storage.Tests.Support;
using static NfsVolumeWorker.Storage.Tests.Support.EngineTestBed;

namespace NfsVolumeWorker.Storage.Tests.Engine;

/// <summary>
/// On a file system that shares extents (a 512 MiB XFS made with reflink=1, loop-mounted by the test), a clone
/// shares the base's extents and writes only what the overlays up to the snapshot hold: proven by free space,
/// by content against the snapshot, and by independence (writes on either side after the clone).
/// </summary>
public sealed class ExtentSharingCloneSpecs : IDisposable
{
    private readonly EngineTestBed _bed = new();
    private readonly LoopFileSystem _disk;

    public ExtentSharingCloneSpecs() => _disk = LoopFileSystem.MountXfsWithReflink(_bed.Share.LocalPath, _bed.References, 512 * MiB);

    public void Dispose()
    {
        _disk.Dispose();
        _bed.Dispose();
    }

    [Fact]
    public void The_share_is_probed_for_extent_sharing_and_a_plain_ext4_directory_has_none()
    {
        Assert.True(ShareCapabilities.Of(_bed.Share).ExtentSharing);
        using var plain = new EngineTestBed();
        Assert.False(ShareCapabilities.Of(plain.Share).ExtentSharing, "the test machine's /tmp (ext4) shares no extents");
    }

    [Fact]
    public async Task A_clone_from_a_snapshot_shares_the_base_and_writes_only_what_the_overlays_hold()
    {
        var volume = await _bed.CreateVolumeAsync(256 * MiB);
        _bed.GuestWrite(volume, 0, 128 * MiB, 0x11);
        var s1 = Guid.NewGuid();
        await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, volume, s1));
        _bed.GuestWrite(volume, 200 * MiB, 8 * MiB, 0x22);
        var atS2 = _bed.SaveReference(volume, "at-s2");
        var s2 = Guid.NewGuid();
        await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, volume, s2));
        _bed.GuestWrite(volume, 220 * MiB, 8 * MiB, 0x33);

        var freeBefore = _disk.Available;
        var clone = Guid.NewGuid();
        var result = await _bed.Engine.CreateVolumeFromSnapshotAsync(new CreateVolumeFromSnapshotRequest(Export, volume, s2, clone));
        var used = freeBefore - _disk.Available;

        Assert.Contains("shared the base's extents", result.Message, StringComparison.Ordinal);
        // A copy would take the base's 128 MiB and the overlay's 8 MiB; sharing takes the 8 MiB and metadata.
        Assert.True(used < 24 * MiB, $"the clone took {used / MiB} MiB of free space");
        var clonePath = _bed.PathOf(VolumeFileNames.Base(clone));
        Assert.True(_bed.SameContents(clonePath, ImageFormat.Raw, atS2));

        // Independent both ways: a write to the source does not show in the clone, nor the other way round.
        _bed.GuestWrite(volume, 0, 4 * MiB, 0x44);
        Assert.True(_bed.ImageReads(clonePath, ImageFormat.Raw, 0, 4 * MiB, 0x11));
        _bed.GuestWrite(clone, 64 * MiB, 4 * MiB, 0x55);
        Assert.True(_bed.ImageReads(_bed.PathOf(VolumeFileNames.Base(volume)), ImageFormat.Raw, 64 * MiB, 4 * MiB, 0x11));
        Assert.True(_bed.ImageReads(clonePath, ImageFormat.Raw, 64 * MiB, 4 * MiB, 0x55));
        Assert.Empty(_bed.ShareProblems());
        Assert.DoesNotContain(_bed.Listing(), f => f.Contains(".tmp-", StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_clone_of_a_volume_with_snapshots_and_of_one_without_shares_extents_too()
    {
        var volume = await _bed.CreateVolumeAsync(128 * MiB);
        _bed.GuestWrite(volume, 0, 64 * MiB, 0x11);
        var plainClone = Guid.NewGuid();
        var plain = await _bed.Engine.CloneVolumeAsync(new CloneVolumeRequest(Export, volume, plainClone));
        Assert.Contains("applied 0 bytes", plain.Message, StringComparison.Ordinal);
        Assert.True(_bed.ImageReads(_bed.PathOf(VolumeFileNames.Base(plainClone)), ImageFormat.Raw, 0, 64 * MiB, 0x11));

        await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, volume, Guid.NewGuid()));
        _bed.GuestWrite(volume, 100 * MiB, 4 * MiB, 0x22);
        var clone = Guid.NewGuid();
        var result = await _bed.Engine.CloneVolumeAsync(new CloneVolumeRequest(Export, volume, clone, NewSizeBytes: 192 * MiB));
        Assert.Contains("shared the base's extents", result.Message, StringComparison.Ordinal);
        Assert.Equal(192 * MiB, _bed.Engine.ReadChain(Export, clone).Active.VirtualSize);
        Assert.True(_bed.ImageReads(_bed.PathOf(VolumeFileNames.Base(clone)), ImageFormat.Raw, 0, 64 * MiB, 0x11));
        Assert.True(_bed.ImageReads(_bed.PathOf(VolumeFileNames.Base(clone)), ImageFormat.Raw, 100 * MiB, 4 * MiB, 0x22));
        Assert.Single(_bed.Info(volume)!.Snapshots); // the temporary snapshot is gone again
        Assert.Empty(_bed.ShareProblems());
    }

    [Theory]
    [InlineData(OperationSteps.CloneJournaled)]
    [InlineData(OperationSteps.CloneCopied)]
    public async Task A_clone_that_crashed_while_sharing_is_finished_by_the_next_run_from_what_is_on_disk(string step)
    {
        var volume = await _bed.CreateVolumeAsync(64 * MiB);
        _bed.GuestWrite(volume, 0, 32 * MiB, 0x11);
        var snapshot = Guid.NewGuid();
        await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, volume, snapshot));
        _bed.GuestWrite(volume, 40 * MiB, 4 * MiB, 0x22);
        var atSnapshot2 = _bed.SaveReference(volume, "at-2");
        var snapshot2 = Guid.NewGuid();
        await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, volume, snapshot2));
        var clone = Guid.NewGuid();

        await Assert.ThrowsAsync<InjectedCrash>(() => _bed.NewEngine(new CrashAtStep(step, 1))
            .CreateVolumeFromSnapshotAsync(new CreateVolumeFromSnapshotRequest(Export, volume, snapshot2, clone)));
        // What a crash in the middle of applying the overlays leaves besides: scratch copies under temp names.
        File.WriteAllBytes(_bed.PathOf(Durability.DurableFile.TempName(VolumeFileNames.Base(clone))), new byte[4096]);
        Assert.False(File.Exists(_bed.PathOf(VolumeFileNames.Base(clone))), "no volume carries the clone's name before it is complete");

        var again = await _bed.NewEngine().CreateVolumeFromSnapshotAsync(new CreateVolumeFromSnapshotRequest(Export, volume, snapshot2, clone));
        Assert.Contains("shared the base's extents", again.Message, StringComparison.Ordinal);
        Assert.True(_bed.SameContents(_bed.PathOf(VolumeFileNames.Base(clone)), ImageFormat.Raw, atSnapshot2));
        Assert.DoesNotContain(_bed.Listing(), f => f.Contains(".tmp-", StringComparison.Ordinal));
        Assert.Empty(_bed.ShareProblems());
    }
}
