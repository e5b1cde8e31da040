using System.Globalization;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Storage.Durability;
using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Qcow2;
using NfsVolumeWorker.Storage.QemuImg;
using NfsVolumeWorker.Storage.Shares;

namespace NfsVolumeWorker.Benchmarks;

/// <summary>
/// The overlay file alone, side by side in one run: N empty overlays written natively (<see cref="OverlayImage"/>)
/// against N made by <c>qemu-img create</c> through the engine's runner, each made durable the engine's way (temp
/// name, fsync, rename, directory fsync). Then whole snapshot creates by the engine with
/// <c>Engine:NativeOverlayHeaders</c> on and off. The variants alternate, so drift falls on both alike.
/// </summary>
internal sealed class OverlayBench(Settings settings, Results results, TextWriter output, Fixtures fx)
{
    public const string Scenario = "overlay file (1 GiB on a raw base, durable)";
    public const string Native = "native writer";
    public const string QemuImg = "qemu-img create";
    public const string SnapshotScenario = "create-snapshot by the engine (1 GiB raw base)";
    public const string EngineNative = "NativeOverlayHeaders=true";
    public const string EngineQemuImg = "NativeOverlayHeaders=false";
    private const string Export = "bench:/overlay";
    private const UnixFileMode Mode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.GroupWrite;

    private readonly QemuImgRunner _qemuImg = new(Options.Create(new QemuImgOptions()), NullLogger<QemuImgRunner>.Instance);

    public async Task RunAsync()
    {
        var count = settings.Overlays;
        output.WriteLine($"running {Scenario} x{count} each");
        var volume = fx.CreateVolume(Fixtures.GiB);
        var backing = volume.BaseName;
        // Untimed: JIT and the qemu-img binary warm.
        await MakeAsync(native: true, backing, "warm-native");
        await MakeAsync(native: false, backing, "warm-qemu-img");
        for (var i = 0; i < count; i++)
        {
            foreach (var native in i % 2 == 0 ? new[] { true, false } : [false, true])
            {
                var name = $"{backing}.{Guid.NewGuid():D}";
                await results.TimeAsync(Scenario, native ? Native : QemuImg, QemuImg, () => MakeAsync(native, backing, name));
                File.Delete(fx.PathOf(name));
            }
        }
        results.Get(Scenario, Native).Note = "no process; 3 writes + ftruncate, fsync, rename, dir fsync";
        results.Get(Scenario, QemuImg).Note = "1 process; then the same fsync, rename, dir fsync";
        fx.DeleteVolume(volume.Id);

        var snapshots = Math.Max(2, count / 4);
        output.WriteLine($"running {SnapshotScenario} x{snapshots} each");
        var engines = new Dictionary<bool, VolumeEngine> { [true] = Engine(true), [false] = Engine(false) };
        for (var i = 0; i < snapshots; i++)
        {
            foreach (var native in i % 2 == 0 ? new[] { true, false } : [false, true])
            {
                var v = fx.CreateVolume(Fixtures.GiB);
                Machine.Sync();
                await results.TimeAsync(SnapshotScenario, native ? EngineNative : EngineQemuImg, EngineQemuImg, async () =>
                {
                    var result = await engines[native].CreateSnapshotAsync(new CreateSnapshotRequest(Export, v.Id, Guid.NewGuid()) { BaseFormat = ImageFormat.Raw });
                    if (result.Outcome != OperationOutcome.Completed)
                    {
                        throw new HarnessException($"create-snapshot: {result.Outcome}: {result.Message}");
                    }
                });
                fx.DeleteVolume(v.Id);
            }
        }
    }

    /// <summary>One overlay, made durable exactly as the engine makes a snapshot's overlay durable.</summary>
    private async Task MakeAsync(bool native, string backing, string name)
    {
        var temp = fx.PathOf(DurableFile.TempName(name));
        if (native)
        {
            new OverlayImage(Fixtures.GiB, backing, ImageFormat.Raw).Create(temp, Mode);
        }
        else
        {
            await _qemuImg.CreateAsync(new CreateImageRequest(temp, ImageFormat.Qcow2, Fixtures.GiB, backing, ImageFormat.Raw));
            File.SetUnixFileMode(temp, Mode);
        }
        DurableFile.FsyncFile(temp);
        File.Move(temp, fx.PathOf(name), overwrite: false);
        DurableFile.FsyncDirectory(fx.Dir);
    }

    private VolumeEngine Engine(bool native) => new(
        new ShareMap([new Share(Export, fx.Dir, null)]), _qemuImg,
        Options.Create(new VolumeEngineOptions { NativeOverlayHeaders = native }), NullLogger<VolumeEngine>.Instance);

    public static void PrintTargets(Results results, TextWriter output)
    {
        if (results.Find(Scenario, Native) is null)
        {
            return;
        }
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"overlay file: native / qemu-img create {results.Ratio(Scenario, Native, QemuImg):0.000}x of the median " +
            $"({Results.Ms(results.Find(Scenario, Native)!.Median)} vs {Results.Ms(results.Find(Scenario, QemuImg)!.Median)}; " +
            $"of min {results.RatioOfMin(Scenario, Native, QemuImg):0.000}x); no target: issue #9's 0.5x is for the whole pipeline"));
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"create-snapshot by the engine: native / qemu-img {results.Ratio(SnapshotScenario, EngineNative, EngineQemuImg):0.00}x of the median " +
            $"({Results.Ms(results.Find(SnapshotScenario, EngineNative)!.Median)} vs {Results.Ms(results.Find(SnapshotScenario, EngineQemuImg)!.Median)})"));
    }
}
