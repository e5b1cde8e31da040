using System.Text.Json;
using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Qcow2;
using NfsVolumeWorker.Storage.Tests.Qcow2;
using NfsVolumeWorker.Storage.Tests.Support;
using static NfsVolumeWorker.Storage.Tests.Support.EngineTestBed;

namespace NfsVolumeWorker.Storage.Tests.Engine;

/// <summary>
/// The design's security rules against hostile share contents and hostile requests: each is refused with a
/// clear, stable code, and the share is left exactly as it was, with no qemu-img started (so nothing could
/// have followed a hostile reference to /etc/shadow).
/// </summary>
public sealed class SecuritySpecs : IDisposable
{
    private readonly EngineTestBed _bed = new();
    private readonly RefusalBed _refusals;
    private readonly TempDirectory _outside = new("nfsvol-outside-");

    public SecuritySpecs() => _refusals = new RefusalBed(_bed);

    public void Dispose()
    {
        _refusals.Dispose();
        _outside.Dispose();
        _bed.Dispose();
    }

    private static Func<VolumeEngine, Task>[] SnapshotCloneConnectExtend(Guid v, ImageFormat? baseFormat = null) =>
    [
        e => e.CreateSnapshotAsync(new CreateSnapshotRequest(Export, v, Guid.NewGuid()) { BaseFormat = baseFormat }),
        e => e.CloneVolumeAsync(new CloneVolumeRequest(Export, v, Guid.NewGuid()) { BaseFormat = baseFormat }),
        e => Task.FromResult(e.GetConnectionInfo(new ConnectionInfoRequest(Export, v) { BaseFormat = baseFormat })),
        e => e.ExtendVolumeAsync(new ExtendVolumeRequest(Export, v, 128 * MiB) { BaseFormat = baseFormat }),
    ];

    private async Task AssertEveryOperationRefusedAsync(StorageErrorCode code, Guid volume, string what, string? messagePart = null)
    {
        var operations = RefusalBed.EveryOperationOn(volume, Guid.NewGuid(), Guid.NewGuid());
        for (var i = 0; i < operations.Length; i++)
        {
            if (i == 1 && code != StorageErrorCode.InfoFileCorrupt)
            {
                continue; // deleting an unrecorded snapshot is "nothing to do"; covered below where the snapshot is recorded
            }
            var e = await _refusals.AssertRefusedAsync(code, operations[i], $"{RefusalBed.OperationNames[i]}: {what}");
            if (messagePart is not null)
            {
                Assert.Contains(messagePart, e.Message, StringComparison.Ordinal);
            }
        }
    }

    /// <summary>A guest writes a qcow2 header naming /etc/shadow into its raw volume (Launchpad bug 1350504).</summary>
    private async Task<Guid> RawVolumeWithHostileHeaderAsync()
    {
        var v = await _bed.CreateVolumeAsync(64 * MiB, ImageFormat.Raw);
        var hostile = _outside.File("hostile.qcow2");
        RequiredTool.RunChecked(RequiredTool.QemuImg, "create", "-q", "-f", "qcow2", "-u", "-b", "/etc/shadow", "-F", "raw", hostile, "64M");
        var header = File.ReadAllBytes(hostile);
        RequiredTool.RunChecked(RequiredTool.Find("qemu-io", "qemu-utils"), "-f", "raw", "-c", $"write -P 0 0 {header.Length}", _bed.PathOf(VolumeFileNames.Base(v)));
        using (var volume = new FileStream(_bed.PathOf(VolumeFileNames.Base(v)), FileMode.Open, FileAccess.Write))
        {
            volume.Write(header); // what the guest's writes put at offset 0
        }
        Assert.Equal("/etc/shadow", ImageHeaderReader.Read(_bed.PathOf(VolumeFileNames.Base(v))).Qcow2!.BackingFile);
        return v;
    }

