using System.Text.Json;
using NfsVolumeWorker.Storage.Info;

namespace NfsVolumeWorker.Benchmarks;

/// <summary>
/// Replays, as real processes, the commands Cinder 21.3.1's NFS driver runs for an offline, unencrypted
/// volume (Debian python3-cinder 2:21.3.1-1~deb12u1), with the settings a snapshot-enabled NFS backend
/// must have: <c>nfs_snapshot_support=True</c>, <c>nas_secure_file_operations=false</c> (nfs.py
/// <c>NfsDriver._check_snapshot_support</c> refuses anything else, so no <c>chown</c>),
/// <c>nas_secure_file_permissions=true</c> (chmod 660, as the engine's default 0660),
/// <c>nfs_sparsed_volumes=True</c>, <c>nfs_qcow2_volumes=False</c>.
/// <para>
/// What Cinder does in its own Python process (reading and <c>json.dump</c>-ing the .info file,
/// <c>format_inspector.detect_file_format</c>, the backing-file regex) is done here in-process too, at
/// C# speed. Two things are left out, both in Cinder's favour: the root helper (every command runs via
/// <c>sudo cinder-rootwrap</c> in a deployment, a Python start per command) and the per-volume
/// coordination lock. The <c>qemu-img --version</c> probe behind <c>qemu_img_supports_force_share</c> is
/// cached per Cinder process, so it is not replayed either. The figures are therefore a lower bound
/// on what Cinder costs.
/// </para>
/// <para>
/// Checked against the real driver: <c>ops/bench/trace-cinder-commands</c> runs Cinder's own
/// <c>NfsDriver</c> methods offline and prints every command they execute; it prints these sequences.
/// </para>
/// </summary>
internal sealed class CinderNfsDriver(string volumeDir)
{
    /// <summary>The Python Cinder runs under (the Debian one: oslo_concurrency lives there, not in a pyenv).</summary>
    public const string Python = "/usr/bin/python3";

    /// <summary>
    /// image_utils.py <c>QEMU_IMG_LIMITS</c> = ProcessLimits(cpu_time=CONF.image_conversion_cpu_limit (default 60),
    /// address_space=CONF.image_conversion_address_space_limit (default 1) * units.Gi); oslo processutils.py
    /// <c>execute(prlimit=...)</c> prefixes <c>[sys.executable, '-m', 'oslo_concurrency.prlimit', *prlimit_args(), '--']</c>,
    /// <c>ProcessLimits.prlimit_args</c> emitting <c>--as</c> before <c>--cpu</c>.
    /// </summary>
    private static readonly string[] PrlimitPrefix = ["-m", "oslo_concurrency.prlimit", "--as=1073741824", "--cpu=60", "--"];

    /// <summary>Processes this replay has started (for the report: Cinder's cost is mostly process starts).</summary>
    public int ProcessCount { get; private set; }

    /// <summary>Of those, the <c>qemu-img info</c> runs under the Python prlimit wrapper (two processes each: python, then qemu-img).</summary>
    public int InfoCount { get; private set; }

    private string PathOf(string name) => Path.Combine(volumeDir, name);

    private async Task<ProcResult> ExecAsync(string file, string[] args, bool check = true)
    {
        ProcessCount++;
        if (file == Python)
        {
            InfoCount++;
        }
        return await Proc.RunAsync(file, args, check);
    }

    // ---- create snapshot -------------------------------------------------------------------------

