using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Info;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.QemuImg;
using NfsVolumeWorker.Storage.Shares;

namespace NfsVolumeWorker.Storage.Tests.Support;

/// <summary>A real share directory, a real engine on it, and the real qemu tools to write and read guest data.</summary>
public sealed class EngineTestBed : IDisposable
{
    public const string Export = "192.0.2.10:/export";
    public const long MiB = 1024 * 1024;

    private readonly TempDirectory _root = new("nfsvol-engine-");

    public EngineTestBed(VolumeEngineOptions? options = null, IStepObserver? steps = null)
    {
        _ = RequiredTool.QemuImg;
        MountBase = Path.Combine(_root.Path, "mnt");
        Share = ShareMap.FromDefinition(MountBase, Export, null, "vers=4.1");
        Directory.CreateDirectory(Share.LocalPath);
        Qemu = new QemuImgRunner(Options.Create(new QemuImgOptions()), NullLogger<QemuImgRunner>.Instance);
        Options_ = options ?? new VolumeEngineOptions { LockTimeout = TimeSpan.FromSeconds(30) };
        Engine = new VolumeEngine(new ShareMap([Share]), Qemu, Options.Create(Options_), NullLogger<VolumeEngine>.Instance, steps);
        References = Path.Combine(_root.Path, "references");
        Directory.CreateDirectory(References);
    }

    public string MountBase { get; }

    public Share Share { get; }

    public QemuImgRunner Qemu { get; }

    public VolumeEngineOptions Options_ { get; }

    public VolumeEngine Engine { get; }

    /// <summary>A directory outside the share for reference copies.</summary>
    public string References { get; }

    public string PathOf(string fileName) => Path.Combine(Share.LocalPath, fileName);

    /// <summary>An engine on the same share with other options, running <paramref name="qemuImg"/> (the bed's own when
    /// null).</summary>
    public VolumeEngine EngineWith(VolumeEngineOptions options, QemuImgRunner? qemuImg = null) =>
        new(new ShareMap([Share]), qemuImg ?? Qemu, Options.Create(options), NullLogger<VolumeEngine>.Instance);

    /// <summary>A qemu-img runner of another executable: a wrapper around the real one (<c>ShellScript</c>).</summary>
    public static QemuImgRunner QemuImgAt(string executable) =>
        new(Options.Create(new QemuImgOptions { Executable = executable }), NullLogger<QemuImgRunner>.Instance);

    /// <summary>A new engine on the same share (what a restarted process would be).</summary>
    public VolumeEngine NewEngine(IStepObserver? steps = null) =>
        new(new ShareMap([Share]), Qemu, Options.Create(Options_), NullLogger<VolumeEngine>.Instance, steps);

    public async Task<Guid> CreateVolumeAsync(long size = 64 * MiB, ImageFormat format = ImageFormat.Raw)
    {
        var id = Guid.NewGuid();
        await Engine.CreateVolumeAsync(new CreateVolumeRequest(Export, id, size, format));
        return id;
    }

    /// <summary>Writes <paramref name="length"/> bytes of <paramref name="pattern"/> at <paramref name="offset"/> into
    /// the volume's active image, as a guest would (qemu-io on the active image, explicit format).</summary>
    public void GuestWrite(Guid volumeId, long offset, long length, byte pattern)
    {
        var chain = Engine.ReadChain(Export, volumeId);
        var active = chain.Active;
        RequiredTool.RunChecked(RequiredTool.Find("qemu-io", "qemu-utils"), "-f", active.Format.ToQemuName(),
            "-c", $"write -P 0x{pattern:x2} {offset} {length}", PathOf(active.FileName));
    }

    /// <summary>Reads back what a guest sees at an offset of an image and checks every byte is <paramref name="pattern"/>.</summary>
    public bool ImageReads(string file, ImageFormat format, long offset, long length, byte pattern)
    {
        var (code, stdout, stderr) = RequiredTool.Run(RequiredTool.Find("qemu-io", "qemu-utils"), "-r", "-f", format.ToQemuName(),
            "-c", $"read -P 0x{pattern:x2} {offset} {length}", file);
        if (code != 0)
        {
            throw new InvalidOperationException($"qemu-io read failed: {stderr}");
        }
        return !stdout.Contains("Pattern verification failed", StringComparison.Ordinal);
    }

