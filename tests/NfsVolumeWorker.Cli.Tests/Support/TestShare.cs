namespace NfsVolumeWorker.Cli.Tests.Support;

/// <summary>A local directory used as a share, plus the qemu-img a test needs.</summary>
public sealed class TestShare : IDisposable
{
    private readonly TempDirectory _dir = new("nfsvol-cli-");

    public TestShare()
    {
        QemuImg = RequiredTool.QemuImg;
        Path = _dir.Path;
    }

    public string Path { get; }

    public string QemuImg { get; }

    public string File(string name) => System.IO.Path.Combine(Path, name);

    /// <summary>nfsvol arguments with <c>--share</c> of this directory first.</summary>
    public string[] Args(params string[] args) => ["--share", Path, .. args];

    public static string Id() => Guid.NewGuid().ToString("D");

    public static string Base(string volume) => $"volume-{volume}";

    public static string Overlay(string volume, string snapshot) => $"volume-{volume}.{snapshot}";

    public static string Info(string volume) => $"volume-{volume}.info";

    /// <summary>qemu-img, failing the test with its stderr when it fails.</summary>
    public string Qemu(params string[] args) => RequiredTool.RunChecked(QemuImg, args);

    /// <summary>Creates a volume and two snapshots through nfsvol (in-process) and returns their ids.</summary>
    public async Task<(string Volume, string First, string Second)> VolumeWithTwoSnapshotsAsync(string format = "raw")
    {
        var (volume, first, second) = (Id(), Id(), Id());
        await Ok(Args("volume", "create", volume, "--size", "16M", "--format", format));
        await Ok(Args("snapshot", "create", volume, first));
        await Ok(Args("snapshot", "create", volume, second));
        return (volume, first, second);
    }

    public static async Task<CliRun> Ok(string[] args)
    {
        var run = await Nfsvol.RunAsync(args);
        Assert.True(run.ExitCode == 0, $"nfsvol {string.Join(' ', args)}: {run}");
        return run;
    }

    public void Dispose() => _dir.Dispose();
}
