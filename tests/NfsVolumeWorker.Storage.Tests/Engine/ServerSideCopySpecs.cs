using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.QemuImg;
using NfsVolumeWorker.Storage.Shares;
using NfsVolumeWorker.Storage.Tests.Support;
using static NfsVolumeWorker.Storage.Tests.Support.EngineTestBed;
using NfsVolumeWorker.Testing;

namespace NfsVolumeWorker.Storage.Tests.Engine;

/// <summary>
/// On a file system that copies by itself but shares no extents (a 256 MiB ext4, loop-mounted by the test: the
/// kernel copies in place, as an NFS 4.2 server does with COPY), a clone's full copy runs as <c>qemu-img convert -C</c>
/// when the engine is told to use a local in-kernel copy (<see cref="VolumeEngineOptions.LocalKernelCopy"/>; by default
/// only a file server's copy is used): proven by the <c>copy_file_range</c> calls qemu-img makes (strace) and by
/// content against the snapshot.
/// </summary>
public sealed class ServerSideCopySpecs : IDisposable
{
    private readonly EngineTestBed _bed = new();
    private readonly LoopFileSystem _disk;
    private readonly string _trace;
    private readonly VolumeEngine _engine;

    public ServerSideCopySpecs()
    {
        _disk = LoopFileSystem.MountExt4(_bed.Share.LocalPath, _bed.References, 256 * MiB);
        // qemu-img under strace: every copy_file_range call it makes lands in the trace file.
        _trace = Path.Combine(_bed.References, "copy-file-range.trace");
        var traced = Path.Combine(_bed.References, "qemu-img-traced");
        ShellScript.Write(traced, $"exec {RequiredTool.Find("strace", "strace")} -f -qq -e trace=copy_file_range -o {_trace}.$$ {RequiredTool.QemuImg} \"$@\"\n");
        _qemu = QemuImgAt(traced);
        _engine = _bed.EngineWith(new VolumeEngineOptions { LockTimeout = TimeSpan.FromSeconds(30), LocalKernelCopy = true }, _qemu);
    }

    private readonly QemuImgRunner _qemu;

    public void Dispose()
    {
        _disk.Dispose();
        _bed.Dispose();
    }

    [Fact]
    public void An_ext4_share_offers_server_side_copy_and_no_extent_sharing_and_the_probe_leaves_nothing()
    {
        var capabilities = ShareCapabilities.Of(_bed.Share);

        Assert.True(capabilities.ServerSideCopy, "copy_file_range between two files of one ext4 is copied by the kernel");
        Assert.False(capabilities.CopiesOnServer, "a local ext4 copies in this host's kernel, not on a server");
        Assert.False(capabilities.ExtentSharing);
        Assert.Contains("in-kernel copy (copy_file_range", capabilities.Describe(), StringComparison.Ordinal);
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(_bed.Share.WorkerDirectory, "tmp")));
    }

    [Theory]
    [InlineData(ImageFormat.Raw)]
    [InlineData(ImageFormat.Qcow2)]
    public async Task A_clone_from_a_snapshot_copies_with_copy_file_range_and_equals_the_snapshot(ImageFormat targetFormat)
    {
        var volume = await _bed.CreateVolumeAsync(64 * MiB);
        _bed.GuestWrite(volume, 0, 24 * MiB, 0x11);
        await _engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, volume, Guid.NewGuid()));
        _bed.GuestWrite(volume, 40 * MiB, 4 * MiB, 0x22);
        var atS2 = _bed.SaveReference(volume, "at-s2");
        var s2 = Guid.NewGuid();
        await _engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, volume, s2));
        _bed.GuestWrite(volume, 0, 4 * MiB, 0x33); // after the snapshot: must not show in the clone

        var clone = Guid.NewGuid();
        var result = await _engine.CreateVolumeFromSnapshotAsync(new CreateVolumeFromSnapshotRequest(Export, volume, s2, clone, targetFormat));

        Assert.Contains("copied server-side (copy_file_range)", result.Message, StringComparison.Ordinal);
        var calls = CopyFileRangeCalls();
        Assert.True(calls.Count > 0, "qemu-img made no copy_file_range call");
        Assert.DoesNotContain(calls, c => c.Contains("= -1", StringComparison.Ordinal));
        Assert.True(_bed.SameContents(_bed.PathOf(VolumeFileNames.Base(clone)), targetFormat, atS2), "qemu-img compare: the clone differs from the snapshot");
        Assert.Empty(_bed.ShareProblems());
        Assert.DoesNotContain(_bed.Listing(), f => f.Contains(".tmp-", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Server_side_copy_switched_off_reads_and_writes_in_the_pinned_mode()
    {
        var engine = _bed.EngineWith(new VolumeEngineOptions { ServerSideCopy = false, CopyWithDirectIo = false });
        var volume = await _bed.CreateVolumeAsync(32 * MiB);
        _bed.GuestWrite(volume, 0, 8 * MiB, 0x44);
        var reference = _bed.SaveReference(volume, "now");
        var clone = Guid.NewGuid();

        var result = await engine.CloneVolumeAsync(new CloneVolumeRequest(Export, volume, clone));

        Assert.Contains("copied through the page cache", result.Message, StringComparison.Ordinal);
        Assert.True(_bed.SameContents(_bed.PathOf(VolumeFileNames.Base(clone)), ImageFormat.Raw, reference));
        Assert.Null(CopyModeProbe.Latest(_bed.Share)); // pinned: nothing measured
    }

    /// <summary>By default a local file system's in-kernel copy is not used: it goes through this host's page cache,
    /// whose writeback then delays every other fsync on the host (the pipeline benchmark's head-of-line figure).</summary>
    [Fact]
    public async Task By_default_a_clone_on_a_local_file_system_reads_and_writes_instead_of_copying_in_the_kernel()
    {
        var engine = _bed.EngineWith(new VolumeEngineOptions { LockTimeout = TimeSpan.FromSeconds(30), CopyWithDirectIo = true }, _qemu);
        var volume = await _bed.CreateVolumeAsync(32 * MiB);
        _bed.GuestWrite(volume, 0, 8 * MiB, 0x55);
        var reference = _bed.SaveReference(volume, "now");
        var clone = Guid.NewGuid();

        var result = await engine.CloneVolumeAsync(new CloneVolumeRequest(Export, volume, clone));

        Assert.Contains("copied with O_DIRECT", result.Message, StringComparison.Ordinal);
        Assert.Empty(CopyFileRangeCalls());
        Assert.True(_bed.SameContents(_bed.PathOf(VolumeFileNames.Base(clone)), ImageFormat.Raw, reference));
    }

    private List<string> CopyFileRangeCalls() =>
        Directory.EnumerateFiles(_bed.References, Path.GetFileName(_trace) + ".*")
            .SelectMany(File.ReadAllLines)
            .Where(l => l.Contains("copy_file_range(", StringComparison.Ordinal))
            .ToList();
}
