using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.QemuImg;

namespace NfsVolumeWorker.Storage.Tests.QemuImg;

/// <summary>The pure parts of the runner: error classification, path guarding, display quoting, version parsing.</summary>
public sealed class QemuImgArgumentTests
{
    [Theory]
    [InlineData("qemu-img: error while writing at byte 0: No space left on device", StorageErrorCode.NoSpace)]
    [InlineData("qemu-img: Could not open 'a': Failed to get \"write\" lock\nIs another process using the image [a]?", StorageErrorCode.TransientIo)]
    [InlineData("qemu-img: Could not open 'a': Failed to get shared \"write\" lock", StorageErrorCode.TransientIo)]
    [InlineData("qemu-img: Could not open 'a': Stale file handle", StorageErrorCode.TransientIo)]
    [InlineData("qemu-img: error: Resource temporarily unavailable", StorageErrorCode.TransientIo)]
    [InlineData("qemu-img: Could not open 'a': No such file or directory", StorageErrorCode.QemuImgFailed)]
    [InlineData("", StorageErrorCode.QemuImgFailed)]
    public void Stderr_is_classified_into_a_storage_error_code(string stderr, StorageErrorCode expected)
    {
        Assert.Equal(expected, QemuImgRunner.Classify(stderr));
    }

    [Theory]
    [InlineData("/srv/share/volume-1", "/srv/share/volume-1")]
    [InlineData("/srv/a:b/volume-1", "/srv/a:b/volume-1")]
    [InlineData("volume-1", "volume-1")]
    [InlineData("dir/nbd:x", "dir/nbd:x")]
    [InlineData("nbd:localhost:10809", "./nbd:localhost:10809")]
    [InlineData("json:{}", "./json:{}")]
    [InlineData("-f", "./-f")]
    public void A_positional_path_can_be_neither_a_protocol_nor_an_option(string path, string expected)
    {
        Assert.Equal(expected, QemuImgCommand.ImagePath(path));
    }

    [Fact]
    public void The_displayed_command_line_quotes_what_a_shell_would_split()
    {
        var line = QemuImgCommand.Display("qemu-img", ["info", "-f", "qcow2", "/tmp/my volume", "it's", ""]);
        Assert.Equal("qemu-img info -f qcow2 '/tmp/my volume' 'it'\\''s' ''", line);
    }

    [Theory]
    [InlineData("qemu-img version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022 Fabrice Bellard\n", "7.2.22")]
    [InlineData("qemu-img version 8.2.2\n", "8.2.2")]
    public void The_version_is_the_first_token_after_qemu_img_version(string output, string expected)
    {
        Assert.Equal(expected, QemuImgRunner.ParseVersion(output));
    }

    [Fact]
    public void Output_that_is_not_a_version_banner_is_rejected()
    {
        Assert.Throws<FormatException>(() => QemuImgRunner.ParseVersion("hello\n"));
    }

    [Fact]
    public async Task A_backing_file_without_its_format_is_refused_before_running_anything()
    {
        var runner = QemuImgFixture.Runner(o => o.Executable = "/nonexistent/qemu-img");
        await Assert.ThrowsAsync<ArgumentException>(() =>
            runner.CreateAsync(new CreateImageRequest("/tmp/x.qcow2", ImageFormat.Qcow2, QemuImgFixture.MiB, BackingFile: "base.qcow2")));
    }

    [Fact]
    public async Task A_preallocation_value_cannot_smuggle_in_other_options()
    {
        var runner = QemuImgFixture.Runner(o => o.Executable = "/nonexistent/qemu-img");
        await Assert.ThrowsAsync<ArgumentException>(() =>
            runner.CreateAsync(new CreateImageRequest("/tmp/x.qcow2", ImageFormat.Qcow2, QemuImgFixture.MiB, Preallocation: "off,cluster_size=512")));
    }
}
