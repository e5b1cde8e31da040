using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.QemuImg;
using NfsVolumeWorker.Storage.Shares;
using NfsVolumeWorker.Storage.Tests.Support;
using static NfsVolumeWorker.Storage.Tests.Engine.CrashAssertions;
using static NfsVolumeWorker.Storage.Tests.Support.EngineTestBed;
using NfsVolumeWorker.Testing;

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
    [InlineData(OperationSteps.CloneCopied)]
    [InlineData(OperationSteps.CloneRenamed)]
    public async Task A_clone_of_the_base_alone_writes_no_journal_entry_and_a_crash_in_it_is_finished_by_the_next_run(string step)
    {
        var volume = await _bed.CreateVolumeAsync(64 * MiB);
        _bed.GuestWrite(volume, 0, 32 * MiB, 0x11);
        var atBase = _bed.SaveReference(volume, "at-base");
        var snapshot = Guid.NewGuid();
        await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, volume, snapshot));
        _bed.GuestWrite(volume, 40 * MiB, 4 * MiB, 0x22);
        var clone = Guid.NewGuid();

        var engine = _bed.NewEngine(new CrashAtStep(step, 1));
        await Assert.ThrowsAsync<InjectedCrash>(() => engine.CreateVolumeFromSnapshotAsync(new CreateVolumeFromSnapshotRequest(Export, volume, snapshot, clone)));
        Assert.Empty(JournalEntries(_bed.Share)); // nothing to resume: the source is untouched
        Assert.Empty(_bed.ShareProblems());
        // The temp file is named after the new volume, so that the re-run removes it by name (no directory listing).
        Assert.Equal(step == OperationSteps.CloneCopied, _bed.Listing().Contains($".{VolumeFileNames.Base(clone)}.tmp-{clone:N}"));

        var again = await _bed.NewEngine().CreateVolumeFromSnapshotAsync(new CreateVolumeFromSnapshotRequest(Export, volume, snapshot, clone));
        Assert.True(_bed.SameContents(_bed.PathOf(VolumeFileNames.Base(clone)), ImageFormat.Raw, atBase));
        Assert.DoesNotContain(_bed.Listing(), f => f.Contains(".tmp-", StringComparison.Ordinal));
        Assert.Empty(JournalEntries(_bed.Share));
        Assert.Empty(_bed.ShareProblems());
        Assert.Equal(step == OperationSteps.CloneRenamed ? OperationOutcome.AlreadyDone : OperationOutcome.Completed, again.Outcome);
    }

    /// <summary>The re-run's check that the volume already there is its own finished copy must not turn a passing
    /// failure (here qemu-img compare out of time) into VolumeExists, a final answer for a volume it made itself: the
    /// error goes up as what it is, the command is retried, and the retry recognises the copy.</summary>
    [Fact]
    public async Task A_passing_failure_while_recognising_a_finished_clone_is_not_reported_as_VolumeExists()
    {
        var volume = await _bed.CreateVolumeAsync(64 * MiB);
        _bed.GuestWrite(volume, 0, 8 * MiB, 0x11);
        var snapshot = Guid.NewGuid();
        await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, volume, snapshot));
        var clone = Guid.NewGuid();
        var request = new CreateVolumeFromSnapshotRequest(Export, volume, snapshot, clone);
        await Assert.ThrowsAsync<InjectedCrash>(() => _bed.NewEngine(new CrashAtStep(OperationSteps.CloneRenamed, 1)).CreateVolumeFromSnapshotAsync(request));
        var slowCompare = Path.Combine(_bed.References, "qemu-img-slow-compare");
        ShellScript.Write(slowCompare, $"[ \"$1\" = compare ] && exec sleep 30\nexec {RequiredTool.QemuImg} \"$@\"\n");
        var qemu = new QemuImgRunner(Microsoft.Extensions.Options.Options.Create(new QemuImgOptions { Executable = slowCompare, ShortCallTimeout = TimeSpan.FromSeconds(1) }),
            Microsoft.Extensions.Logging.Abstractions.NullLogger<QemuImgRunner>.Instance);
        var engine = new VolumeEngine(new ShareMap([_bed.Share]), qemu, Microsoft.Extensions.Options.Options.Create(_bed.Options_),
            Microsoft.Extensions.Logging.Abstractions.NullLogger<VolumeEngine>.Instance);

        var failure = await Assert.ThrowsAnyAsync<Errors.StorageException>(() => engine.CreateVolumeFromSnapshotAsync(request));

        Assert.Equal(Errors.StorageErrorCode.QemuImgTimeout, failure.Code);
        var again = await _bed.NewEngine().CreateVolumeFromSnapshotAsync(request);
        Assert.Equal(OperationOutcome.AlreadyDone, again.Outcome);
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

    [Fact]
    public async Task A_clone_from_the_newest_snapshot_shares_the_overlays_clusters_as_well_as_the_base()
    {
        var volume = await _bed.CreateVolumeAsync(256 * MiB);
        _bed.GuestWrite(volume, 0, 96 * MiB, 0x11);
        var newest = Guid.Empty;
        for (var i = 0; i < 3; i++)
        {
            await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, volume, Guid.NewGuid()));
            _bed.GuestWrite(volume, (100 + (i * 16)) * MiB, 16 * MiB, (byte)(0x21 + i));
        }
        var atNewest = _bed.SaveReference(volume, "at-newest");
        newest = Guid.NewGuid();
        await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, volume, newest));
        _bed.GuestWrite(volume, 100 * MiB, 4 * MiB, 0x99); // after the snapshot: not in the clone

        var freeBefore = _disk.Available;
        var clone = Guid.NewGuid();
        var result = await _bed.Engine.CreateVolumeFromSnapshotAsync(new CreateVolumeFromSnapshotRequest(Export, volume, newest, clone));
        var used = freeBefore - _disk.Available;

        // The overlays' 48 MiB are shared with their files, not written: a copy of them would take 48 MiB.
        Assert.Contains($"applied {48 * MiB} bytes of overlay data ({48 * MiB} shared with the overlays, 0 copied, 0 zeroed)", result.Message, StringComparison.Ordinal);
        Assert.True(used < 8 * MiB, $"the clone took {used / MiB} MiB of free space");
        var clonePath = _bed.PathOf(VolumeFileNames.Base(clone));
        Assert.True(_bed.SameContents(clonePath, ImageFormat.Raw, atNewest));

        // Writes to the clone over the shared overlay clusters do not reach the snapshot's files.
        _bed.GuestWrite(clone, 100 * MiB, 48 * MiB, 0x55);
        Assert.True(_bed.SnapshotShows(volume, newest, atNewest));
        Assert.True(_bed.ImageReads(clonePath, ImageFormat.Raw, 100 * MiB, 48 * MiB, 0x55));
        Assert.Empty(_bed.ShareProblems());
        Assert.DoesNotContain(_bed.Listing(), f => f.Contains(".tmp-", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Ranges_an_overlay_zeroes_read_as_zeroes_in_the_clone_and_partial_writes_keep_the_rest_of_their_cluster()
    {
        var volume = await _bed.CreateVolumeAsync(64 * MiB);
        _bed.GuestWrite(volume, 0, 48 * MiB, 0x11);
        await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, volume, Guid.NewGuid()));
        var active = _bed.PathOf(_bed.Engine.ReadChain(Export, volume).Active.FileName);
        // Zero clusters over the base's data (one with its space kept: -z without -u), a discard, and a 512-byte write
        // inside a cluster (qemu copies the rest of that cluster up from the base).
        RequiredTool.RunChecked(RequiredTool.Find("qemu-io", "qemu-utils"), "-f", "qcow2",
            "-c", "write -z -u 4M 4M", "-c", "write -P 0x22 12M 1M", "-c", "write -z 12M 64k", "-c", "discard 20M 1M", "-c", "write -P 0x33 30M 512", active);
        var reference = _bed.SaveReference(volume, "zeroed");
        var snapshot = Guid.NewGuid();
        await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, volume, snapshot));

        var clone = Guid.NewGuid();
        var result = await _bed.Engine.CreateVolumeFromSnapshotAsync(new CreateVolumeFromSnapshotRequest(Export, volume, snapshot, clone));

        Assert.Contains("shared with the overlays", result.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(" 0 zeroed", result.Message, StringComparison.Ordinal);
        var clonePath = _bed.PathOf(VolumeFileNames.Base(clone));
        Assert.True(_bed.SameContents(clonePath, ImageFormat.Raw, reference));
        Assert.True(_bed.ImageReads(clonePath, ImageFormat.Raw, 4 * MiB, 4 * MiB, 0));
        Assert.True(_bed.ImageReads(clonePath, ImageFormat.Raw, 12 * MiB, 64 * 1024, 0));
        Assert.True(_bed.ImageReads(clonePath, ImageFormat.Raw, (12 * MiB) + (64 * 1024), MiB - (64 * 1024), 0x22));
        Assert.True(_bed.ImageReads(clonePath, ImageFormat.Raw, 30 * MiB, 512, 0x33));
        Assert.True(_bed.ImageReads(clonePath, ImageFormat.Raw, (30 * MiB) + 512, MiB - 512, 0x11));
        // The base is untouched by the punched holes.
        Assert.True(_bed.ImageReads(_bed.PathOf(VolumeFileNames.Base(volume)), ImageFormat.Raw, 0, 48 * MiB, 0x11));
    }

    [Fact]
    public async Task Overlays_that_hold_compressed_clusters_or_a_qcow2_base_are_applied_by_qemu_img_commit()
    {
        var volume = await _bed.CreateVolumeAsync(64 * MiB);
        _bed.GuestWrite(volume, 0, 16 * MiB, 0x11);
        await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, volume, Guid.NewGuid()));
        var active = _bed.PathOf(_bed.Engine.ReadChain(Export, volume).Active.FileName);
        RequiredTool.RunChecked(RequiredTool.Find("qemu-io", "qemu-utils"), "-f", "qcow2", "-c", "write -c -P 0x66 1M 64k", "-c", "write -P 0x77 8M 1M", active);
        var reference = _bed.SaveReference(volume, "compressed");
        var snapshot = Guid.NewGuid();
        await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, volume, snapshot));
        var clone = Guid.NewGuid();
        var result = await _bed.Engine.CreateVolumeFromSnapshotAsync(new CreateVolumeFromSnapshotRequest(Export, volume, snapshot, clone));
        Assert.Contains("shared the base's extents, applied", result.Message, StringComparison.Ordinal);
        Assert.Contains("with qemu-img commit", result.Message, StringComparison.Ordinal);
        Assert.True(_bed.SameContents(_bed.PathOf(VolumeFileNames.Base(clone)), ImageFormat.Raw, reference));

        var qcow2 = await _bed.CreateVolumeAsync(64 * MiB, ImageFormat.Qcow2);
        _bed.GuestWrite(qcow2, 0, 16 * MiB, 0x11);
        await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, qcow2, Guid.NewGuid()));
        _bed.GuestWrite(qcow2, 4 * MiB, 1 * MiB, 0x22);
        var qcow2Reference = _bed.SaveReference(qcow2, "qcow2");
        var qcow2Snapshot = Guid.NewGuid();
        await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, qcow2, qcow2Snapshot));
        var qcow2Clone = Guid.NewGuid();
        var fromQcow2 = await _bed.Engine.CreateVolumeFromSnapshotAsync(
            new CreateVolumeFromSnapshotRequest(Export, qcow2, qcow2Snapshot, qcow2Clone, TargetFormat: ImageFormat.Qcow2) { BaseFormat = ImageFormat.Qcow2 });
        Assert.Contains("with qemu-img commit", fromQcow2.Message, StringComparison.Ordinal);
        Assert.True(_bed.SameContents(_bed.PathOf(VolumeFileNames.Base(qcow2Clone)), ImageFormat.Qcow2, qcow2Reference));
        Assert.Empty(_bed.ShareProblems());
        Assert.DoesNotContain(_bed.Listing(), f => f.Contains(".tmp-", StringComparison.Ordinal));
    }

    [Fact]
    public void A_range_off_the_file_systems_block_size_is_copied_instead_of_shared_and_a_zeroed_range_reads_zeroes()
    {
        var source = _bed.PathOf("range-source");
        var target = _bed.PathOf("range-target");
        File.WriteAllBytes(source, Enumerable.Range(0, 256 * 1024).Select(i => (byte)(i % 251)).ToArray());
        File.WriteAllBytes(target, new byte[256 * 1024]);
        using (var from = File.OpenHandle(source))
        using (var to = File.OpenHandle(target, FileMode.Open, FileAccess.ReadWrite))
        {
            Assert.True(Durability.ExtentSharing.TryCloneRange(from, 64 * 1024, to, 0, 64 * 1024));
            Assert.False(Durability.ExtentSharing.TryCloneRange(from, 512, to, 64 * 1024, 64 * 1024), "XFS shares whole 4 KiB blocks only");
            Durability.ServerSideCopy.CopyRange(from, 512, to, 64 * 1024, 64 * 1024);
            Durability.Holes.Zero(to, 200 * 1024, 8 * 1024);
        }
        var s = File.ReadAllBytes(source);
        var t = File.ReadAllBytes(target);
        Assert.Equal(s.AsSpan(64 * 1024, 64 * 1024).ToArray(), t.AsSpan(0, 64 * 1024).ToArray());
        Assert.Equal(s.AsSpan(512, 64 * 1024).ToArray(), t.AsSpan(64 * 1024, 64 * 1024).ToArray());
        Assert.All(t.AsSpan(200 * 1024, 8 * 1024).ToArray(), b => Assert.Equal(0, b));
        Assert.Equal(256 * 1024, t.Length);
    }
}