    /// <summary>Saves a flat raw copy of what the volume's active image shows now (a reference to compare against later).</summary>
    public string SaveReference(Guid volumeId, string name)
    {
        var chain = Engine.ReadChain(Export, volumeId);
        var path = Path.Combine(References, name + ".raw");
        RequiredTool.RunChecked(RequiredTool.QemuImg, "convert", "-f", chain.Active.Format.ToQemuName(), "-O", "raw", PathOf(chain.Active.FileName), path);
        return path;
    }

    /// <summary>True when the image (with its chain) shows exactly the reference's contents.</summary>
    public bool SameContents(string file, ImageFormat format, string referenceRaw)
    {
        var (code, _, stderr) = RequiredTool.Run(RequiredTool.QemuImg, "compare", "-f", format.ToQemuName(), "-F", "raw", file, referenceRaw);
        return code switch
        {
            0 => true,
            1 => false,
            _ => throw new InvalidOperationException($"qemu-img compare failed: {stderr}"),
        };
    }

    /// <summary>The data of snapshot S (the backing file of info[S]) equals the reference.</summary>
    public bool SnapshotShows(Guid volumeId, Guid snapshotId, string referenceRaw)
    {
        var chain = Engine.ReadChain(Export, volumeId);
        var data = chain.SnapshotData(snapshotId);
        return SameContents(PathOf(data.FileName), data.Format, referenceRaw);
    }

    /// <summary>Cinder's definition, read from the files alone: the backing file of info[S] (with the format its header
    /// records) equals the reference. Holds in every intermediate state of a delete, also where the engine's chain
    /// model does not (a pull-up leaves the lower overlay out of the active chain until its name is re-pointed).</summary>
    public bool SnapshotFileShows(Guid volumeId, Guid snapshotId, string referenceRaw)
    {
        var overlay = Info(volumeId)!.Snapshots[snapshotId];
        var header = Storage.Qcow2.ImageHeaderReader.Read(PathOf(overlay)).Qcow2!;
        Assert.True(ImageFormatNames.TryParse(header.BackingFormat, out var format), $"{overlay} records no backing format");
        return SameContents(PathOf(header.BackingFile!), format, referenceRaw);
    }

    public VolumeInfo? Info(Guid volumeId) => InfoFile.Read(PathOf(VolumeFileNames.Info(volumeId)));

    /// <summary>Every image of every volume on the share opens, passes qemu-img check, and its chain resolves;
    /// every .info file parses and names files that exist. Returns the problems found (empty = healthy).</summary>
    public List<string> ShareProblems()
    {
        var problems = new List<string>();
        foreach (var path in Directory.EnumerateFiles(Share.LocalPath))
        {
            var name = Path.GetFileName(path);
            if (!VolumeFileNames.TryParse(name, out var volumeId, out var kind))
            {
                continue;
            }
            if (kind == VolumeFileKind.Info)
            {
                try
                {
                    var info = InfoFile.Read(path)!;
                    foreach (var f in info.Snapshots.Values.Append(info.Active))
                    {
                        if (!File.Exists(PathOf(f)))
                        {
                            problems.Add($"{name} names {f}, which does not exist");
                        }
                    }
                }
                catch (Exception e)
                {
                    problems.Add($"{name}: {e.Message}");
                }
                continue;
            }
            var format = IsQcow2(path) ? "qcow2" : "raw";
            var (code, stdout, stderr) = RequiredTool.Run(RequiredTool.QemuImg, "info", "-U", "--backing-chain", "--output=json", "-f", format, path);
            if (code != 0)
            {
                problems.Add($"{name}: qemu-img info --backing-chain failed: {stderr.Trim()}");
                continue;
            }
            using var doc = JsonDocument.Parse(stdout);
            if (doc.RootElement.GetArrayLength() == 0)
            {
                problems.Add($"{name}: empty chain");
            }
            if (format == "qcow2")
            {
                var check = RequiredTool.Run(RequiredTool.QemuImg, "check", "-U", "-f", "qcow2", path);
                if (check.ExitCode is not (0 or 3))
                {
                    problems.Add($"{name}: qemu-img check exit {check.ExitCode}: {check.Stdout.Trim()} {check.Stderr.Trim()}");
                }
            }
        }
        return problems;
    }

    public static bool IsQcow2(string path)
    {
        using var f = File.OpenRead(path);
        Span<byte> magic = stackalloc byte[4];
        return f.Read(magic) == 4 && magic.SequenceEqual(new byte[] { 0x51, 0x46, 0x49, 0xFB });
    }

    /// <summary>File names on the share, sorted (hidden files and the worker's directory included).</summary>
    public List<string> Listing() => Directory.EnumerateFileSystemEntries(Share.LocalPath).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToList()!;

    public void Dispose() => _root.Dispose();
}