    /// <summary>
    /// remotefs.py <c>RemoteFSSnapDriverBase._create_snapshot</c> (offline branch) →
    /// <c>_do_create_snapshot</c> (unencrypted branch) → <c>_set_rw_permissions</c>; then
    /// <c>_write_info_file</c>. Entered through nfs.py <c>NfsDriver.create_snapshot</c>.
    /// </summary>
    public async Task CreateSnapshotAsync(string volumeName, Guid snapshotId, int volumeSizeGiB)
    {
        var infoPath = PathOf(volumeName + ".info");
        var snapInfo = ReadInfoFile(infoPath);                      // _read_info_file(empty_if_missing=True)
        var backingFilename = ActiveImageFromInfo(infoPath, volumeName); // get_active_image_from_info (reads the file again)
        var newSnapPath = PathOf(volumeName + "." + snapshotId.ToString("D")); // _get_new_snap_path
        var active = Path.GetFileName(newSnapPath);

        // _do_create_snapshot
        var backingFullPath = PathOf(backingFilename);
        var info = await QemuImgInfoAsync(backingFullPath, volumeName, forceShare: true); // nfs.py _qemu_img_info
        var backingFmt = info.Format;
        await ExecAsync("qemu-img", ["create", "-f", "qcow2", "-o", $"backing_file={backingFullPath},backing_fmt={backingFmt}",
            newSnapPath, $"{volumeSizeGiB}G"]);
        await ExecAsync("qemu-img", ["rebase", "-u", "-b", backingFilename, "-F", backingFmt, newSnapPath]);
        await SetRwPermissionsAsync(newSnapPath);

        snapInfo = snapInfo is null ? VolumeInfo.ActiveOnly(active) : snapInfo;
        await WriteInfoFileAsync(infoPath, snapInfo.WithSnapshot(snapshotId, active));
    }

    // ---- delete snapshot -------------------------------------------------------------------------

    /// <summary>
    /// remotefs.py <c>RemoteFSSnapDriverBase._delete_snapshot</c> (offline, unencrypted branches) with
    /// <c>_img_commit</c> (commit -d, then <c>_delete</c>: <c>rm -f</c>), <c>_get_higher_image_path</c> →
    /// <c>_get_backing_chain_for_path</c> (one <c>_qemu_img_info</c> per image from the active one down)
    /// and <c>_rebase_img</c> for a middle snapshot; then <c>_write_info_file</c>.
    /// </summary>
    public async Task DeleteSnapshotAsync(string volumeName, Guid snapshotId)
    {
        var infoPath = PathOf(volumeName + ".info");
        var snapInfo = ReadInfoFile(infoPath);
        if (snapInfo is null || !snapInfo.Snapshots.TryGetValue(snapshotId, out var snapshotFile))
        {
            return; // "Snapshot record ... is not present, allowing snapshot_delete to proceed."
        }
        var snapshotPath = PathOf(snapshotFile);
        var snapshotImgInfo = await QemuImgInfoAsync(snapshotPath, volumeName, forceShare: true);
        var baseFile = snapshotImgInfo.BackingFile ?? throw new HarnessException($"{snapshotFile} has no backing file (stale snapshot path not benchmarked)");
        var baseFileImgInfo = await QemuImgInfoAsync(PathOf(baseFile), volumeName, forceShare: true);
        var activeFile = ActiveImageFromInfo(infoPath, volumeName);

        VolumeInfo updated;
        if (snapshotFile == activeFile)
        {
            await ImgCommitAsync(snapshotPath);
            updated = snapInfo.WithoutSnapshot(snapshotId) with { Active = baseFile };
        }
        else
        {
            var higherFile = await GetHigherImagePathAsync(volumeName, snapshotFile)
                ?? throw new HarnessException($"No file found with {snapshotFile} as backing file.");
            if (!snapInfo.Snapshots.ContainsValue(higherFile))
            {
                throw new HarnessException($"No snap found with {higherFile} as backing file.");
            }
            await ImgCommitAsync(snapshotPath);
            // _rebase_img: ['qemu-img', 'rebase', '-u', '-b', backing_file, image, '-F', volume_format]
            await ExecAsync("qemu-img", ["rebase", "-u", "-b", baseFile, PathOf(higherFile), "-F", baseFileImgInfo.Format]);
            updated = snapInfo.WithoutSnapshot(snapshotId);
        }
        await WriteInfoFileAsync(infoPath, updated);
    }