    [Fact]
    public async Task A_raw_volume_whose_guest_wrote_a_qcow2_header_naming_etc_shadow_is_refused_for_snapshot_clone_connection_and_extend()
    {
        var v = await RawVolumeWithHostileHeaderAsync();

        foreach (var operation in SnapshotCloneConnectExtend(v))
        {
            var e = await _refusals.AssertRefusedAsync(StorageErrorCode.InvalidBackingFile, operation, "raw volume with a hostile header");
            Assert.Contains("/etc/shadow", e.Message, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task A_raw_volume_with_a_hostile_header_is_plain_data_when_the_caller_states_it_is_raw_and_its_snapshot_records_backing_format_raw()
    {
        var v = await RawVolumeWithHostileHeaderAsync();
        var s = Guid.NewGuid();
        var reference = Path.Combine(_bed.References, "hostile-raw.raw");
        File.Copy(_bed.PathOf(VolumeFileNames.Base(v)), reference);

        var connection = _bed.Engine.GetConnectionInfo(new ConnectionInfoRequest(Export, v, 64 * MiB) { BaseFormat = ImageFormat.Raw });
        await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, v, s) { BaseFormat = ImageFormat.Raw });

        Assert.Equal(("raw", 64 * MiB), (connection.Format, connection.VirtualSize));
        var overlay = ImageHeaderReader.Read(_bed.PathOf(VolumeFileNames.Overlay(v, s))).Qcow2!;
        Assert.Equal((VolumeFileNames.Base(v), "raw"), (overlay.BackingFile, overlay.BackingFormat));
        // qemu-img follows the chain with the recorded format: it never looks past the raw base.
        var chain = RequiredTool.RunChecked(RequiredTool.QemuImg, "info", "-U", "--backing-chain", "--output=json", "-f", "qcow2", _bed.PathOf(VolumeFileNames.Overlay(v, s)));
        using var doc = JsonDocument.Parse(chain);
        Assert.Equal(new[] { "qcow2", "raw" }, doc.RootElement.EnumerateArray().Select(i => i.GetProperty("format").GetString()));
        Assert.DoesNotContain("shadow", chain, StringComparison.Ordinal);
        // The snapshot's data is the raw bytes, hostile header included: data, not a chain.
        Assert.True(_bed.SnapshotShows(v, s, reference));
        // Later operations read the base's format from the overlay: no need to state it again.
        Assert.Equal(ImageFormat.Raw, _bed.Engine.ReadChain(Export, v).Base.Format);
    }

    [Fact]
    public async Task An_interrupted_clone_of_a_raw_volume_with_a_hostile_header_is_finished_by_the_next_operation_that_states_the_volume_is_raw()
    {
        var v = await RawVolumeWithHostileHeaderAsync();
        var reference = Path.Combine(_bed.References, "hostile-raw.raw");
        File.Copy(_bed.PathOf(VolumeFileNames.Base(v)), reference);
        var clone = Guid.NewGuid();
        await Assert.ThrowsAsync<InjectedCrash>(() => _bed.NewEngine(new CrashAtStep(OperationSteps.CloneCopied, 1))
            .CloneVolumeAsync(new CloneVolumeRequest(Export, v, clone, ImageFormat.Raw) { BaseFormat = ImageFormat.Raw }));

        // The journal holds the clone; the next operation resumes it, and must resume it as raw too.
        var next = await _bed.NewEngine().CreateSnapshotAsync(new CreateSnapshotRequest(Export, v, Guid.NewGuid()) { BaseFormat = ImageFormat.Raw });

        Assert.Single(next.FinishedInterrupted);
        Assert.True(_bed.SameContents(_bed.PathOf(VolumeFileNames.Base(clone)), ImageFormat.Raw, reference));
        Assert.Empty(CrashAssertions.JournalEntries(_bed.Share));
    }

    [Theory]
    [InlineData("another volume's file")]
    [InlineData("/etc/passwd")]
    [InlineData("the volume's own base by absolute path")]
    [InlineData("../x")]
    [InlineData("a file of the volume in a subdirectory")]
    public async Task An_overlay_whose_header_names_a_backing_file_outside_the_volume_is_refused(string target)
    {
        var v = await _bed.CreateVolumeAsync(64 * MiB);
        var other = await _bed.CreateVolumeAsync(64 * MiB);
        var s = Guid.NewGuid();
        await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, v, s));
        var backing = target switch
        {
            "another volume's file" => VolumeFileNames.Base(other),
            "the volume's own base by absolute path" => _bed.PathOf(VolumeFileNames.Base(v)),
            "a file of the volume in a subdirectory" => "sub/" + VolumeFileNames.Base(v),
            _ => target,
        };
        RequiredTool.RunChecked(RequiredTool.QemuImg, "rebase", "-u", "-f", "qcow2", "-b", backing, "-F", "raw", _bed.PathOf(VolumeFileNames.Overlay(v, s)));

