using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Tests.Support;
using static NfsVolumeWorker.Storage.Tests.Engine.CrashState;
using static NfsVolumeWorker.Storage.Tests.Support.EngineTestBed;

namespace NfsVolumeWorker.Storage.Tests.Engine;

/// <summary>
/// The states Cinder's own driver leaves after a crash (see reference/cinder-remotefs.md, "Known weak spots"),
/// handed to the engine: it refuses what it cannot read with a clear code and touches nothing, and adopts
/// what it can. Repair is <c>nfsvol check --repair</c>'s job, not the engine's.
/// </summary>
public sealed class CinderBadStatesSpecs : IDisposable
{
    private readonly EngineTestBed _bed = new();
    private readonly RefusalBed _refusals;

    public CinderBadStatesSpecs() => _refusals = new RefusalBed(_bed);

    public void Dispose()
    {
        _refusals.Dispose();
        _bed.Dispose();
    }

    private string InfoPath => _bed.PathOf(VolumeFileNames.Info(V));

    private string File_(Guid snapshot) => _bed.PathOf(VolumeFileNames.Overlay(V, snapshot));

    [Theory]
    [InlineData("empty")]
    [InlineData("truncated")]
    [InlineData("cut after the first entry")]
    public async Task An_info_file_torn_by_cinders_in_place_rewrite_makes_every_operation_refuse_with_InfoFileCorrupt_and_touch_nothing(string how)
    {
        await CrashState.SetUpAsync(_bed);
        var bytes = File.ReadAllBytes(InfoPath);
        File.WriteAllBytes(InfoPath, how switch
        {
            "empty" => [],
            "truncated" => bytes[..(bytes.Length / 2)],
            _ => bytes[..(Array.IndexOf(bytes, (byte)',') + 1)],
        });

        var operations = RefusalBed.EveryOperationOn(V, B, W);
        for (var i = 0; i < operations.Length; i++)
        {
            var e = await _refusals.AssertRefusedAsync(StorageErrorCode.InfoFileCorrupt, operations[i], $"{RefusalBed.OperationNames[i]} with a {how} .info");
            Assert.Contains(VolumeFileNames.Info(V), e.Message, StringComparison.Ordinal);
        }
        Assert.Empty(CrashAssertions.JournalEntries(_bed.Share));
    }

    /// <summary>Cinder deletes a middle snapshot as: commit, delete the file, rebase the file above. A crash
    /// before the rebase leaves the active overlay naming a backing file that no longer exists.</summary>
    [Fact]
    public async Task An_active_overlay_whose_backing_file_cinder_deleted_before_rebasing_is_refused_as_ChainBroken_naming_the_missing_file()
    {
        await CrashState.SetUpAsync(_bed);
        RequiredTool.RunChecked(RequiredTool.QemuImg, "commit", "-q", "-f", "qcow2", "-d", File_(B));
        File.Delete(File_(B));
        // [crash]: the rebase of volume-V.C onto volume-V.A and the .info update never happen.

        var operations = RefusalBed.EveryOperationOn(V, C, W);
        for (var i = 0; i < operations.Length; i++)
        {
            var e = await _refusals.AssertRefusedAsync(StorageErrorCode.ChainBroken, operations[i], RefusalBed.OperationNames[i] + " on a broken chain");
            Assert.Contains($"{VolumeFileNames.Overlay(V, C)} names backing file {VolumeFileNames.Overlay(V, B)}, which does not exist", e.Message, StringComparison.Ordinal);
            Assert.Contains("nfsvol check", e.Message, StringComparison.Ordinal);
        }
        // Cinder's retry of the same delete is refused the same way (the engine does not guess the repair).
        await _refusals.AssertRefusedAsync(StorageErrorCode.ChainBroken,
            e => e.DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, V, B)), "delete of the half-deleted snapshot");
        Assert.Empty(CrashAssertions.JournalEntries(_bed.Share));
    }

    /// <summary>Cinder creates the overlay (create, rebase -u to a relative name) and writes the .info last: a crash
    /// in between leaves an overlay no .info names.</summary>
    [Fact]
    public async Task An_orphan_overlay_from_a_crash_before_cinders_info_write_is_adopted_by_the_same_snapshot_and_other_operations_still_work()
    {
        var state = await CrashState.SetUpAsync(_bed);
        var infoBefore = File.ReadAllBytes(InfoPath);
        RequiredTool.RunChecked(RequiredTool.QemuImg, "create", "-q", "-f", "qcow2", "-b", _bed.PathOf(VolumeFileNames.Overlay(V, C)), "-F", "qcow2", File_(D), "64M");
        RequiredTool.RunChecked(RequiredTool.QemuImg, "rebase", "-u", "-f", "qcow2", "-b", VolumeFileNames.Overlay(V, C), "-F", "qcow2", File_(D));
        var orphanInode = Inode(File_(D));

        // Other operations work with the orphan present and leave it alone.
        await _bed.Engine.DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, V, A));
        await _bed.Engine.CloneVolumeAsync(new CloneVolumeRequest(Export, V, W));
        Assert.True(_bed.SameContents(_bed.PathOf(VolumeFileNames.Base(W)), ImageFormat.Raw, state.VNow));
        Assert.True(_bed.SnapshotShows(V, C, state.SnapshotReferences[C]));
        Assert.Equal(orphanInode, Inode(File_(D)));
        Assert.NotEqual(infoBefore, File.ReadAllBytes(InfoPath));

        var adopted = await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, V, D));

        Assert.Equal(OperationOutcome.Completed, adopted.Outcome);
        Assert.Equal(orphanInode, Inode(File_(D))); // the same file, not a new one
        Assert.Equal(VolumeFileNames.Overlay(V, D), _bed.Info(V)!.Active);
        Assert.True(_bed.SnapshotShows(V, D, state.VNow));
        Assert.Empty(_bed.ShareProblems());
        Assert.Empty(_bed.Engine.ReadChain(Export, V).Problems);
    }

    /// <summary>A crash between Cinder's qemu-img create (absolute backing path) and its rebase -u (relative)
    /// leaves an orphan that names its backing file by absolute path: not adoptable, but nothing references it,
    /// so the same snapshot replaces it.</summary>
    [Fact]
    public async Task An_orphan_overlay_with_an_absolute_backing_path_is_replaced_by_the_same_snapshot()
    {
        var state = await CrashState.SetUpAsync(_bed);
        RequiredTool.RunChecked(RequiredTool.QemuImg, "create", "-q", "-f", "qcow2", "-b", _bed.PathOf(VolumeFileNames.Overlay(V, C)), "-F", "qcow2", File_(D), "64M");

        var result = await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, V, D));

        Assert.Equal(OperationOutcome.Completed, result.Outcome);
        var header = Storage.Qcow2.ImageHeaderReader.Read(File_(D)).Qcow2!;
        Assert.Equal((VolumeFileNames.Overlay(V, C), "qcow2"), (header.BackingFile, header.BackingFormat));
        Assert.True(_bed.SnapshotShows(V, D, state.VNow));
        Assert.Empty(_bed.ShareProblems());
    }

    private static ulong Inode(string path)
    {
        var stat = RequiredTool.RunChecked("/usr/bin/stat", "-c", "%i", path);
        return ulong.Parse(stat.Trim(), System.Globalization.CultureInfo.InvariantCulture);
    }
}
