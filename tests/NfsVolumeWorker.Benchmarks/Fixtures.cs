using System.Globalization;
using NfsVolumeWorker.Storage.Info;
using NfsVolumeWorker.Storage.Layout;

namespace NfsVolumeWorker.Benchmarks;

/// <summary>A volume the harness laid out: its id, its snapshots (oldest first) and its virtual size.</summary>
internal sealed record BenchVolume(Guid Id, List<Guid> Snapshots, long VirtualBytes)
{
    public string BaseName => VolumeFileNames.Base(Id);

    public string OverlayName(Guid snapshotId) => VolumeFileNames.Overlay(Id, snapshotId);
}

/// <summary>
/// Lays out volumes exactly as Cinder's NFS driver leaves them (raw sparse base, qcow2 overlays with a
/// relative backing reference and an explicit backing format, a <c>json.dump</c>-style .info file), with
/// plain qemu-img/qemu-io, so the engine and the Cinder replay start from identical files. The setup does
/// not use the engine: a harness that measured the engine on files the engine made would prove less.
/// </summary>
internal sealed class Fixtures(string dir)
{
    public const long MiB = 1L << 20;
    public const long GiB = 1L << 30;

    /// <summary>The byte every benchmark write uses: not zero, so nothing is skipped as a zero cluster.</summary>
    public const string Pattern = "0x5a";

    public string Dir => dir;

    public string PathOf(string name) => Path.Combine(dir, name);

    /// <summary>A volume with a raw sparse base of <paramref name="virtualBytes"/> and no .info file.</summary>
    public BenchVolume CreateVolume(long virtualBytes)
    {
        var volume = new BenchVolume(Guid.NewGuid(), [], virtualBytes);
        using (var stream = new FileStream(PathOf(volume.BaseName), new FileStreamOptions
        {
            Mode = FileMode.CreateNew,
            Access = FileAccess.Write,
            UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.GroupWrite,
        }))
        {
            stream.SetLength(virtualBytes);
        }
        return volume;
    }

    /// <summary>Takes a snapshot the way Cinder leaves it on disk: a new overlay on the active image, .info updated.</summary>
    public async Task<Guid> AddSnapshotAsync(BenchVolume volume)
    {
        var snapshotId = Guid.NewGuid();
        var infoPath = PathOf(VolumeFileNames.Info(volume.Id));
        var info = File.Exists(infoPath) ? InfoFile.Parse(await File.ReadAllTextAsync(infoPath), infoPath) : VolumeInfo.ActiveOnly(volume.BaseName);
        var backingFormat = info.Active == volume.BaseName ? "raw" : "qcow2";
        var overlay = volume.OverlayName(snapshotId);
        await Proc.RunAsync("qemu-img", "create", "-q", "-f", "qcow2", "-b", info.Active, "-F", backingFormat, PathOf(overlay),
            volume.VirtualBytes.ToString(CultureInfo.InvariantCulture));
        File.SetUnixFileMode(PathOf(overlay), UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.GroupWrite);
        await File.WriteAllTextAsync(infoPath, InfoFile.Serialize(info.WithSnapshot(snapshotId, overlay)));
        volume.Snapshots.Add(snapshotId);
        return snapshotId;
    }

    /// <summary>Writes <paramref name="length"/> bytes of <see cref="Pattern"/> at <paramref name="offset"/> of an image (qemu-io),
    /// in requests of at most 1 GiB: qemu-io refuses one of 2 GiB or more.</summary>
    public static Task WriteAsync(string path, string format, long offset, long length)
    {
        const long MaxRequest = 1024L * MiB;
        var args = new List<string> { "-f", format };
        for (var done = 0L; done < length; done += MaxRequest)
        {
            args.Add("-c");
            args.Add(string.Create(CultureInfo.InvariantCulture, $"write -P {Pattern} {offset + done} {Math.Min(MaxRequest, length - done)}"));
        }
        args.Add(path);
        return Proc.RunAsync("qemu-io", args);
    }

    /// <summary>Deletes every file of a volume (images, .info, hidden temp files) and any extra file named.</summary>
    public void DeleteVolume(Guid volumeId)
    {
        var baseName = VolumeFileNames.Base(volumeId);
        foreach (var file in Directory.EnumerateFiles(dir))
        {
            var name = Path.GetFileName(file);
            if (name.StartsWith(baseName, StringComparison.Ordinal) || name.StartsWith("." + baseName, StringComparison.Ordinal))
            {
                File.Delete(file);
            }
        }
    }

    public void DeleteFile(string name) => File.Delete(PathOf(name));

    /// <summary>Bytes a file occupies on disk (its allocated blocks), to show a copy stayed sparse.</summary>
    public static async Task<long> AllocatedBytesAsync(string path)
    {
        var r = await Proc.RunAsync("stat", "-c", "%b %B", path);
        var parts = r.Stdout.Trim().Split(' ');
        return long.Parse(parts[0], CultureInfo.InvariantCulture) * long.Parse(parts[1], CultureInfo.InvariantCulture);
    }
}
