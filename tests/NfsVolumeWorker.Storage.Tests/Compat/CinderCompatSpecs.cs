using System.Text.Json.Nodes;
using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Qcow2;
using NfsVolumeWorker.Storage.Tests.Support;
using static NfsVolumeWorker.Storage.Tests.Support.EngineTestBed;

namespace NfsVolumeWorker.Storage.Tests.Compat;

/// <summary>
/// Round trips with Cinder's real NFS driver code (python3-cinder 21.3.1, run with /usr/bin/python3 through
/// Compat/cinder_driver.py: Cinder's NfsDriver with a plain configuration object and plain volume/snapshot
/// objects; its qemu-img calls, .info handling, backing-file checks and locks are Cinder's own). Cinder makes
/// snapshots and the engine deletes and clones them; the engine makes snapshots and Cinder reads and deletes
/// them. Volumes are 1 GiB (sparse) because Cinder sizes overlays in whole GiB.
/// </summary>
public sealed class CinderCompatSpecs : IDisposable
{
    private const long GiB = 1024 * MiB;

    private readonly EngineTestBed _bed = new();
    private readonly TempDirectory _cinderState = new("nfsvol-cinder-");

    public void Dispose()
    {
        _bed.Dispose();
        _cinderState.Dispose();
    }

    private JsonObject Cinder(string op, Guid volume, Guid? snapshot = null, JsonObject? extra = null)
    {
        const string cinderPackage = "/usr/lib/python3/dist-packages/cinder/volume/drivers/remotefs.py";
        Assert.True(File.Exists(cinderPackage), $"{cinderPackage} is missing: apt-get install -y python3-cinder");
        var request = new JsonObject
        {
            ["op"] = op,
            ["mount_point_base"] = _bed.MountBase,
            ["lock_dir"] = _cinderState.Path,
            ["share"] = Export,
            ["volume_id"] = volume.ToString(),
            ["size_gb"] = 1,
        };
        if (snapshot is { } s)
        {
            request["snapshot_id"] = s.ToString();
        }
        foreach (var (key, value) in extra ?? [])
        {
            request[key] = value?.DeepClone();
        }
        var script = Path.Combine(AppContext.BaseDirectory, "Compat", "cinder_driver.py");
        var (code, stdout, stderr) = RequiredTool.Run(RequiredTool.Python3, script, request.ToJsonString());
        Assert.True(code == 0, $"Cinder's driver failed on {op}: {stderr}");
        return JsonNode.Parse(stdout)!.AsObject();
    }

    private async Task<Guid> EngineVolumeAsync()
    {
        var v = Guid.NewGuid();
        await _bed.Engine.CreateVolumeAsync(new CreateVolumeRequest(Export, v, GiB, ImageFormat.Raw));
        return v;
    }

    [Fact]
    public void Cinder_mounts_the_share_where_the_engine_looks_for_it()
    {
        var mountPoint = Cinder("mount_point", Guid.NewGuid())["mount_point"]!.GetValue<string>();

        Assert.Equal(_bed.Share.LocalPath, mountPoint);
    }

