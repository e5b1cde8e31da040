using System.Globalization;
using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Qcow2;
using NfsVolumeWorker.Storage.QemuImg;
using NfsVolumeWorker.Storage.Shares;
using NfsVolumeWorker.Testing;

namespace NfsVolumeWorker.Storage.Tests.Engine;

/// <summary>Snapshots and reverts whose overlay the engine writes itself (<c>Engine:NativeOverlayHeaders</c>): the
/// chain reads back right through real qemu tools, no <c>qemu-img create</c> runs, and qemu-img is still used when
/// the option is off or the input is outside what the writer is proven for.</summary>
public sealed class NativeOverlaySpecs : IDisposable
{
    private const long MiB = 1024 * 1024;
    private const string Export = "192.0.2.10:/export";

    private readonly TempDirectory _dir = new("nfsvol-native-overlay-");
    private readonly Share _share;
    private readonly string _calls;
    private readonly QemuImgRunner _qemu;

    public NativeOverlaySpecs()
    {
        _share = new Share(Export, Directory.CreateDirectory(_dir.File("share")).FullName, null);
        // A pass-through qemu-img that records each command line: the proof of which way an overlay was made.
        _calls = _dir.File("qemu-img-calls");
        var recorder = _dir.File("qemu-img-recorder");
        ShellScript.Write(recorder, $"""
            echo "$*" >> "{_calls}"
            exec {RequiredTool.QemuImg} "$@"
            """);
        _qemu = new QemuImgRunner(Options.Create(new QemuImgOptions { Executable = recorder }), NullLogger<QemuImgRunner>.Instance);
    }

    public void Dispose() => _dir.Dispose();

    private VolumeEngine Engine(bool native) => new(new ShareMap([_share]), _qemu,
        Options.Create(new VolumeEngineOptions { NativeOverlayHeaders = native, LockTimeout = TimeSpan.FromSeconds(30) }), NullLogger<VolumeEngine>.Instance);

    private List<string> CreateCalls() => File.Exists(_calls)
        ? File.ReadAllLines(_calls).Where(l => l.StartsWith("create ", StringComparison.Ordinal)).ToList()
        : [];