        await AssertEveryOperationRefusedAsync(StorageErrorCode.InvalidBackingFile, v, $"overlay backed by {backing}", backing);
        await _refusals.AssertRefusedAsync(StorageErrorCode.InvalidBackingFile, e => e.DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, v, s)), "delete of the snapshot");
    }

    [Theory]
    [InlineData("overlay")]
    [InlineData("info")]
    [InlineData("clone target")]
    [InlineData("lock directory")]
    [InlineData("worker directory")]
    public async Task A_symlink_planted_where_the_engine_would_write_is_refused_with_UnsafePath(string where)
    {
        var v = await _bed.CreateVolumeAsync(64 * MiB);
        var s = Guid.NewGuid();
        var clone = Guid.NewGuid();
        var victim = _outside.File("victim");
        File.WriteAllText(victim, "not the worker's");
        Func<VolumeEngine, Task> operation;
        switch (where)
        {
            case "overlay":
                File.CreateSymbolicLink(_bed.PathOf(VolumeFileNames.Overlay(v, s)), victim);
                operation = e => e.CreateSnapshotAsync(new CreateSnapshotRequest(Export, v, s));
                break;
            case "info":
                File.CreateSymbolicLink(_bed.PathOf(VolumeFileNames.Info(v)), victim);
                operation = e => e.CreateSnapshotAsync(new CreateSnapshotRequest(Export, v, s));
                break;
            case "clone target":
                File.CreateSymbolicLink(_bed.PathOf(VolumeFileNames.Base(clone)), victim);
                operation = e => e.CloneVolumeAsync(new CloneVolumeRequest(Export, v, clone));
                break;
            case "lock directory":
                Directory.Delete(Path.Combine(_bed.Share.WorkerDirectory, "locks"), recursive: true);
                Directory.CreateSymbolicLink(Path.Combine(_bed.Share.WorkerDirectory, "locks"), _outside.Path);
                operation = e => e.CreateSnapshotAsync(new CreateSnapshotRequest(Export, v, s));
                break;
            default:
                Directory.Delete(_bed.Share.WorkerDirectory, recursive: true);
                Directory.CreateSymbolicLink(_bed.Share.WorkerDirectory, _outside.Path);
                operation = e => e.CreateSnapshotAsync(new CreateSnapshotRequest(Export, v, s));
                break;
        }
        var outsideBefore = CrashAssertions.Snapshot(_outside.Path);
        // Lock bookkeeping (lock file, running marker) is left out, as everywhere in the refusal specs.
        var before = _refusals.ShareState();

        var e = await Assert.ThrowsAsync<StorageException>(() => operation(_refusals.SpyEngine));

        Assert.Equal(StorageErrorCode.UnsafePath, e.Code);
        Assert.Contains("symbolic link", e.Message, StringComparison.Ordinal);
        Assert.Equal(before, _refusals.ShareState());
        Assert.Equal(outsideBefore, CrashAssertions.Snapshot(_outside.Path));
        Assert.Equal("not the worker's", File.ReadAllText(victim));
        Assert.False(File.Exists(_refusals.SpyLog));
    }

    [Theory]
    [InlineData("../../etc/passwd")]
    [InlineData("/etc/passwd")]
    [InlineData("volume-x")]
    [InlineData("0f6a2e8c-5d1b-4c1e-9a57-2b9d2f6c1e10")]
    [InlineData(" ")]
    [InlineData("")]
    [InlineData("00000000-0000-0000-0000-000000000000")]
    [InlineData("{0f6a2e8c-5d1b-4c1e-9a57-2b9d2f6c1e10}")]
    [InlineData("0f6a2e8c5d1b4c1e9a572b9d2f6c1e10")]
    [InlineData("0f6a2e8c-5d1b-4c1e-9a57-2b9d2f6c1e10/../x")]
    public void Ids_that_are_not_canonical_uuids_are_refused_with_InvalidRequest(string id)
    {
        if (id == "0f6a2e8c-5d1b-4c1e-9a57-2b9d2f6c1e10")
        {
            Assert.Equal(Guid.Parse(id), Ids.Parse(id, "volume id")); // the control: a real one parses
            return;
        }
        var e = Assert.Throws<StorageException>(() => Ids.Parse(id, "volume id"));
        Assert.Equal(StorageErrorCode.InvalidRequest, e.Code);
        Assert.Contains("volume id", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_empty_uuid_is_refused_for_every_id_of_every_request_before_anything_is_touched()
    {
        var v = await _bed.CreateVolumeAsync(64 * MiB);
        var s = Guid.NewGuid();
        await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, v, s));
        var empty = Guid.Empty;
        Func<VolumeEngine, Task>[] operations =
        [
            e => e.CreateVolumeAsync(new CreateVolumeRequest(Export, empty, 64 * MiB)),
            e => e.DeleteVolumeAsync(new DeleteVolumeRequest(Export, empty)),
            e => e.CreateSnapshotAsync(new CreateSnapshotRequest(Export, v, empty)),
            e => e.CreateSnapshotAsync(new CreateSnapshotRequest(Export, empty, s)),
            e => e.DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, v, empty)),
            e => e.CreateVolumeFromSnapshotAsync(new CreateVolumeFromSnapshotRequest(Export, v, s, empty)),
            e => e.CreateVolumeFromSnapshotAsync(new CreateVolumeFromSnapshotRequest(Export, v, empty, Guid.NewGuid())),
            e => e.CloneVolumeAsync(new CloneVolumeRequest(Export, v, empty)),
            e => e.RevertToSnapshotAsync(new RevertToSnapshotRequest(Export, v, empty)),
            e => e.ExtendVolumeAsync(new ExtendVolumeRequest(Export, empty, 128 * MiB)),
            e => Task.FromResult(e.GetConnectionInfo(new ConnectionInfoRequest(Export, empty))),
        ];
        foreach (var operation in operations)
        {
            await _refusals.AssertRefusedAsync(StorageErrorCode.InvalidRequest, operation, "empty uuid");
        }
    }

    [Theory]
    [InlineData("active", "../../etc/passwd")]
    [InlineData("active", "/etc/passwd")]
    [InlineData("active", "another volume")]
    [InlineData("snapshot", "../../etc/passwd")]
    [InlineData("snapshot", "/etc/passwd")]
    [InlineData("snapshot", "another volume")]
    public async Task An_info_file_naming_a_file_outside_the_volume_is_refused_with_InfoFileCorrupt(string entry, string name)
    {
        var v = await _bed.CreateVolumeAsync(64 * MiB);
        var other = await _bed.CreateVolumeAsync(64 * MiB);
        var s = Guid.NewGuid();
        await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, v, s));
        var bad = name == "another volume" ? VolumeFileNames.Base(other) : name;
        var json = entry == "active"
            ? $"{{\n \"active\": \"{bad}\",\n \"{s}\": \"{VolumeFileNames.Overlay(v, s)}\"\n}}"
            : $"{{\n \"active\": \"{VolumeFileNames.Overlay(v, s)}\",\n \"{s}\": \"{bad}\"\n}}";
        File.WriteAllText(_bed.PathOf(VolumeFileNames.Info(v)), json);

        var operations = RefusalBed.EveryOperationOn(v, s, Guid.NewGuid());
        for (var i = 0; i < operations.Length; i++)
        {
            var e = await _refusals.AssertRefusedAsync(StorageErrorCode.InfoFileCorrupt, operations[i], $"{RefusalBed.OperationNames[i]} with .info naming {bad}");
            Assert.Contains(bad, e.Message, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task An_image_with_an_external_data_file_is_refused_with_UnsupportedFormat()
    {
        var v = Guid.NewGuid();
        var data = _outside.File("data.raw");
        RequiredTool.RunChecked(RequiredTool.QemuImg, "create", "-q", "-f", "qcow2", "-o", $"data_file={data}", _bed.PathOf(VolumeFileNames.Base(v)), "64M");
        Directory.CreateDirectory(Path.Combine(_bed.Share.WorkerDirectory, "locks"));

        await AssertEveryOperationRefusedAsync(StorageErrorCode.UnsupportedFormat, v, "external data file", "external");
    }

    [Fact]
    public async Task An_overlay_without_a_recorded_backing_format_is_refused_because_qemu_img_would_probe_its_backing_file()
    {
        var v = await _bed.CreateVolumeAsync(64 * MiB);
        var s = Guid.NewGuid();
        await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, v, s));
        File.WriteAllBytes(_bed.PathOf(VolumeFileNames.Overlay(v, s)),
            Qcow2TestImages.HandWritten(virtualSize: 64 * MiB, backingFile: Qcow2TestImages.Utf8(VolumeFileNames.Base(v))));
        Assert.Null(ImageHeaderReader.Read(_bed.PathOf(VolumeFileNames.Overlay(v, s))).Qcow2!.BackingFormat);

        await AssertEveryOperationRefusedAsync(StorageErrorCode.InvalidBackingFile, v, "no backing format", "backing format");
    }

    [Fact]
    public async Task A_luks_encrypted_volume_is_refused_with_VolumeEncrypted()
    {
        var v = Guid.NewGuid();
        Qcow2TestImages.CreateWithLuksHeader("create", "-q", "--object", "secret,id=s0,data=passphrase", "-f", "luks",
            "-o", "key-secret=s0,iter-time=10", _bed.PathOf(VolumeFileNames.Base(v)), "16M");
        Directory.CreateDirectory(Path.Combine(_bed.Share.WorkerDirectory, "locks"));

        await AssertEveryOperationRefusedAsync(StorageErrorCode.VolumeEncrypted, v, "LUKS volume", "encrypted");
    }

    [Fact]
    public async Task A_qcow2_volume_with_a_luks_encrypted_payload_is_refused_with_VolumeEncrypted()
    {
        var v = Guid.NewGuid();
        Qcow2TestImages.CreateWithLuksHeader("create", "-q", "--object", "secret,id=s0,data=passphrase", "-f", "qcow2",
            "-o", "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10", _bed.PathOf(VolumeFileNames.Base(v)), "16M");
        Directory.CreateDirectory(Path.Combine(_bed.Share.WorkerDirectory, "locks"));

        await AssertEveryOperationRefusedAsync(StorageErrorCode.VolumeEncrypted, v, "qcow2+LUKS volume", "encrypted");
    }
}