    [Fact]
    public async Task Snapshots_cinder_took_are_deleted_middle_then_newest_and_cloned_by_the_engine_with_every_byte_kept()
    {
        var v = await EngineVolumeAsync();
        var (a, b, c) = (Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid());
        _bed.GuestWrite(v, 0, 3 * MiB, 0x11);
        var refA = _bed.SaveReference(v, "a");
        Cinder("create_snapshot", v, a);
        _bed.GuestWrite(v, 2 * MiB, 3 * MiB, 0x22);
        var refB = _bed.SaveReference(v, "b");
        Cinder("create_snapshot", v, b);
        _bed.GuestWrite(v, 4 * MiB, 3 * MiB, 0x33);
        var refC = _bed.SaveReference(v, "c");
        Cinder("create_snapshot", v, c);
        _bed.GuestWrite(v, 900 * MiB, 2 * MiB, 0x44);
        var refNow = _bed.SaveReference(v, "now");
        Assert.Empty(_bed.Engine.ReadChain(Export, v).Problems);

        var fromB = Guid.NewGuid();
        await _bed.Engine.CreateVolumeFromSnapshotAsync(new CreateVolumeFromSnapshotRequest(Export, v, b, fromB, ImageFormat.Raw));
        await _bed.Engine.DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, v, b));
        Assert.True(_bed.SnapshotShows(v, a, refA));
        Assert.True(_bed.SnapshotShows(v, c, refC));
        await _bed.Engine.DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, v, c));
        var fromA = Guid.NewGuid();
        await _bed.Engine.CreateVolumeFromSnapshotAsync(new CreateVolumeFromSnapshotRequest(Export, v, a, fromA, ImageFormat.Qcow2));
        var clone = Guid.NewGuid();
        await _bed.Engine.CloneVolumeAsync(new CloneVolumeRequest(Export, v, clone, ImageFormat.Raw));

        Assert.True(_bed.SameContents(_bed.PathOf(VolumeFileNames.Base(fromB)), ImageFormat.Raw, refB));
        Assert.True(_bed.SameContents(_bed.PathOf(VolumeFileNames.Base(fromA)), ImageFormat.Qcow2, refA));
        Assert.True(_bed.SameContents(_bed.PathOf(VolumeFileNames.Base(clone)), ImageFormat.Raw, refNow));
        Assert.True(_bed.SnapshotShows(v, a, refA));
        var chain = _bed.Engine.ReadChain(Export, v);
        Assert.True(_bed.SameContents(_bed.PathOf(chain.Active.FileName), chain.Active.Format, refNow));
        Assert.Empty(_bed.ShareProblems());
        // And Cinder still reads what the engine left.
        Assert.Equal(chain.Active.FileName, Cinder("active_file", v)["active"]!.GetValue<string>());
        var cinderChain = Cinder("backing_chain", v)["chain"]!.AsArray().Select(i => i!["filename"]!.GetValue<string>());
        Assert.Equal(chain.Images.Select(i => i.FileName), cinderChain);
    }

    [Fact]
    public async Task Snapshots_the_engine_took_are_read_and_deleted_by_cinders_driver_and_the_engine_carries_on()
    {
        var v = await EngineVolumeAsync();
        var (a, b, c) = (Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid());
        _bed.GuestWrite(v, 0, 3 * MiB, 0x51);
        var refA = _bed.SaveReference(v, "a");
        await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, v, a));
        _bed.GuestWrite(v, 2 * MiB, 3 * MiB, 0x52);
        await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, v, b));
        _bed.GuestWrite(v, 4 * MiB, 3 * MiB, 0x53);
        var refC = _bed.SaveReference(v, "c");
        await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, v, c));
        _bed.GuestWrite(v, 6 * MiB, 1 * MiB, 0x54);
        var refNow = _bed.SaveReference(v, "now");

        var info = _bed.Info(v)!;
        Assert.Equal(info.Active, Cinder("active_file", v)["active"]!.GetValue<string>());
        var cinderInfo = Cinder("read_info", v)["info"]!.AsObject();
        Assert.Equal(info.Snapshots.Select(kv => (kv.Key.ToString(), kv.Value)).Append(("active", info.Active)).Order(),
            cinderInfo.Select(kv => (kv.Key, kv.Value!.GetValue<string>())).Order());
        Assert.Equal(VolumeFileNames.Overlay(v, a), Cinder("snapshot_backing_file", v, b)["backing_file"]!.GetValue<string>());

        Cinder("delete_snapshot", v, b); // middle: Cinder's commit, delete, rebase
        Assert.Empty(_bed.Engine.ReadChain(Export, v).Problems);
        Assert.True(_bed.SnapshotShows(v, a, refA));
        Assert.True(_bed.SnapshotShows(v, c, refC));
        Cinder("delete_snapshot", v, c); // newest: commit, delete, active = base
        Assert.Equal(VolumeFileNames.Overlay(v, a), _bed.Info(v)!.Active);

        var d = Guid.NewGuid();
        await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, v, d));
        Assert.True(_bed.SnapshotShows(v, a, refA));
        Assert.True(_bed.SnapshotShows(v, d, refNow));
        await _bed.Engine.DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, v, a));
        Assert.True(_bed.SnapshotShows(v, d, refNow));
        Assert.Empty(_bed.ShareProblems());
        Assert.Equal(_bed.Info(v)!.Active, Cinder("active_file", v)["active"]!.GetValue<string>());
    }

    [Fact]
    public async Task Empty_overlays_cinder_made_are_deleted_by_the_chain_edit_alone_and_cinder_reads_and_deletes_what_is_left()
    {
        // Cinder's own overlays (qemu-img create of its driver): A with nothing written after it (an empty middle
        // image once B exists), B with data, C with nothing after it (the empty active image).
        var v = await EngineVolumeAsync();
        var (a, b, c) = (Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid());
        _bed.GuestWrite(v, 0, 3 * MiB, 0x61);
        var refA = _bed.SaveReference(v, "a");
        Cinder("create_snapshot", v, a);
        Cinder("create_snapshot", v, b);
        _bed.GuestWrite(v, 2 * MiB, 3 * MiB, 0x62);
        var refC = _bed.SaveReference(v, "c");
        Cinder("create_snapshot", v, c);

        var middle = await _bed.Engine.DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, v, a));
        var newest = await _bed.Engine.DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, v, c));

        Assert.Contains("no data moved", middle.Message, StringComparison.Ordinal);
        Assert.Contains("no data moved", newest.Message, StringComparison.Ordinal);
        Assert.Empty(_bed.ShareProblems());
        Assert.Equal(VolumeFileNames.Overlay(v, b), _bed.Info(v)!.Active);
        Assert.True(_bed.SnapshotShows(v, b, refA));
        var chain = _bed.Engine.ReadChain(Export, v);
        Assert.True(_bed.SameContents(_bed.PathOf(chain.Active.FileName), chain.Active.Format, refC));
        // Cinder reads the chain and .info the engine left, and its driver deletes the last snapshot.
        Assert.Equal(chain.Active.FileName, Cinder("active_file", v)["active"]!.GetValue<string>());
        Assert.Equal(chain.Images.Select(i => i.FileName), Cinder("backing_chain", v)["chain"]!.AsArray().Select(i => i!["filename"]!.GetValue<string>()));
        Cinder("delete_snapshot", v, b);
        Assert.Equal(VolumeFileNames.Base(v), _bed.Info(v)!.Active);
        Assert.True(_bed.SameContents(_bed.PathOf(VolumeFileNames.Base(v)), ImageFormat.Raw, refC));
        Assert.Empty(_bed.ShareProblems());
    }

    [Fact]
    public async Task The_engines_info_file_is_byte_for_byte_what_cinders_writer_makes_of_the_same_dict()
    {
        var v = await EngineVolumeAsync();
        foreach (var _ in Enumerable.Range(0, 3))
        {
            await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, v, Guid.NewGuid()));
        }
        var engineBytes = File.ReadAllBytes(_bed.PathOf(VolumeFileNames.Info(v)));
        var dict = JsonNode.Parse(engineBytes)!.AsObject();
        var cinderDir = Directory.CreateDirectory(Path.Combine(_cinderState.Path, "info")).FullName;

        Cinder("write_info", v, extra: new JsonObject { ["directory"] = cinderDir, ["info"] = dict.DeepClone() });

        var cinderBytes = File.ReadAllBytes(Path.Combine(cinderDir, VolumeFileNames.Info(v)));
        Assert.Equal(System.Text.Encoding.UTF8.GetString(cinderBytes), System.Text.Encoding.UTF8.GetString(engineBytes));
        Assert.Equal(cinderBytes, engineBytes);
        // python's json.dump(indent=1, sort_keys=True) of the same dict, as a third opinion.
        var python = RequiredTool.RunChecked(RequiredTool.Python3, "-c",
            "import json,sys; sys.stdout.write(json.dumps(json.loads(sys.argv[1]), indent=1, sort_keys=True))", dict.ToJsonString());
        Assert.Equal(python, System.Text.Encoding.UTF8.GetString(engineBytes));
    }

    [Fact]
    public async Task Overlays_the_engine_makes_match_cinders_in_backing_reference_format_size_and_mode()
    {
        var byCinder = await EngineVolumeAsync();
        var byEngine = await EngineVolumeAsync();
        var (s1, s2, t1, t2) = (Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid());
        Cinder("create_snapshot", byCinder, s1);
        Cinder("create_snapshot", byCinder, s2);
        await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, byEngine, t1));
        await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, byEngine, t2));

        foreach (var ((cv, cs), (ev, es)) in new[] { ((byCinder, s1), (byEngine, t1)), ((byCinder, s2), (byEngine, t2)) })
        {
            var cPath = _bed.PathOf(VolumeFileNames.Overlay(cv, cs));
            var ePath = _bed.PathOf(VolumeFileNames.Overlay(ev, es));
            var c = ImageHeaderReader.Read(cPath).Qcow2!;
            var e = ImageHeaderReader.Read(ePath).Qcow2!;
            Assert.Equal(c.BackingFile!.Replace(cv.ToString(), "V", StringComparison.Ordinal).Replace(s1.ToString(), "S", StringComparison.Ordinal),
                e.BackingFile!.Replace(ev.ToString(), "V", StringComparison.Ordinal).Replace(t1.ToString(), "S", StringComparison.Ordinal));
            Assert.DoesNotContain('/', e.BackingFile);
            Assert.Equal((c.BackingFormat, c.VirtualSize, c.Version, c.ClusterBits), (e.BackingFormat, e.VirtualSize, e.Version, e.ClusterBits));
            Assert.Equal(File.GetUnixFileMode(cPath), File.GetUnixFileMode(ePath));
        }
        Assert.Equal(File.GetUnixFileMode(_bed.PathOf(VolumeFileNames.Info(byCinder))), File.GetUnixFileMode(_bed.PathOf(VolumeFileNames.Info(byEngine))));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.GroupWrite,
            File.GetUnixFileMode(_bed.PathOf(VolumeFileNames.Info(byEngine))));
        Assert.Empty(_bed.ShareProblems());
    }

    /// <summary>The engine deletes snapshots by pulling up (a middle one over a small overlay, then the newest over a
    /// small one): Cinder's driver reads the same .info, active file and chain it would after its own commits, and
    /// deletes and commits on from there; every byte stays.</summary>
    [Fact]
    public async Task After_the_engine_merged_by_pulling_up_cinders_driver_reads_the_chain_and_deletes_the_next_snapshot()
    {
        var v = await EngineVolumeAsync();
        var (a, b, c, d) = (Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid());
        _bed.GuestWrite(v, 0, 2 * MiB, 0x61);
        var refA = _bed.SaveReference(v, "a");
        await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, v, a));
        _bed.GuestWrite(v, 4 * MiB, 2 * MiB, 0x62);
        await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, v, b));
        _bed.GuestWrite(v, 8 * MiB, 24 * MiB, 0x63);
        var refC = _bed.SaveReference(v, "c");
        await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, v, c));
        _bed.GuestWrite(v, 40 * MiB, 2 * MiB, 0x64);
        await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, v, d));
        _bed.GuestWrite(v, 100 * MiB, 24 * MiB, 0x65);
        var refNow = _bed.SaveReference(v, "now");

        // b's overlay holds 24 MiB, a's 2: pulled up, a's overlay name now holds the merged image.
        var middle = await _bed.Engine.DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, v, b));
        // d's overlay (active) holds 24 MiB, c's 2: pulled up, the active file is c's overlay again, as after a commit.
        var newest = await _bed.Engine.DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, v, d));

        Assert.Contains("pull-up", middle.Message, StringComparison.Ordinal);
        Assert.Contains("pull-up", newest.Message, StringComparison.Ordinal);
        var info = _bed.Info(v)!;
        Assert.Equal(VolumeFileNames.Overlay(v, c), info.Active);
        Assert.Equal(info.Active, Cinder("active_file", v)["active"]!.GetValue<string>());
        var cinderInfo = Cinder("read_info", v)["info"]!.AsObject();
        Assert.Equal(info.Snapshots.Select(kv => (kv.Key.ToString(), kv.Value)).Append(("active", info.Active)).Order(),
            cinderInfo.Select(kv => (kv.Key, kv.Value!.GetValue<string>())).Order());
        var chain = _bed.Engine.ReadChain(Export, v);
        Assert.Equal(chain.Images.Select(i => i.FileName), Cinder("backing_chain", v)["chain"]!.AsArray().Select(i => i!["filename"]!.GetValue<string>()));
        Assert.Equal(VolumeFileNames.Overlay(v, a), Cinder("snapshot_backing_file", v, c)["backing_file"]!.GetValue<string>());
        Assert.True(_bed.SnapshotShows(v, c, refC));

        Cinder("delete_snapshot", v, c); // newest now: Cinder commits c's overlay into a's (the pulled-up image)

        Assert.Equal(VolumeFileNames.Overlay(v, a), _bed.Info(v)!.Active);
        Assert.Empty(_bed.Engine.ReadChain(Export, v).Problems);
        Assert.True(_bed.SnapshotShows(v, a, refA));
        var active = _bed.Engine.ReadChain(Export, v).Active;
        Assert.True(_bed.SameContents(_bed.PathOf(active.FileName), active.Format, refNow));
        Assert.Empty(_bed.ShareProblems());
    }
}
