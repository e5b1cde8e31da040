using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.QemuImg;
using NfsVolumeWorker.Storage.Shares;
using NfsVolumeWorker.Storage.Tests.Support;
using static NfsVolumeWorker.Storage.Tests.Support.EngineTestBed;
using NfsVolumeWorker.Testing;

namespace NfsVolumeWorker.Storage.Tests.Engine;

/// <summary>
/// <see cref="VolumeEngineOptions.CopyBytesPerSecond"/> limits a clone's full copy (<c>qemu-img convert -r</c>), as
/// Cinder's <c>volume_copy_bps_limit</c> does; unset, the copy is not limited. Proven by the arguments the real
/// qemu-img ran with (a wrapper records them) and by content against the source.
/// </summary>
public sealed class CopyRateLimitSpecs : IDisposable
{
    private readonly EngineTestBed _bed = new();
    private readonly string _calls;
    private readonly QemuImgRunner _qemu;

    public CopyRateLimitSpecs()
    {
        _calls = Path.Combine(_bed.References, "qemu-img.calls");
        var recording = Path.Combine(_bed.References, "qemu-img-recording");
        ShellScript.Write(recording, $"echo \"$*\" >> {_calls}\nexec {RequiredTool.QemuImg} \"$@\"\n");
        _qemu = QemuImgAt(recording);
    }

    public void Dispose() => _bed.Dispose();

    private VolumeEngine Engine(long bytesPerSecond) => _bed.EngineWith(
        new VolumeEngineOptions { LockTimeout = TimeSpan.FromSeconds(30), ServerSideCopy = false, CopyWithDirectIo = true, CopyBytesPerSecond = bytesPerSecond }, _qemu);

    private List<string> Converts() => File.Exists(_calls)
        ? File.ReadAllLines(_calls).Where(l => l.StartsWith("convert ", StringComparison.Ordinal)).ToList()
        : [];

    [Fact]
    public async Task A_limited_full_copy_runs_qemu_img_convert_with_the_limit_and_says_so()
    {
        var engine = Engine(64 * MiB);
        var volume = await _bed.CreateVolumeAsync(32 * MiB);
        _bed.GuestWrite(volume, 0, 8 * MiB, 0x3c);
        var reference = _bed.SaveReference(volume, "now");
        var clone = Guid.NewGuid();

        var result = await engine.CloneVolumeAsync(new CloneVolumeRequest(Export, volume, clone));

        var convert = Assert.Single(Converts());
        Assert.Contains($" -r {64 * MiB} ", convert, StringComparison.Ordinal);
        Assert.Contains("copied with O_DIRECT, at most 67.1 MB/s (Engine:CopyBytesPerSecond)", result.Message, StringComparison.Ordinal);
        Assert.True(_bed.SameContents(_bed.PathOf(VolumeFileNames.Base(clone)), ImageFormat.Raw, reference));
    }

    [Fact]
    public async Task Without_a_limit_the_copy_runs_as_fast_as_it_can()
    {
        var engine = Engine(0);
        var volume = await _bed.CreateVolumeAsync(32 * MiB);
        _bed.GuestWrite(volume, 0, 8 * MiB, 0x3d);

        var result = await engine.CloneVolumeAsync(new CloneVolumeRequest(Export, volume, Guid.NewGuid()));

        var convert = Assert.Single(Converts());
        Assert.DoesNotContain(" -r ", convert, StringComparison.Ordinal);
        Assert.DoesNotContain("at most", result.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_runner_refuses_a_limit_that_is_not_positive_before_running_anything()
    {
        var request = new ConvertRequest(_bed.PathOf("a"), ImageFormat.Raw, _bed.PathOf("b"), ImageFormat.Raw, BytesPerSecond: 0);

        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => _qemu.ConvertAsync(request));

        Assert.Empty(Converts());
    }
}
