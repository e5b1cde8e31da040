using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.QemuImg;
using NfsVolumeWorker.Storage.Shares;
using NfsVolumeWorker.Storage.Tests.Support;
using NfsVolumeWorker.Testing;

namespace NfsVolumeWorker.Storage.Tests.Engine;

public sealed class DirectIoFallbackSpecs : IDisposable
{
    private readonly TempDirectory _dir = new("nfsvol-directio-");

    public void Dispose() => _dir.Dispose();

    [Fact]
    public async Task A_clone_on_a_file_system_that_refuses_O_DIRECT_falls_back_to_the_page_cache_and_still_completes()
    {
        // A process-level stand-in for a file system without O_DIRECT: "-t none" fails the way qemu-img
        // reports EINVAL from open(O_DIRECT); every other call goes to the real qemu-img.
        var realQemuImg = RequiredTool.QemuImg;
        var fake = _dir.File("qemu-img-no-odirect");
        ShellScript.Write(fake, $"""
            for a in "$@"; do
              if [ "$prev" = "-t" ] && [ "$a" = "none" ]; then
                echo "qemu-img: Could not open 'x': Could not open 'x': Invalid argument" >&2
                echo called >> "{_dir.File("refused")}"
                exit 1
              fi
              prev="$a"
            done
            exec {realQemuImg} "$@"
            """);
        var share = new Share("/share", Directory.CreateDirectory(_dir.File("share")).FullName, null);
        var qemu = new QemuImgRunner(Options.Create(new QemuImgOptions { Executable = fake }), NullLogger<QemuImgRunner>.Instance);
        var engine = new VolumeEngine(new ShareMap([share]), qemu, Options.Create(new VolumeEngineOptions { CopyWithDirectIo = true, ServerSideCopy = false }), NullLogger<VolumeEngine>.Instance);
        var (source, clone) = (Guid.NewGuid(), Guid.NewGuid());
        await engine.CreateVolumeAsync(new CreateVolumeRequest(null, source, 8 << 20));
        RequiredTool.RunChecked(RequiredTool.Find("qemu-io", "qemu-utils"), "-f", "raw", "-c", "write -P 0x3c 0 1M", share.PathOf($"volume-{source}"));

        var result = await engine.CloneVolumeAsync(new CloneVolumeRequest(null, source, clone));

        Assert.Equal(OperationOutcome.Completed, result.Outcome);
        Assert.Contains("copied through the page cache", result.Message, StringComparison.Ordinal);
        Assert.True(File.Exists(_dir.File("refused")), "the fake never saw '-t none': the test proves nothing");
        Assert.Equal(0, RequiredTool.Run(realQemuImg, "compare", "-f", "raw", "-F", "raw", share.PathOf($"volume-{source}"), share.PathOf($"volume-{clone}")).ExitCode);
        Assert.DoesNotContain(Directory.EnumerateFiles(share.LocalPath), f => f.Contains(".tmp-", StringComparison.Ordinal));
    }
}
