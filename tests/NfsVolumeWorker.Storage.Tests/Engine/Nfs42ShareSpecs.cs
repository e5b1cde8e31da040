using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.QemuImg;
using NfsVolumeWorker.Storage.Shares;
using NfsVolumeWorker.Storage.Tests.Support;
using static NfsVolumeWorker.Storage.Tests.Support.EngineTestBed;

namespace NfsVolumeWorker.Storage.Tests.Engine;

/// <summary>
/// The engine on a real NFS 4.2 mount (the kernel's NFS client and nfsd over loopback, an XFS with reflink behind
/// the export): the probe finds CLONE and COPY, a clone shares extents on the server, a full copy runs on the server,
/// and snapshots work as on a local disk. Proven from the NFS client's own per-operation counters (CLONE and COPY
/// calls made, the bytes WRITE sent) and from FIEMAP on the server's side. These run only inside the VM of
/// <c>ops/dev/nfs42-vm</c>, which <see cref="Nfs42VmSpecs"/> boots (trait <c>Category=InNfs42Vm</c>, left out of the
/// default run); run anywhere else, they fail, saying so.
/// </summary>
[Trait("Category", Nfs42VmSpecs.Category)]
public sealed class Nfs42ShareSpecs : IDisposable
{
    private readonly EngineTestBed _bed = new();
    private readonly Nfs42Export _export;

    public Nfs42ShareSpecs()
    {
        try
        {
            _export = Nfs42Export.Mount(_bed.Share.LocalPath);
        }
        catch
        {
            _bed.Dispose(); // xunit disposes no instance whose constructor threw
            throw;
        }
    }

    public void Dispose()
    {
        _export.Dispose();
        _bed.Dispose();
    }

