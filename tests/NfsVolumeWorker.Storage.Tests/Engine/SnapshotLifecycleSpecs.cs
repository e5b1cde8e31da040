using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Storage.Info;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Qcow2;
using NfsVolumeWorker.Storage.Tests.Support;
using static NfsVolumeWorker.Storage.Tests.Support.EngineTestBed;

namespace NfsVolumeWorker.Storage.Tests.Engine;

public sealed class SnapshotLifecycleSpecs : IDisposable
{
    private readonly EngineTestBed _bed = new();

    public void Dispose() => _bed.Dispose();

    private Task<OperationResult> Snapshot(Guid volume, Guid snapshot) =>
        _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, volume, snapshot));

    private Task<OperationResult> DeleteSnapshot(Guid volume, Guid snapshot) =>
        _bed.Engine.DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, volume, snapshot));

    [Fact]
    public async Task A_request_with_a_zero_lock_timeout_is_refused_VolumeBusy_at_once_while_another_holds_the_volume_and_touches_nothing()
    {
        var v = await _bed.CreateVolumeAsync();
        var before = _bed.Listing();
        var started = System.Diagnostics.Stopwatch.GetTimestamp();

        using (await Locking.VolumeLock.AcquireAsync(_bed.Share, v, TimeSpan.FromSeconds(5), CancellationToken.None))
        {
            var busy = await Assert.ThrowsAsync<StorageException>(() =>
                _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, v, Guid.NewGuid()) { LockTimeout = TimeSpan.Zero }));
            Assert.Equal(StorageErrorCode.VolumeBusy, busy.Code);
            Assert.True(busy.IsTransient);
        }

        // Not the engine's own timeout (30 s here): one try.
        Assert.True(System.Diagnostics.Stopwatch.GetElapsedTime(started) < TimeSpan.FromSeconds(10));
        Assert.Equal(before, _bed.Listing());
        var s = Guid.NewGuid();
        await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, v, s) { LockTimeout = TimeSpan.Zero }); // free: runs
        Assert.Contains($"volume-{v}.{s}", _bed.Listing());
    }

    [Fact]
    public async Task Snapshots_are_laid_out_exactly_as_cinders_nfs_driver_lays_them_out()
    {
        var v = await _bed.CreateVolumeAsync();
        var a = Guid.NewGuid();
        var b = Guid.NewGuid();
        await Snapshot(v, a);
        await Snapshot(v, b);

        var baseName = $"volume-{v}";
        Assert.Equal(new[] { baseName, $"{baseName}.{a}", $"{baseName}.{b}", $"{baseName}.info" }.Order(StringComparer.Ordinal),
            _bed.Listing().Where(n => !n.StartsWith('.')));
        var expectedInfo = new SortedDictionary<string, string>(StringComparer.Ordinal)
        {
            ["active"] = $"{baseName}.{b}", [a.ToString()] = $"{baseName}.{a}", [b.ToString()] = $"{baseName}.{b}",
        };
        var json = "{\n" + string.Join(",\n", expectedInfo.Select(kv => $" \"{kv.Key}\": \"{kv.Value}\"")) + "\n}";
        Assert.Equal(json, File.ReadAllText(_bed.PathOf($"{baseName}.info")));

        var overlayA = ImageHeaderReader.Read(_bed.PathOf($"{baseName}.{a}")).Qcow2!;
        Assert.Equal((baseName, "raw"), (overlayA.BackingFile, overlayA.BackingFormat));
        var overlayB = ImageHeaderReader.Read(_bed.PathOf($"{baseName}.{b}")).Qcow2!;
        Assert.Equal(($"{baseName}.{a}", "qcow2"), (overlayB.BackingFile, overlayB.BackingFormat));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.GroupWrite,
            File.GetUnixFileMode(_bed.PathOf($"{baseName}.{b}")));
        Assert.Empty(_bed.ShareProblems());
    }

    [Fact]
    public async Task Every_snapshot_still_reads_back_its_data_after_the_middle_one_is_deleted()
    {
        var v = await _bed.CreateVolumeAsync();
        var (a, b, c) = (Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid());
        _bed.GuestWrite(v, 0, 4 * MiB, 0x11);
        var refA = _bed.SaveReference(v, "a");
        await Snapshot(v, a);
        _bed.GuestWrite(v, 2 * MiB, 4 * MiB, 0x22);
        await Snapshot(v, b);
        _bed.GuestWrite(v, 5 * MiB, 4 * MiB, 0x33);
        var refC = _bed.SaveReference(v, "c");
        await Snapshot(v, c);
        _bed.GuestWrite(v, 8 * MiB, 1 * MiB, 0x44);
        var refNow = _bed.SaveReference(v, "now");

        var result = await DeleteSnapshot(v, b);

        Assert.Equal(OperationOutcome.Completed, result.Outcome);
        Assert.False(File.Exists(_bed.PathOf($"volume-{v}.{b}")));
        var info = _bed.Info(v)!;
        Assert.Equal(new[] { a, c }.Order(), info.Snapshots.Keys.Order());
        Assert.True(_bed.SnapshotShows(v, a, refA));
        Assert.True(_bed.SnapshotShows(v, c, refC));
        var chain = _bed.Engine.ReadChain(Export, v);
        Assert.True(_bed.SameContents(_bed.PathOf(chain.Active.FileName), ImageFormat.Qcow2, refNow));
        Assert.Empty(chain.Problems);
        Assert.Empty(_bed.ShareProblems());
        Assert.DoesNotContain(_bed.Listing(), n => n.Contains(".tmp-", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Deleting_the_newest_snapshot_merges_it_down_and_makes_its_backing_file_active()
    {
        var v = await _bed.CreateVolumeAsync();
        var a = Guid.NewGuid();
        await Snapshot(v, a);
        _bed.GuestWrite(v, MiB, 3 * MiB, 0x5a);
        var refNow = _bed.SaveReference(v, "now");

        await DeleteSnapshot(v, a);

        var info = _bed.Info(v)!;
        Assert.Equal($"volume-{v}", info.Active);
        Assert.Empty(info.Snapshots);
        Assert.True(_bed.SameContents(_bed.PathOf($"volume-{v}"), ImageFormat.Raw, refNow));
        Assert.False(File.Exists(_bed.PathOf($"volume-{v}.{a}")));
        Assert.Empty(_bed.ShareProblems());
    }

    [Fact]
    public async Task Deleting_the_oldest_snapshot_keeps_the_newer_snapshots_data()
    {
        var v = await _bed.CreateVolumeAsync(format: ImageFormat.Qcow2);
        var (a, b) = (Guid.NewGuid(), Guid.NewGuid());
        _bed.GuestWrite(v, 0, 2 * MiB, 0x01);
        await Snapshot(v, a);
        _bed.GuestWrite(v, MiB, 2 * MiB, 0x02);
        var refB = _bed.SaveReference(v, "b");
        await Snapshot(v, b);
        _bed.GuestWrite(v, 0, MiB, 0x03);

        await DeleteSnapshot(v, a);

        Assert.True(_bed.SnapshotShows(v, b, refB));
        var chain = _bed.Engine.ReadChain(Export, v);
        Assert.Equal(new[] { $"volume-{v}.{b}", $"volume-{v}" }, chain.Images.Select(i => i.FileName));
        Assert.Empty(_bed.ShareProblems());
    }

    [Fact]
    public async Task Deleting_a_snapshot_that_is_not_recorded_succeeds_and_changes_nothing()
    {
        var v = await _bed.CreateVolumeAsync();
        var a = Guid.NewGuid();
        await Snapshot(v, a);
        var before = _bed.Listing();
        var infoBefore = File.ReadAllBytes(_bed.PathOf($"volume-{v}.info"));

        var result = await DeleteSnapshot(v, Guid.NewGuid());

        Assert.Equal(OperationOutcome.AlreadyDone, result.Outcome);
        Assert.Equal(before, _bed.Listing());
        Assert.Equal(infoBefore, File.ReadAllBytes(_bed.PathOf($"volume-{v}.info")));
    }

    [Fact]
    public async Task A_stale_snapshot_whose_overlay_has_no_backing_file_is_removed()
    {
        var v = await _bed.CreateVolumeAsync();
        var (a, stale) = (Guid.NewGuid(), Guid.NewGuid());
        await Snapshot(v, a);
        var staleFile = $"volume-{v}.{stale}";
        RequiredTool.RunChecked(RequiredTool.QemuImg, "create", "-q", "-f", "qcow2", _bed.PathOf(staleFile), "64M");
        var info = _bed.Info(v)!;
        InfoFile.Write(_bed.PathOf($"volume-{v}.info"), info with { Snapshots = info.Snapshots.Add(stale, staleFile) }, UnixFileMode.UserRead | UnixFileMode.UserWrite);

        await DeleteSnapshot(v, stale);

        Assert.False(File.Exists(_bed.PathOf(staleFile)));
        Assert.Equal(new[] { a }, _bed.Info(v)!.Snapshots.Keys);
        Assert.Empty(_bed.ShareProblems());
    }

    [Theory]
    [InlineData(ImageFormat.Raw)]
    [InlineData(ImageFormat.Qcow2)]
    public async Task A_volume_created_from_any_snapshot_is_a_full_independent_copy_of_that_snapshot(ImageFormat targetFormat)
    {
        var v = await _bed.CreateVolumeAsync();
        var (a, b) = (Guid.NewGuid(), Guid.NewGuid());
        _bed.GuestWrite(v, 0, 3 * MiB, 0x61);
        var refA = _bed.SaveReference(v, "a");
        await Snapshot(v, a);
        _bed.GuestWrite(v, 2 * MiB, 3 * MiB, 0x62);
        var refB = _bed.SaveReference(v, "b");
        await Snapshot(v, b);
        _bed.GuestWrite(v, 0, MiB, 0x63);
        var (fromA, fromB) = (Guid.NewGuid(), Guid.NewGuid());

        await _bed.Engine.CreateVolumeFromSnapshotAsync(new CreateVolumeFromSnapshotRequest(Export, v, a, fromA, targetFormat));
        await _bed.Engine.CreateVolumeFromSnapshotAsync(new CreateVolumeFromSnapshotRequest(Export, v, b, fromB, targetFormat, NewSizeBytes: 128 * MiB));
        await _bed.Engine.DeleteVolumeAsync(new DeleteVolumeRequest(Export, v));

        Assert.True(_bed.SameContents(_bed.PathOf($"volume-{fromA}"), targetFormat, refA));
        Assert.Null(ImageHeaderReader.Read(_bed.PathOf($"volume-{fromA}")).Qcow2?.BackingFile);
        var grown = _bed.Engine.ReadChain(Export, fromB, targetFormat);
        Assert.Equal(128 * MiB, grown.Active.VirtualSize);
        Assert.True(_bed.ImageReads(_bed.PathOf($"volume-{fromB}"), targetFormat, 2 * MiB, 3 * MiB, 0x62));
        Assert.True(_bed.ImageReads(_bed.PathOf($"volume-{fromB}"), targetFormat, 64 * MiB, MiB, 0x00));
        Assert.DoesNotContain(_bed.Listing(), n => n.Contains(v.ToString(), StringComparison.Ordinal) && n.StartsWith("volume-", StringComparison.Ordinal));
        Assert.Empty(_bed.ShareProblems());
    }

    [Fact]
    public async Task Cloning_a_volume_with_snapshots_goes_through_a_temporary_snapshot_that_is_gone_afterwards()
    {
        var v = await _bed.CreateVolumeAsync();
        var a = Guid.NewGuid();
        _bed.GuestWrite(v, 0, 2 * MiB, 0x71);
        await Snapshot(v, a);
        _bed.GuestWrite(v, MiB, 2 * MiB, 0x72);
        var refNow = _bed.SaveReference(v, "now");
        var infoBefore = File.ReadAllBytes(_bed.PathOf($"volume-{v}.info"));
        var clone = Guid.NewGuid();

        await _bed.Engine.CloneVolumeAsync(new CloneVolumeRequest(Export, v, clone));

        Assert.True(_bed.SameContents(_bed.PathOf($"volume-{clone}"), ImageFormat.Raw, refNow));
        Assert.Equal(infoBefore, File.ReadAllBytes(_bed.PathOf($"volume-{v}.info")));
        Assert.False(File.Exists(_bed.PathOf($"volume-{v}.{VolumeEngine.TemporarySnapshotId(clone)}")));
        Assert.True(_bed.SameContents(_bed.PathOf($"volume-{v}.{a}"), ImageFormat.Qcow2, refNow));
        Assert.Empty(_bed.ShareProblems());
    }

    [Fact]
    public async Task Cloning_a_volume_without_snapshots_copies_it_and_grows_it_to_the_new_size()
    {
        var v = await _bed.CreateVolumeAsync(format: ImageFormat.Qcow2);
        _bed.GuestWrite(v, 0, 2 * MiB, 0x81);
        var clone = Guid.NewGuid();

        await _bed.Engine.CloneVolumeAsync(new CloneVolumeRequest(Export, v, clone, ImageFormat.Qcow2, 96 * MiB));

        var chain = _bed.Engine.ReadChain(Export, clone, ImageFormat.Qcow2);
        Assert.Equal(96 * MiB, chain.Active.VirtualSize);
        Assert.True(_bed.ImageReads(_bed.PathOf($"volume-{clone}"), ImageFormat.Qcow2, 0, 2 * MiB, 0x81));
        Assert.Null(_bed.Info(v));
    }

    [Fact]
    public async Task Reverting_to_the_newest_snapshot_discards_later_writes()
    {
        var v = await _bed.CreateVolumeAsync();
        var a = Guid.NewGuid();
        _bed.GuestWrite(v, 0, MiB, 0x91);
        var refA = _bed.SaveReference(v, "a");
        await Snapshot(v, a);
        _bed.GuestWrite(v, 0, 2 * MiB, 0x92);

        await _bed.Engine.RevertToSnapshotAsync(new RevertToSnapshotRequest(Export, v, a));

        var chain = _bed.Engine.ReadChain(Export, v);
        Assert.Equal($"volume-{v}.{a}", chain.Active.FileName);
        Assert.True(_bed.SameContents(_bed.PathOf(chain.Active.FileName), ImageFormat.Qcow2, refA));
        Assert.Empty(_bed.ShareProblems());
    }

    [Fact]
    public async Task Reverting_to_an_older_snapshot_is_refused_and_touches_nothing()
    {
        var v = await _bed.CreateVolumeAsync();
        var (a, b) = (Guid.NewGuid(), Guid.NewGuid());
        await Snapshot(v, a);
        await Snapshot(v, b);
        _bed.GuestWrite(v, 0, MiB, 0x93);
        var before = _bed.Listing().ToDictionary(n => n, n => File.GetLastWriteTimeUtc(_bed.PathOf(n)));

        var e = await Assert.ThrowsAsync<StorageException>(() => _bed.Engine.RevertToSnapshotAsync(new RevertToSnapshotRequest(Export, v, a)));

        Assert.Equal(StorageErrorCode.SnapshotNotNewest, e.Code);
        Assert.Equal(before, _bed.Listing().ToDictionary(n => n, n => File.GetLastWriteTimeUtc(_bed.PathOf(n))));
    }

    [Fact]
    public async Task Extending_a_volume_with_snapshots_grows_the_active_image_and_keeps_every_snapshot()
    {
        var v = await _bed.CreateVolumeAsync(64 * MiB);
        var a = Guid.NewGuid();
        _bed.GuestWrite(v, 60 * MiB, 4 * MiB, 0xa1);
        var refA = _bed.SaveReference(v, "a");
        await Snapshot(v, a);

        await _bed.Engine.ExtendVolumeAsync(new ExtendVolumeRequest(Export, v, 128 * MiB));
        _bed.GuestWrite(v, 100 * MiB, MiB, 0xa2);

        var info = _bed.Engine.GetConnectionInfo(new ConnectionInfoRequest(Export, v, 128 * MiB));
        Assert.Equal(("nfs", "qcow2", $"volume-{v}.{a}", 128 * MiB), (info.DriverVolumeType, info.Format, info.Name, info.VirtualSize));
        Assert.True(_bed.SnapshotShows(v, a, refA));

        // Deleting the snapshot after the extend merges into the smaller base: the tail must survive.
        await DeleteSnapshot(v, a);
        var chain = _bed.Engine.ReadChain(Export, v);
        Assert.Equal((ImageFormat.Raw, 128 * MiB), (chain.Active.Format, chain.Active.VirtualSize));
        Assert.True(_bed.ImageReads(_bed.PathOf($"volume-{v}"), ImageFormat.Raw, 100 * MiB, MiB, 0xa2));
        Assert.True(_bed.ImageReads(_bed.PathOf($"volume-{v}"), ImageFormat.Raw, 60 * MiB, 4 * MiB, 0xa1));
    }

    [Fact]
    public async Task Shrinking_is_refused_and_extending_to_the_same_size_is_already_done()
    {
        var v = await _bed.CreateVolumeAsync(64 * MiB);

        var e = await Assert.ThrowsAsync<StorageException>(() => _bed.Engine.ExtendVolumeAsync(new ExtendVolumeRequest(Export, v, 32 * MiB)));
        var same = await _bed.Engine.ExtendVolumeAsync(new ExtendVolumeRequest(Export, v, 64 * MiB));

        Assert.Equal(StorageErrorCode.ShrinkNotAllowed, e.Code);
        Assert.Equal(OperationOutcome.AlreadyDone, same.Outcome);
        Assert.Equal(64 * MiB, new FileInfo(_bed.PathOf($"volume-{v}")).Length);
    }

    [Fact]
    public async Task Connection_info_refuses_a_volume_whose_size_is_not_the_expected_one()
    {
        var v = await _bed.CreateVolumeAsync(64 * MiB);

        var ok = _bed.Engine.GetConnectionInfo(new ConnectionInfoRequest(Export, v, 64 * MiB));
        var e = Assert.Throws<StorageException>(() => _bed.Engine.GetConnectionInfo(new ConnectionInfoRequest(Export, v, 1024 * MiB)));

        Assert.Equal(("raw", $"volume-{v}", Export, "vers=4.1", _bed.MountBase), (ok.Format, ok.Name, ok.Export, ok.Options, ok.MountPointBase));
        Assert.Equal(StorageErrorCode.SizeMismatch, e.Code);
    }

    [Fact]
    public async Task Encrypted_and_attached_volumes_are_refused_before_anything_is_touched()
    {
        var v = await _bed.CreateVolumeAsync();
        var before = _bed.Listing();

        var encrypted = await Assert.ThrowsAsync<StorageException>(() =>
            _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, v, Guid.NewGuid()) { EncryptionKeyId = "6a9d4e3c-key" }));
        var attached = await Assert.ThrowsAsync<StorageException>(() =>
            _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, v, Guid.NewGuid()) { Attached = true }));

        Assert.Equal(StorageErrorCode.VolumeEncrypted, encrypted.Code);
        Assert.Equal(StorageErrorCode.VolumeAttached, attached.Code);
        Assert.Equal(before, _bed.Listing());
    }

    [Fact]
    public async Task Deleting_a_volume_removes_every_file_of_it_and_nothing_else()
    {
        var v = await _bed.CreateVolumeAsync();
        var other = await _bed.CreateVolumeAsync();
        await Snapshot(v, Guid.NewGuid());
        await Snapshot(v, Guid.NewGuid());

        var result = await _bed.Engine.DeleteVolumeAsync(new DeleteVolumeRequest(Export, v));
        var again = await _bed.Engine.DeleteVolumeAsync(new DeleteVolumeRequest(Export, v));

        Assert.Equal((OperationOutcome.Completed, OperationOutcome.AlreadyDone), (result.Outcome, again.Outcome));
        Assert.DoesNotContain(_bed.Listing(), n => n.Contains(v.ToString(), StringComparison.Ordinal));
        Assert.Contains($"volume-{other}", _bed.Listing());
    }

    [Fact]
    public async Task Repeating_a_request_reports_already_done_and_changes_nothing()
    {
        var v = Guid.NewGuid();
        await _bed.Engine.CreateVolumeAsync(new CreateVolumeRequest(Export, v, 64 * MiB));
        var s = Guid.NewGuid();
        await Snapshot(v, s);
        var listing = _bed.Listing();

        var createAgain = await _bed.Engine.CreateVolumeAsync(new CreateVolumeRequest(Export, v, 64 * MiB));
        var snapshotAgain = await Snapshot(v, s);
        var differentSize = await Assert.ThrowsAsync<StorageException>(() => _bed.Engine.CreateVolumeAsync(new CreateVolumeRequest(Export, v, 128 * MiB)));

        Assert.Equal(OperationOutcome.AlreadyDone, createAgain.Outcome);
        Assert.Equal(OperationOutcome.AlreadyDone, snapshotAgain.Outcome);
        Assert.Equal(StorageErrorCode.VolumeExists, differentSize.Code);
        Assert.Equal(listing, _bed.Listing());
    }

    /// <summary>Found by the chaos test (ChaosTests, seed 1104720854): a worker killed after a clone had cleared its
    /// journal entry, before the worker recorded the outcome, left the command in the inbox; the next worker ran the
    /// clone again and refused its own finished copy with VolumeExists.</summary>
    [Fact]
    public async Task A_clone_run_again_after_it_finished_is_already_done_but_never_takes_another_volume_for_its_copy()
    {
        var v = await _bed.CreateVolumeAsync();
        var s = Guid.NewGuid();
        _bed.GuestWrite(v, 0, 2 * MiB, 0x91);
        await Snapshot(v, s);
        _bed.GuestWrite(v, MiB, MiB, 0x92);
        var clone = new CloneVolumeRequest(Export, v, Guid.NewGuid());
        var fromSnapshot = new CreateVolumeFromSnapshotRequest(Export, v, s, Guid.NewGuid(), ImageFormat.Qcow2, NewSizeBytes: 96 * MiB);
        Assert.Equal(OperationOutcome.Completed, (await _bed.Engine.CloneVolumeAsync(clone)).Outcome);
        Assert.Equal(OperationOutcome.Completed, (await _bed.Engine.CreateVolumeFromSnapshotAsync(fromSnapshot)).Outcome);
        var listing = _bed.Listing();

        Assert.Equal(OperationOutcome.AlreadyDone, (await _bed.Engine.CloneVolumeAsync(clone)).Outcome);
        Assert.Equal(OperationOutcome.AlreadyDone, (await _bed.Engine.CreateVolumeFromSnapshotAsync(fromSnapshot)).Outcome);
        Assert.Equal(listing, _bed.Listing());

        // Once the new volume holds anything else (here: a write), it is not this clone's copy and stays untouched.
        _bed.GuestWrite(clone.NewVolumeId, 0, MiB, 0x93);
        var refused = await Assert.ThrowsAsync<StorageException>(() => _bed.Engine.CloneVolumeAsync(clone));
        Assert.Equal(StorageErrorCode.VolumeExists, refused.Code);
        var otherSize = await Assert.ThrowsAsync<StorageException>(() => _bed.Engine.CreateVolumeFromSnapshotAsync(fromSnapshot with { NewSizeBytes = 128 * MiB }));
        Assert.Equal(StorageErrorCode.VolumeExists, otherSize.Code);
        Assert.True(_bed.ImageReads(_bed.PathOf($"volume-{clone.NewVolumeId}"), ImageFormat.Raw, 0, MiB, 0x93));
        Assert.Equal(listing, _bed.Listing());
        Assert.Empty(_bed.ShareProblems());
    }

    [Fact]
    public async Task Concurrent_operations_on_one_volume_never_overlap()
    {
        var v = await _bed.CreateVolumeAsync();
        var snapshots = Enumerable.Range(0, 8).Select(_ => Guid.NewGuid()).ToArray();

        await Task.WhenAll(snapshots.Select(s => Task.Run(() => Snapshot(v, s))));

        Assert.Equal(0, _bed.Engine.OverlapsDetected);
        var chain = _bed.Engine.ReadChain(Export, v);
        Assert.Equal(9, chain.Images.Count);
        Assert.Equal(snapshots.Order(), chain.Info.Snapshots.Keys.Order());
        Assert.Empty(chain.Problems);
    }
}
