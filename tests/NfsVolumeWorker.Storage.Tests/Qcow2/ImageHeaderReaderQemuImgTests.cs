using NfsVolumeWorker.Storage.Qcow2;
using NfsVolumeWorker.Storage.Tests.Support;
using static NfsVolumeWorker.Storage.Tests.Qcow2.Qcow2TestImages;

namespace NfsVolumeWorker.Storage.Tests.Qcow2;

/// <summary>Images made by the real qemu-img, read in process and compared field by field with
/// <c>qemu-img info</c>.</summary>
public sealed class ImageHeaderReaderQemuImgTests : IDisposable
{
    private readonly TempDirectory _dir = new("qcow2-header-");

    public void Dispose() => _dir.Dispose();

    [Theory]
    [InlineData("512", "1M")]
    [InlineData("4096", "1000000")] // not a multiple of the cluster size
    [InlineData("65536", "1G")]
    [InlineData("2M", "10T")]
    public void A_qcow2_v3_image_without_backing_matches_qemu_img_info(string clusterSize, string size)
    {
        var path = _dir.File("volume");
        RunQemuImg("create", "-f", "qcow2", "-o", $"cluster_size={clusterSize}", path, size);

        var header = ImageHeaderReader.Read(path);

        AssertMatchesQemuImgInfo(path, header);
        Assert.Equal(3u, header.Qcow2!.Version);
        Assert.Null(header.Qcow2.BackingFile);
        Assert.Null(header.Qcow2.BackingFormat);
        Assert.False(header.Qcow2.IsDirty);
        Assert.False(header.Qcow2.IsCorrupt);
        Assert.False(header.Qcow2.IsEncrypted);
        Assert.False(header.Qcow2.HasExternalDataFile);
    }

    [Fact]
    public void A_qcow2_overlay_reports_its_relative_backing_file_and_format()
    {
        RunQemuImg("create", "-f", "raw", _dir.File("volume-base"), "1M");
        RunQemuImg("create", "-f", "qcow2", "-b", "volume-base", "-F", "raw", _dir.File("volume-base.snap1"));
        RunQemuImg("create", "-f", "qcow2", "-b", "volume-base.snap1", "-F", "qcow2", _dir.File("volume-base.snap2"));

        var first = ImageHeaderReader.Read(_dir.File("volume-base.snap1"));
        var second = ImageHeaderReader.Read(_dir.File("volume-base.snap2"));

        AssertMatchesQemuImgInfo(_dir.File("volume-base.snap1"), first);
        AssertMatchesQemuImgInfo(_dir.File("volume-base.snap2"), second);
        Assert.Equal(("volume-base", "raw"), (first.Qcow2!.BackingFile, first.Qcow2.BackingFormat));
        Assert.Equal(("volume-base.snap1", "qcow2"), (second.Qcow2!.BackingFile, second.Qcow2.BackingFormat));
        Assert.Equal(1u << 20, second.Qcow2.VirtualSize);
    }

    [Theory]
    [InlineData("512")]
    [InlineData("65536")]
    public void A_compat_0_10_overlay_is_version_2_and_matches_qemu_img_info(string clusterSize)
    {
        RunQemuImg("create", "-f", "qcow2", "-o", "compat=0.10", _dir.File("base"), "3M");
        RunQemuImg("create", "-f", "qcow2", "-o", $"compat=0.10,cluster_size={clusterSize}", "-b", "base", "-F", "qcow2", _dir.File("overlay"));

        var header = ImageHeaderReader.Read(_dir.File("overlay"));

        AssertMatchesQemuImgInfo(_dir.File("overlay"), header);
        Assert.Equal(2u, header.Qcow2!.Version);
        Assert.Equal(0ul, header.Qcow2.IncompatibleFeatures);
        Assert.Equal(("base", "qcow2"), (header.Qcow2.BackingFile, header.Qcow2.BackingFormat));
    }