    [Fact]
    public void The_probe_finds_extent_sharing_and_a_copy_on_the_server_and_asks_the_server_for_both()
    {
        var before = _export.Operations();

        var capabilities = ShareCapabilities.Of(_bed.Share);

        var after = _export.Operations();
        Assert.True(capabilities.ExtentSharing, "FICLONE on an NFS 4.2 mount of an XFS with reflink is a CLONE");
        Assert.True(capabilities.ServerSideCopy, "copy_file_range on an NFS 4.2 mount is a COPY");
        Assert.True(capabilities.CopiesOnServer, "an nfs4 mount of version 4.2 copies on its server");
        Assert.Contains("server-side copy (copy_file_range)", capabilities.Describe(), StringComparison.Ordinal);
        Assert.True((after["CLONE"] - before["CLONE"]).Operations > 0, "the probe's FICLONE reached the server as CLONE");
        Assert.True((after["COPY"] - before["COPY"]).Operations > 0, "the probe's copy_file_range reached the server as COPY");
        var mount = MountTable.Find(_bed.Share.LocalPath);
        Assert.Equal("nfs4", mount?.FileSystemType);
        Assert.False(mount!.IsNfsWithoutServerSideCopy, mount.SuperOptions);
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(_bed.Share.WorkerDirectory, "tmp")));
    }

    [Fact]
    public async Task A_clone_from_a_snapshot_shares_extents_on_the_server_and_sends_no_base_data()
    {
        var volume = await _bed.CreateVolumeAsync(64 * MiB);
        _bed.GuestWrite(volume, 0, 32 * MiB, 0x11);
        await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(EngineTestBed.Export, volume, Guid.NewGuid()));
        _bed.GuestWrite(volume, 40 * MiB, 4 * MiB, 0x22);
        var atS2 = _bed.SaveReference(volume, "at-s2");
        var s2 = Guid.NewGuid();
        await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(EngineTestBed.Export, volume, s2));
        _bed.GuestWrite(volume, 48 * MiB, 4 * MiB, 0x33); // after the snapshot: must not show in the clone
        var before = _export.Operations();

        var clone = Guid.NewGuid();
        var result = await _bed.Engine.CreateVolumeFromSnapshotAsync(new CreateVolumeFromSnapshotRequest(EngineTestBed.Export, volume, s2, clone));

        var after = _export.Operations();
        Assert.Contains("shared the base's extents", result.Message, StringComparison.Ordinal);
        Assert.True((after["CLONE"] - before["CLONE"]).Operations > 0, "the clone made no CLONE call");
        // A copy through this host would send the base's 32 MiB and the overlay's 4 MiB.
        var written = (after["WRITE"] - before["WRITE"]).BytesSent;
        Assert.True(written < MiB, $"the clone sent {written} bytes of WRITE to the server");
        Assert.True(_export.SharedExtents(VolumeFileNames.Base(clone)) > 0, "the server's XFS reports no shared extent in the clone");
        var clonePath = _bed.PathOf(VolumeFileNames.Base(clone));
        Assert.True(_bed.SameContents(clonePath, ImageFormat.Raw, atS2), "qemu-img compare: the clone differs from the snapshot");

        _bed.GuestWrite(volume, 0, 4 * MiB, 0x44);
        Assert.True(_bed.ImageReads(clonePath, ImageFormat.Raw, 0, 4 * MiB, 0x11), "a write to the source showed in the clone");
        _bed.GuestWrite(clone, 8 * MiB, 4 * MiB, 0x55);
        Assert.True(_bed.ImageReads(_bed.PathOf(VolumeFileNames.Base(volume)), ImageFormat.Raw, 8 * MiB, 4 * MiB, 0x11), "a write to the clone showed in the source");
        Assert.Empty(_bed.ShareProblems());
    }

    [Fact]
    public async Task A_full_copy_runs_on_the_server_and_sends_no_data()
    {
        var copying = new VolumeEngine(new ShareMap([_bed.Share]), _bed.Qemu,
            Options.Create(new VolumeEngineOptions { LockTimeout = TimeSpan.FromSeconds(60), ShareExtents = false }), NullLogger<VolumeEngine>.Instance);
        var volume = await _bed.CreateVolumeAsync(64 * MiB);
        _bed.GuestWrite(volume, 0, 32 * MiB, 0x66);
        var reference = _bed.SaveReference(volume, "now");
        var before = _export.Operations();

        var clone = Guid.NewGuid();
        var result = await copying.CloneVolumeAsync(new CloneVolumeRequest(EngineTestBed.Export, volume, clone));

        var after = _export.Operations();
        Assert.Contains("copied server-side (copy_file_range)", result.Message, StringComparison.Ordinal);
        Assert.True((after["COPY"] - before["COPY"]).Operations > 0, "the copy made no COPY call");
        var written = (after["WRITE"] - before["WRITE"]).BytesSent;
        var read = (after["READ"] - before["READ"]).BytesReceived;
        Assert.True(written < 4 * MiB && read < 4 * MiB, $"the copy moved data through this host: {written} bytes written, {read} read");
        Assert.True(_bed.SameContents(_bed.PathOf(VolumeFileNames.Base(clone)), ImageFormat.Raw, reference), "qemu-img compare: the copy differs from its source");
        Assert.Empty(_bed.ShareProblems());
    }

    [Fact]
    public async Task Snapshots_are_created_read_and_deleted_on_NFS_as_on_a_local_disk()
    {
        var volume = await _bed.CreateVolumeAsync(32 * MiB);
        _bed.GuestWrite(volume, 0, 8 * MiB, 0x11);
        var atS1 = _bed.SaveReference(volume, "at-s1");
        var s1 = Guid.NewGuid();
        await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(EngineTestBed.Export, volume, s1));
        _bed.GuestWrite(volume, 16 * MiB, 4 * MiB, 0x22);
        var s2 = Guid.NewGuid();
        await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(EngineTestBed.Export, volume, s2));
        _bed.GuestWrite(volume, 0, 2 * MiB, 0x33);
        var now = _bed.SaveReference(volume, "now");
        Assert.True(_bed.SnapshotShows(volume, s1, atS1));

        await _bed.Engine.DeleteSnapshotAsync(new DeleteSnapshotRequest(EngineTestBed.Export, volume, s1));
        await _bed.Engine.DeleteSnapshotAsync(new DeleteSnapshotRequest(EngineTestBed.Export, volume, s2));

        Assert.Empty(_bed.Info(volume)!.Snapshots);
        var active = _bed.Engine.ReadChain(EngineTestBed.Export, volume).Active;
        Assert.True(_bed.SameContents(_bed.PathOf(active.FileName), active.Format, now), "qemu-img compare: the volume changed in the merges");
        Assert.Empty(_bed.ShareProblems());
    }
}