    [Fact]
    public async Task A_snapshot_made_natively_reads_back_through_the_chain_and_no_qemu_img_create_runs()
    {
        var engine = Engine(native: true);
        var (v, s1, s2) = (Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid());
        await engine.CreateVolumeAsync(new CreateVolumeRequest(Export, v, 64 * MiB, ImageFormat.Raw));
        var baseName = VolumeFileNames.Base(v);
        QemuIo("raw", baseName, "write -P 0x11 0 2M");
        var createsBefore = CreateCalls().Count;

        await engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, v, s1));

        var first = VolumeFileNames.Overlay(v, s1);
        Assert.Equal(createsBefore, CreateCalls().Count);
        AssertSameAsQemuImgCreate(first, 64 * MiB, baseName, ImageFormat.Raw);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.GroupWrite, File.GetUnixFileMode(_share.PathOf(first)));
        QemuIo("qcow2", first, "write -P 0x22 1M 1M");

        await engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, v, s2));

        var second = VolumeFileNames.Overlay(v, s2);
        Assert.Equal(createsBefore, CreateCalls().Count);
        AssertSameAsQemuImgCreate(second, 64 * MiB, first, ImageFormat.Qcow2);
        var chain = BackingChain(second);
        Assert.Equal([second, first, baseName], chain.Select(i => i.GetProperty("filename").GetString()!.Split('/')[^1]));
        Assert.Equal(["qcow2", "qcow2", "raw"], chain.Select(i => i.GetProperty("format").GetString()));
        Assert.Equal([first, baseName], chain.Take(2).Select(i => i.GetProperty("backing-filename").GetString()));
        Assert.Equal(["qcow2", "raw"], chain.Take(2).Select(i => i.GetProperty("backing-filename-format").GetString()));
        Assert.All(chain, i => Assert.Equal(64 * MiB, i.GetProperty("virtual-size").GetInt64()));

        QemuIo("qcow2", second, "write -P 0x33 0 512K");
        Assert.True(Reads(second, "0 512K", 0x33));
        Assert.True(Reads(second, "512K 512K", 0x11));
        Assert.True(Reads(second, "1M 1M", 0x22));
        Assert.True(Reads(second, "2M 1M", 0x00));
        Assert.Equal(0, RequiredTool.Run(RequiredTool.QemuImg, "check", "-f", "qcow2", _share.PathOf(second)).ExitCode);

        // qemu's own operations work on the native overlays: merge the newest away, then revert natively.
        await engine.DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, v, s2));
        Assert.True(Reads(first, "0 512K", 0x33));
        await engine.RevertToSnapshotAsync(new RevertToSnapshotRequest(Export, v, s1));

        Assert.Equal(createsBefore, CreateCalls().Count);
        AssertSameAsQemuImgCreate(first, 64 * MiB, baseName, ImageFormat.Raw);
        Assert.True(Reads(first, "0 2M", 0x11));
        Assert.DoesNotContain(Directory.EnumerateFiles(_share.LocalPath), f => f.Contains(".tmp-", StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_snapshot_of_a_volume_declared_larger_than_its_file_is_written_natively_at_the_declared_size()
    {
        var engine = Engine(native: true);
        var (v, s) = (Guid.NewGuid(), Guid.NewGuid());
        await engine.CreateVolumeAsync(new CreateVolumeRequest(Export, v, 10 * MiB, ImageFormat.Raw));
        var createsBefore = CreateCalls().Count;

        await engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, v, s, VolumeSizeBytes: 3L << 40));

        Assert.Equal(createsBefore, CreateCalls().Count);
        AssertSameAsQemuImgCreate(VolumeFileNames.Overlay(v, s), 3L << 40, VolumeFileNames.Base(v), ImageFormat.Raw);
    }

    [Fact]
    public async Task With_native_overlays_off_the_engine_runs_qemu_img_create_and_gets_the_same_file()
    {
        var engine = Engine(native: false);
        var (v, s) = (Guid.NewGuid(), Guid.NewGuid());
        await engine.CreateVolumeAsync(new CreateVolumeRequest(Export, v, 64 * MiB, ImageFormat.Raw));
        var createsBefore = CreateCalls().Count;

        await engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, v, s));
        await engine.RevertToSnapshotAsync(new RevertToSnapshotRequest(Export, v, s));

        var overlay = VolumeFileNames.Overlay(v, s);
        Assert.Equal(createsBefore + 2, CreateCalls().Count);
        var native = _dir.File("native");
        new OverlayImage(64 * MiB, VolumeFileNames.Base(v), ImageFormat.Raw).Create(native, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        Assert.Equal(File.ReadAllBytes(native), File.ReadAllBytes(_share.PathOf(overlay)));
    }

    [Fact]
    public async Task A_backing_name_outside_the_proof_falls_back_to_qemu_img_create()
    {
        var engine = Engine(native: true);
        var path = _share.PathOf("overlay-of-odd-name");
        var backing = "base with a space";

        await engine.CreateOverlayFileAsync(path, 8 * MiB, backing, ImageFormat.Raw, Guid.NewGuid(), CancellationToken.None);

        Assert.Single(CreateCalls(), c => c.Contains(backing, StringComparison.Ordinal));
        var header = ImageHeaderReader.Read(path).Qcow2!;
        Assert.Equal((backing, "raw", 8UL * (ulong)MiB), (header.BackingFile, header.BackingFormat, header.VirtualSize));
    }

    [Fact]
    public async Task A_size_above_the_proof_falls_back_to_qemu_img_create_whose_refusal_surfaces_and_leaves_no_file()
    {
        var engine = Engine(native: true);
        var path = _share.PathOf("overlay-too-large");
        var size = OverlayImage.MaxVirtualSize + 512;

        var failure = await Assert.ThrowsAsync<QemuImgException>(() =>
            engine.CreateOverlayFileAsync(path, size, "volume-x", ImageFormat.Raw, Guid.NewGuid(), CancellationToken.None));

        Assert.Single(CreateCalls(), c => c.EndsWith(size.ToString(CultureInfo.InvariantCulture), StringComparison.Ordinal));
        Assert.Contains("too large", failure.Message + failure.StandardError, StringComparison.Ordinal);
        Assert.False(File.Exists(path));
    }

    private void AssertSameAsQemuImgCreate(string overlay, long size, string backingFile, ImageFormat backingFormat)
    {
        var reference = _dir.File("reference-" + Guid.NewGuid().ToString("N"));
        RequiredTool.RunChecked(RequiredTool.QemuImg, "create", "-q", "-f", "qcow2", "-b", backingFile, "-F", backingFormat.ToQemuName(), "-u",
            reference, size.ToString(CultureInfo.InvariantCulture));
        Assert.Equal(File.ReadAllBytes(reference), File.ReadAllBytes(_share.PathOf(overlay)));
    }

    private void QemuIo(string format, string file, string command) =>
        RequiredTool.RunChecked(RequiredTool.Find("qemu-io", "qemu-utils"), "-f", format, "-c", command, _share.PathOf(file));

    private bool Reads(string file, string range, byte pattern)
    {
        var (code, stdout, stderr) = RequiredTool.Run(RequiredTool.Find("qemu-io", "qemu-utils"), "-r", "-f", "qcow2",
            "-c", $"read -P 0x{pattern:x2} {range}", _share.PathOf(file));
        return code == 0 ? !stdout.Contains("Pattern verification failed", StringComparison.Ordinal) : throw new InvalidOperationException(stderr);
    }

    private List<JsonElement> BackingChain(string file)
    {
        var json = RequiredTool.RunChecked(RequiredTool.QemuImg, "info", "--backing-chain", "--output=json", "-f", "qcow2", _share.PathOf(file));
        return JsonDocument.Parse(json).RootElement.EnumerateArray().Select(e => e.Clone()).ToList();
    }
}