    [Fact]
    public void A_long_non_ascii_backing_file_name_is_read_exactly_as_qemu_stored_it()
    {
        var name = string.Concat(Enumerable.Repeat("dir/../", 140)) + "bäse-€.raw";
        var path = _dir.File("overlay");
        RunQemuImg("create", "-f", "qcow2", "-u", "-b", name, "-F", "raw", path, "1M");

        var header = ImageHeaderReader.Read(path);

        AssertMatchesQemuImgInfo(path, header);
        Assert.Equal(name, header.Qcow2!.BackingFile);
        Assert.True(System.Text.Encoding.UTF8.GetByteCount(name) > 990);
    }

    [Fact]
    public void Dirty_and_corrupt_bits_patched_into_a_real_image_are_reported_like_qemu_img_info_does()
    {
        var path = _dir.File("volume");
        RunQemuImg("create", "-f", "qcow2", path, "1M");

        PatchUInt64(path, 72, 1);
        var dirty = ImageHeaderReader.Read(path);
        AssertMatchesQemuImgInfo(path, dirty);
        Assert.True(dirty.Qcow2!.IsDirty);
        Assert.False(dirty.Qcow2.IsCorrupt);

        PatchUInt64(path, 72, 2);
        var corrupt = ImageHeaderReader.Read(path);
        AssertMatchesQemuImgInfo(path, corrupt);
        Assert.True(corrupt.Qcow2!.IsCorrupt);
        Assert.False(corrupt.Qcow2.IsDirty);
    }

    [Fact]
    public void A_qcow2_image_with_an_external_data_file_says_so()
    {
        var path = _dir.File("volume");
        RunQemuImg("create", "-f", "qcow2", "-o", "data_file=volume.data", path, "1M");

        var header = ImageHeaderReader.Read(path);

        AssertMatchesQemuImgInfo(path, header);
        Assert.True(header.Qcow2!.HasExternalDataFile);
        Assert.Equal(4ul, header.Qcow2.IncompatibleFeatures & 4);
    }

    [Theory]
    [InlineData("aes", 1u)]
    [InlineData("luks", 2u)]
    public void A_qcow2_image_with_built_in_encryption_is_encrypted(string format, uint cryptMethod)
    {
        var path = _dir.File("volume");
        // A short iteration time keeps LUKS key derivation from spending seconds of CPU.
        CreateWithLuksHeader("create", "-f", "qcow2", "--object", "secret,id=s0,data=x",
            "-o", $"encrypt.format={format},encrypt.key-secret=s0" + (format == "luks" ? ",encrypt.iter-time=10" : ""), path, "1M");

        var header = ImageHeaderReader.Read(path);

        AssertMatchesQemuImgInfo(path, header);
        Assert.True(header.Qcow2!.IsEncrypted);
        Assert.Equal(cryptMethod, header.Qcow2.CryptMethod);
    }

    [Fact]
    public void A_luks_image_is_luks()
    {
        var path = _dir.File("volume");
        CreateWithLuksHeader("create", "-f", "luks", "--object", "secret,id=s0,data=x", "-o", "key-secret=s0,iter-time=10", path, "1M");

        var header = ImageHeaderReader.Read(path);

        Assert.Equal(ImageKind.Luks, header.Kind);
        Assert.Null(header.Qcow2);
        Assert.Equal(new FileInfo(path).Length, header.FileLength);
    }

    [Fact]
    public void A_raw_image_made_by_qemu_img_is_raw_with_its_apparent_length()
    {
        var path = _dir.File("volume");
        RunQemuImg("create", "-f", "raw", path, "5M");

        var header = ImageHeaderReader.Read(path);

        Assert.Equal(new ImageHeader(ImageKind.Raw, 5L << 20, null), header);
    }

    [Fact]
    public void Parsing_the_first_64_KiB_of_a_real_image_gives_the_same_header_as_reading_the_file()
    {
        RunQemuImg("create", "-f", "raw", _dir.File("base"), "1M");
        var path = _dir.File("overlay");
        RunQemuImg("create", "-f", "qcow2", "-b", "base", "-F", "raw", path);

        var parsed = ImageHeaderReader.ParseQcow2(ReadPrefix(path, ImageHeaderReader.InitialReadLength));

        Assert.Equal(ImageHeaderReader.Read(path).Qcow2, parsed);
    }
}