    /// <summary>remotefs.py <c>_img_commit</c> (unencrypted): <c>qemu-img commit -d path</c>, then <c>_delete</c> (<c>rm -f</c>).</summary>
    private async Task ImgCommitAsync(string path)
    {
        await ExecAsync("qemu-img", ["commit", "-d", path]);
        await ExecAsync("rm", ["-f", path]);
    }

    /// <summary>remotefs.py <c>_get_higher_image_path</c> and <c>_get_backing_chain_for_path</c>.</summary>
    private async Task<string?> GetHigherImagePathAsync(string volumeName, string snapshotFile)
    {
        var infoPath = PathOf(volumeName + ".info");
        _ = ReadInfoFile(infoPath);
        var activeFile = ActiveImageFromInfo(infoPath, volumeName);
        var chain = new List<(string File, string? Backing)>();
        var info = await QemuImgInfoAsync(PathOf(activeFile), volumeName, forceShare: true);
        chain.Add((activeFile, info.BackingFile));
        while (chain[^1].Backing is { } backing)
        {
            info = await QemuImgInfoAsync(PathOf(backing), volumeName, forceShare: true);
            chain.Add((backing, info.BackingFile));
        }
        return chain.FirstOrDefault(c => c.Backing == snapshotFile).File;
    }

    // ---- create volume from snapshot -------------------------------------------------------------

    /// <summary>
    /// The whole of remotefs.py <c>_create_volume_from_snapshot</c>: <c>_do_create_volume</c> (sparse:
    /// <c>_create_sparsed_file</c> = <c>truncate -s NG</c>, then <c>_set_rw_permissions</c>), then nfs.py
    /// <c>NfsDriver._copy_volume_from_snapshot</c>: <c>_qemu_img_info</c> of the overlay to find the snapshot's
    /// data, image_utils.py <c>convert_image</c> → <c>check_image_format</c> (a <c>qemu_img_info</c> without
    /// --force-share) → <c>_convert_image</c> (a regular file is no block device: no <c>-t none</c>; the
    /// plain <c>qemu-img convert -O raw src dest</c>, no <c>-f</c>, <c>-W</c> or <c>-m</c>; then another
    /// <c>qemu_img_info</c> of the source for the log line), then <c>_set_rw_permissions_for_all</c>.
    /// No sync anywhere.
    /// </summary>
    public async Task CreateVolumeFromSnapshotAsync(string volumeName, Guid snapshotId, string newVolumeName, int newSizeGiB)
    {
        var newPath = PathOf(newVolumeName);
        await ExecAsync("truncate", ["-s", $"{newSizeGiB}G", newPath]);
        await SetRwPermissionsAsync(newPath);

        var snapInfo = ReadInfoFile(PathOf(volumeName + ".info")) ?? throw new HarnessException($"{volumeName} has no .info file");
        var forwardFile = snapInfo.Snapshots[snapshotId];
        var imgInfo = await QemuImgInfoAsync(PathOf(forwardFile), volumeName, forceShare: true);
        var source = PathOf(imgInfo.BackingFile ?? throw new HarnessException($"{forwardFile} has no backing file"));

        _ = await QemuImgInfoAsync(source, null, forceShare: false);  // check_image_format
        await ConvertAsync(source, newPath);
        _ = await QemuImgInfoAsync(source, null, forceShare: false);  // _convert_image: image size for the log line
        await ExecAsync("chmod", ["ugo+rw", newPath]);
    }

    /// <summary>image_utils.py <c>_get_qemu_convert_cmd</c> for a file target, no throttle prefix, no src_format.</summary>
    public async Task ConvertAsync(string source, string dest) => await ExecAsync("qemu-img", ["convert", "-O", "raw", source, dest]);

    // ---- shared pieces ---------------------------------------------------------------------------

    /// <summary>remotefs.py <c>_set_rw_permissions</c> with nas_secure_file_permissions='true'.</summary>
    private async Task SetRwPermissionsAsync(string path) => await ExecAsync("chmod", ["660", path]);

