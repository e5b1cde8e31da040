using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Tests.Support;
using static NfsVolumeWorker.Storage.Tests.Support.EngineTestBed;

namespace NfsVolumeWorker.Storage.Tests.Engine;

/// <summary>
/// A full share, for real: the share is a 96 MiB ext4 loop-mounted by the test. A clone or a merge that cannot
/// fit is refused with NoSpace before it touches anything; one that runs out of space midway (the file system
/// filled by someone else after the check) fails with NoSpace, leaves no partial volume under a real name and
/// the chain readable; either succeeds once space is freed.
/// </summary>
public sealed class FullShareSpecs : IDisposable
{
    private readonly StepHook _hook = new();
    private readonly EngineTestBed _bed;
    private readonly LoopFileSystem _disk;

    public FullShareSpecs()
    {
        _bed = new EngineTestBed(steps: _hook);
        _disk = LoopFileSystem.MountExt4(_bed.Share.LocalPath, _bed.References, 96 * MiB);
    }

    public void Dispose()
    {
        _disk.Dispose();
        _bed.Dispose();
    }

    /// <summary>A raw volume of 48 MiB with 24 MiB written, and a snapshot of it with 8 MiB written after.</summary>
    private async Task<(Guid Volume, Guid Snapshot, string Reference)> VolumeWithDataAsync()
    {
        var volume = await _bed.CreateVolumeAsync(48 * MiB);
        _bed.GuestWrite(volume, 0, 24 * MiB, 0x11);
        var reference = _bed.SaveReference(volume, "at-snapshot");
        var snapshot = Guid.NewGuid();
        await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, volume, snapshot));
        _bed.GuestWrite(volume, 32 * MiB, 8 * MiB, 0x22);
        return (volume, snapshot, reference);
    }

    private List<string> Unchanged(List<string> before)
    {
        var after = _bed.Listing().Where(f => !f.StartsWith("filler-", StringComparison.Ordinal)).ToList();
        Assert.Equal(before, after);
        return after;
    }

    [Fact]
    public async Task A_clone_that_cannot_fit_is_refused_with_NoSpace_before_anything_is_written_and_runs_once_space_is_freed()
    {
        var (volume, snapshot, reference) = await VolumeWithDataAsync();
        var before = _bed.Listing();
        var filler = _disk.Fill(leaveBytes: 8 * MiB);
        var clone = Guid.NewGuid();

        var e = await Assert.ThrowsAnyAsync<StorageException>(() => _bed.Engine.CreateVolumeFromSnapshotAsync(new CreateVolumeFromSnapshotRequest(Export, volume, snapshot, clone)));
        Assert.Equal(StorageErrorCode.NoSpace, e.Code);
        Assert.True(e.IsTransient);
        Assert.Contains("nothing was changed", e.Message, StringComparison.Ordinal);
        Unchanged(before);
        Assert.Null(OperationJournal.Read(_bed.Share, volume));
        Assert.Empty(_bed.ShareProblems());

        File.Delete(filler);
        await _bed.Engine.CreateVolumeFromSnapshotAsync(new CreateVolumeFromSnapshotRequest(Export, volume, snapshot, clone));
        Assert.True(_bed.SameContents(_bed.PathOf(VolumeFileNames.Base(clone)), ImageFormat.Raw, reference));
        Assert.Empty(_bed.ShareProblems());
    }

    [Fact]
    public async Task A_clone_that_runs_out_of_space_midway_fails_with_NoSpace_and_leaves_no_partial_volume()
    {
        var (volume, snapshot, reference) = await VolumeWithDataAsync();
        var before = _bed.Listing();
        string? filler = null;
        // After the space check passed: someone else fills the share while the copy is about to run.
        _hook.On = (step, _) => filler ??= step == OperationSteps.CloneJournaled ? _disk.Fill() : null;
        var clone = Guid.NewGuid();

        var e = await Assert.ThrowsAnyAsync<StorageException>(() => _bed.Engine.CreateVolumeFromSnapshotAsync(new CreateVolumeFromSnapshotRequest(Export, volume, snapshot, clone)));
        Assert.Equal(StorageErrorCode.NoSpace, e.Code);
        Assert.NotNull(filler);
        Unchanged(before); // no volume-<clone>, no temp file
        Assert.Null(OperationJournal.Read(_bed.Share, volume));
        Assert.Empty(_bed.ShareProblems());
        Assert.True(_bed.SnapshotShows(volume, snapshot, reference));

        _hook.On = null;
        File.Delete(filler!);
        await _bed.Engine.CreateVolumeFromSnapshotAsync(new CreateVolumeFromSnapshotRequest(Export, volume, snapshot, clone));
        Assert.True(_bed.SameContents(_bed.PathOf(VolumeFileNames.Base(clone)), ImageFormat.Raw, reference));
    }

    [Fact]
    public async Task A_merge_that_cannot_fit_is_refused_with_NoSpace_before_it_starts_and_runs_once_space_is_freed()
    {
        var (volume, snapshot, _) = await VolumeWithDataAsync();
        var now = _bed.SaveReference(volume, "now");
        var before = _bed.Listing();
        var info = File.ReadAllBytes(_bed.PathOf(VolumeFileNames.Info(volume)));
        var filler = _disk.Fill(leaveBytes: 2 * MiB);

        var e = await Assert.ThrowsAnyAsync<StorageException>(() => _bed.Engine.DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, volume, snapshot)));
        Assert.Equal(StorageErrorCode.NoSpace, e.Code);
        Unchanged(before);
        Assert.Equal(info, File.ReadAllBytes(_bed.PathOf(VolumeFileNames.Info(volume))));
        Assert.Null(OperationJournal.Read(_bed.Share, volume));
        Assert.Empty(_bed.ShareProblems());

        File.Delete(filler);
        await _bed.Engine.DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, volume, snapshot));
        Assert.Empty(_bed.Info(volume)!.Snapshots);
        Assert.True(_bed.SameContents(_bed.PathOf(_bed.Info(volume)!.Active), ImageFormat.Raw, now));
        Assert.Empty(_bed.ShareProblems());
    }

    [Fact]
    public async Task A_merge_that_runs_out_of_space_midway_fails_with_NoSpace_keeps_the_chain_readable_and_finishes_later()
    {
        var (volume, snapshot, _) = await VolumeWithDataAsync();
        var now = _bed.SaveReference(volume, "now");
        string? filler = null;
        _hook.On = (step, _) => filler ??= step == OperationSteps.DeleteSnapshotJournaled ? _disk.Fill() : null;

        var e = await Assert.ThrowsAnyAsync<StorageException>(() => _bed.Engine.DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, volume, snapshot)));
        Assert.Equal(StorageErrorCode.NoSpace, e.Code);
        Assert.NotNull(filler);
        // Journaled and half merged: the volume still reads exactly as before, and every image checks clean.
        Assert.NotNull(OperationJournal.Read(_bed.Share, volume));
        Assert.True(_bed.SameContents(_bed.PathOf(_bed.Info(volume)!.Active), ImageFormat.Qcow2, now));
        Assert.Empty(_bed.ShareProblems());

        _hook.On = null;
        File.Delete(filler!);
        await _bed.Engine.DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, volume, snapshot));
        Assert.Null(OperationJournal.Read(_bed.Share, volume));
        Assert.Empty(_bed.Info(volume)!.Snapshots);
        Assert.True(_bed.SameContents(_bed.PathOf(_bed.Info(volume)!.Active), ImageFormat.Raw, now));
        Assert.Empty(_bed.ShareProblems());
    }

    /// <summary>A qcow2 volume of 48 MiB: 4 MiB in the base, a snapshot, then 30 MiB in the overlay. Deleting the
    /// snapshot pulls the base up (4 MiB) rather than committing the overlay down (30 MiB).</summary>
    private async Task<(Guid Volume, Guid Snapshot, string Now)> PullUpCandidateAsync()
    {
        var volume = await _bed.CreateVolumeAsync(48 * MiB, ImageFormat.Qcow2);
        _bed.GuestWrite(volume, 0, 4 * MiB, 0x31);
        var snapshot = Guid.NewGuid();
        await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, volume, snapshot));
        _bed.GuestWrite(volume, 8 * MiB, 30 * MiB, 0x32);
        return (volume, snapshot, _bed.SaveReference(volume, "pull-up-now"));
    }

    [Fact]
    public async Task A_pull_up_that_cannot_fit_is_refused_with_NoSpace_before_it_starts_and_runs_once_space_is_freed()
    {
        var (volume, snapshot, now) = await PullUpCandidateAsync();
        var before = _bed.Listing();
        var info = File.ReadAllBytes(_bed.PathOf(VolumeFileNames.Info(volume)));
        var filler = _disk.Fill(leaveBytes: 2 * MiB);

        var e = await Assert.ThrowsAnyAsync<StorageException>(() => _bed.Engine.DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, volume, snapshot)));
        Assert.Equal(StorageErrorCode.NoSpace, e.Code);
        Assert.Contains("nothing was changed", e.Message, StringComparison.Ordinal);
        Unchanged(before);
        Assert.Equal(info, File.ReadAllBytes(_bed.PathOf(VolumeFileNames.Info(volume))));
        Assert.Null(OperationJournal.Read(_bed.Share, volume));
        Assert.Empty(_bed.ShareProblems());

        File.Delete(filler);
        var done = await _bed.Engine.DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, volume, snapshot));
        Assert.Contains("pull-up", done.Message, StringComparison.Ordinal);
        Assert.Equal(VolumeFileNames.Base(volume), _bed.Info(volume)!.Active);
        Assert.True(_bed.SameContents(_bed.PathOf(VolumeFileNames.Base(volume)), ImageFormat.Qcow2, now));
        Assert.Empty(_bed.ShareProblems());
    }

    [Fact]
    public async Task A_pull_up_that_runs_out_of_space_midway_fails_with_NoSpace_keeps_the_chain_readable_and_finishes_later()
    {
        var (volume, snapshot, now) = await PullUpCandidateAsync();
        string? filler = null;
        _hook.On = (step, _) => filler ??= step == OperationSteps.DeleteSnapshotJournaled ? _disk.Fill() : null;

        var e = await Assert.ThrowsAnyAsync<StorageException>(() => _bed.Engine.DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, volume, snapshot)));
        Assert.Equal(StorageErrorCode.NoSpace, e.Code);
        Assert.NotNull(filler);
        Assert.Equal(MergeDirection.PullUp, OperationJournal.Read(_bed.Share, volume)?.Merge?.Direction);
        Assert.True(_bed.SameContents(_bed.PathOf(_bed.Info(volume)!.Active), ImageFormat.Qcow2, now));
        Assert.Empty(_bed.ShareProblems());

        _hook.On = null;
        File.Delete(filler!);
        var done = await _bed.Engine.DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, volume, snapshot));
        Assert.Contains("pull-up", done.Message, StringComparison.Ordinal);
        Assert.Null(OperationJournal.Read(_bed.Share, volume));
        Assert.Empty(_bed.Info(volume)!.Snapshots);
        Assert.True(_bed.SameContents(_bed.PathOf(VolumeFileNames.Base(volume)), ImageFormat.Qcow2, now));
        Assert.Empty(_bed.ShareProblems());
    }

    private sealed class StepHook : IStepObserver
    {
        public Func<string, Guid, string?>? On { get; set; }

        public void OnStep(string stepName, Guid volumeId) => On?.Invoke(stepName, volumeId);
    }
}