    /// <summary>
    /// remotefs.py <c>_write_info_file</c>: when the file does not exist yet, <c>truncate -s0</c> and
    /// <c>_set_rw_permissions</c>; then <c>open(path, 'w')</c> + <c>json.dump(indent=1, sort_keys=True)</c>,
    /// in place, no fsync.
    /// </summary>
    private async Task WriteInfoFileAsync(string infoPath, VolumeInfo info)
    {
        if (!File.Exists(infoPath))
        {
            await ExecAsync("truncate", ["-s0", infoPath]);
            await SetRwPermissionsAsync(infoPath);
        }
        await File.WriteAllTextAsync(infoPath, InfoFile.Serialize(info));
    }

    /// <summary>remotefs.py <c>_read_info_file(empty_if_missing=True)</c>.</summary>
    private static VolumeInfo? ReadInfoFile(string infoPath) =>
        File.Exists(infoPath) ? InfoFile.Parse(File.ReadAllText(infoPath), infoPath) : null;

    /// <summary>remotefs.py <c>get_active_image_from_info</c>.</summary>
    private static string ActiveImageFromInfo(string infoPath, string volumeName) => ReadInfoFile(infoPath)?.Active ?? volumeName;

    /// <summary>
    /// image_utils.py <c>qemu_img_info</c> as nfs.py <c>NfsDriver._qemu_img_info</c> →
    /// remotefs.py <c>_qemu_img_info_base</c> calls it (<c>force_share=True</c>; <c>check_image_format</c>
    /// calls it without): <c>format_inspector.detect_file_format</c> in-process, then under prlimit
    /// <c>env LC_ALL=C qemu-img info -f FMT --output=json [--force-share] PATH</c>; when the result is raw,
    /// a second run with <c>-f luks</c> whose failure is ignored. <c>_qemu_img_info_base</c> then checks the
    /// backing file against its pattern (in-process, skipped here).
    /// </summary>
    private async Task<QemuImgInfo> QemuImgInfoAsync(string path, string? volumeName, bool forceShare)
    {
        _ = volumeName;
        var formatName = DetectFormat(path);
        var r = await ExecAsync(Python, InfoCommand(formatName, forceShare, path));
        var info = ParseInfo(r.Stdout);
        if (info.Format == "raw")
        {
            var luks = await ExecAsync(Python, InfoCommand("luks", forceShare, path), check: false);
            if (luks.ExitCode == 0)
            {
                info = ParseInfo(luks.Stdout) with { Format = "raw" };
            }
        }
        return info;
    }

    private static string[] InfoCommand(string format, bool forceShare, string path) =>
        [.. PrlimitPrefix, "env", "LC_ALL=C", "qemu-img", "info", "-f", format, "--output=json", .. (forceShare ? new[] { "--force-share" } : []), path];

    /// <summary>format_inspector.detect_file_format, for the two formats a share holds: the qcow2 magic, else raw.</summary>
    private static string DetectFormat(string path)
    {
        Span<byte> magic = stackalloc byte[4];
        using var f = File.OpenRead(path);
        return f.Read(magic) == 4 && magic.SequenceEqual(Qcow2Magic) ? "qcow2" : "raw";
    }

    private static ReadOnlySpan<byte> Qcow2Magic => [0x51, 0x46, 0x49, 0xFB];

    private static QemuImgInfo ParseInfo(string json)
    {
        using var doc = JsonDocument.Parse(json);
        var root = doc.RootElement;
        string? backing = root.TryGetProperty("backing-filename", out var b) ? b.GetString() : null;
        return new QemuImgInfo(root.GetProperty("format").GetString()!, root.GetProperty("virtual-size").GetInt64(),
            backing is null ? null : Path.GetFileName(backing));
    }

    private sealed record QemuImgInfo(string Format, long VirtualSize, string? BackingFile);
}
