using CsCheck;
using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Storage.Qcow2;
using NfsVolumeWorker.Storage.Tests.Support;
using static NfsVolumeWorker.Storage.Tests.Qcow2.Qcow2TestImages;

namespace NfsVolumeWorker.Storage.Tests.Qcow2;

/// <summary>Short, hand-written, patched and misplaced files: what a tenant or a crash can leave on a share.</summary>
public sealed class ImageHeaderReaderHostileFileTests : IDisposable
{
    private readonly TempDirectory _dir = new("qcow2-hostile-");

    public void Dispose() => _dir.Dispose();

    private string Write(byte[] bytes, string name = "volume")
    {
        var path = _dir.File(name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private static StorageException ReadFails(string path) => Assert.Throws<StorageException>(() => ImageHeaderReader.Read(path));

    private string QemuImage(params string[] extraCreateArgs)
    {
        var path = _dir.File("volume");
        RunQemuImg(["create", "-f", "qcow2", .. extraCreateArgs, path, "1M"]);
        return path;
    }

    [Theory]
    [InlineData(new byte[0])]
    [InlineData(new byte[] { (byte)'Q', (byte)'F', (byte)'I' })]
    [InlineData(new byte[] { (byte)'L', (byte)'U', (byte)'K', (byte)'S', 0xBA })]
    [InlineData(new byte[] { 0xEB, 0x63, 0x90, 0x10, 0x8E, 0xD0, 0xBC, 0x00 })]
    public void Empty_short_and_unrecognised_files_are_raw(byte[] content)
    {
        var header = ImageHeaderReader.Read(Write(content));

        Assert.Equal(new ImageHeader(ImageKind.Raw, content.Length, null), header);
    }

    [Fact]
    public void A_raw_file_starting_with_a_hand_written_header_naming_etc_shadow_reports_that_backing_file()
    {
        var path = Write(HandWritten(backingFile: Utf8("/etc/shadow"), fileLength: 1 << 20));

        var header = ImageHeaderReader.Read(path);

        Assert.Equal(ImageKind.Qcow2, header.Kind);
        Assert.Equal("/etc/shadow", header.Qcow2!.BackingFile);
        Assert.Null(header.Qcow2.BackingFormat);
        Assert.Equal(1L << 20, header.FileLength);
    }

    [Fact]
    public void A_backing_file_name_and_extensions_beyond_the_first_64_KiB_are_still_read()
    {
        // A 2 MiB cluster leaves room for qemu to accept both far from the start.
        var filler = new byte[70_000];
        var bytes = HandWritten(clusterBits: 21, backingFile: Utf8("volume-base"), backingOffset: 150_000,
            extensions: [(0x12345678, filler), (0xE2792ACA, Utf8("raw"))], fileLength: 200_000);

        var header = ImageHeaderReader.Read(Write(bytes));

        Assert.Equal(("volume-base", "raw"), (header.Qcow2!.BackingFile, header.Qcow2.BackingFormat));
        Assert.Throws<InvalidDataException>(() => ImageHeaderReader.ParseQcow2(bytes.AsSpan(0, ImageHeaderReader.InitialReadLength)));
    }

    [Theory]
    [InlineData(1u)]
    [InlineData(4u)]
    [InlineData(0xFFFFFFFFu)]
    public void A_qcow_version_other_than_2_or_3_is_an_unsupported_format(uint version)
    {
        var path = QemuImage();
        PatchUInt32(path, 4, version);

        Assert.Equal(StorageErrorCode.UnsupportedFormat, ReadFails(path).Code);
        Assert.Throws<InvalidDataException>(() => ImageHeaderReader.ParseQcow2(ReadPrefix(path, 4096)));
    }

    [Theory]
    [InlineData(4)]
    [InlineData(50)]
    [InlineData(100)]
    public void A_truncated_header_behind_a_qcow2_magic_is_corrupt(int length)
    {
        var path = QemuImage();
        File.WriteAllBytes(path, ReadPrefix(path, length));

        var error = ReadFails(path);

        Assert.Equal(StorageErrorCode.ImageCorrupt, error.Code);
        Assert.Contains(path, error.Message, StringComparison.Ordinal);
        Assert.IsType<InvalidDataException>(error.InnerException);
    }

    [Theory]
    [InlineData(0u)]
    [InlineData(8u)]
    [InlineData(22u)]
    [InlineData(63u)]
    [InlineData(0xFFFFFFFFu)]
    public void Cluster_bits_outside_9_to_21_are_corrupt(uint clusterBits)
    {
        var path = QemuImage();
        PatchUInt32(path, 20, clusterBits);

        Assert.Equal(StorageErrorCode.ImageCorrupt, ReadFails(path).Code);
    }

    [Fact]
    public void A_v3_header_length_under_104_is_corrupt()
    {
        var path = QemuImage();
        PatchUInt32(path, 100, 72);

        Assert.Equal(StorageErrorCode.ImageCorrupt, ReadFails(path).Code);
    }

    [Fact]
    public void A_backing_file_name_beyond_the_end_of_the_file_is_corrupt()
    {
        var path = Write(HandWritten(backingFile: Utf8("volume-base"), backingOffset: 8000, fileLength: 4096)[..4096]);

        var error = ReadFails(path);

        Assert.Equal(StorageErrorCode.ImageCorrupt, error.Code);
        Assert.Contains("4096", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(0x1_0000ul)] // just past the first 64 KiB cluster
    [InlineData(ulong.MaxValue - 4)] // wraps around when the size is added
    public void A_backing_file_name_outside_the_first_cluster_is_corrupt(ulong backingOffset)
    {
        var path = QemuImage();
        PatchUInt64(path, 8, backingOffset);
        PatchUInt32(path, 16, 11);

        Assert.Equal(StorageErrorCode.ImageCorrupt, ReadFails(path).Code);
    }

    [Fact]
    public void A_backing_file_name_longer_than_1023_bytes_is_corrupt()
    {
        var path = Write(HandWritten(backingFile: Utf8(new string('a', 1024))));

        Assert.Equal(StorageErrorCode.ImageCorrupt, ReadFails(path).Code);
    }

    [Theory]
    [InlineData(new byte[] { (byte)'b', 0, (byte)'/', (byte)'x' })]
    [InlineData(new byte[] { (byte)'b', 0xC3, (byte)'x' })]
    public void A_backing_file_name_with_a_nul_byte_or_invalid_utf8_is_corrupt(byte[] name)
    {
        var path = Write(HandWritten(backingFile: name));

        Assert.Equal(StorageErrorCode.ImageCorrupt, ReadFails(path).Code);
    }

    [Theory]
    [InlineData(0x0001_0000u)]
    [InlineData(0xFFFF_FFF8u)]
    public void A_header_extension_overflowing_its_area_is_corrupt(uint length)
    {
        // qemu 7.2 writes the backing format extension right after the 112-byte header.
        RunQemuImg("create", "-f", "raw", _dir.File("base"), "1M");
        var path = QemuImage("-b", "base", "-F", "raw");
        PatchUInt32(path, 112 + 4, length);

        var error = ReadFails(path);

        Assert.Equal(StorageErrorCode.ImageCorrupt, error.Code);
        Assert.Contains("past the end of the extension area", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Header_extensions_that_run_past_the_end_of_the_file_without_an_end_marker_are_corrupt()
    {
        var bytes = HandWritten(extensions: [(0x12345678, new byte[16])], fileLength: 0);

        var path = Write(bytes.AsSpan(0, bytes.Length - 8).ToArray()); // drop the end marker

        Assert.Equal(StorageErrorCode.ImageCorrupt, ReadFails(path).Code);
    }

    [Fact]
    public void A_backing_format_longer_than_qemu_accepts_is_corrupt()
    {
        var path = Write(HandWritten(extensions: [(0xE2792ACA, Utf8("a-format-name-of-16"))]));

        Assert.Equal(StorageErrorCode.ImageCorrupt, ReadFails(path).Code);
    }

    [Fact]
    public void The_external_data_file_bit_counts_even_without_the_extension()
    {
        var header = ImageHeaderReader.ParseQcow2(HandWritten(incompatibleFeatures: 4));

        Assert.True(header.HasExternalDataFile);
        Assert.False(header.IsDirty);
    }

    [Fact]
    public void An_external_data_file_extension_counts_even_without_the_incompatible_bit()
    {
        var header = ImageHeaderReader.ParseQcow2(HandWritten(extensions: [(0x44415441, Utf8("/dev/sda"))]));

        Assert.True(header.HasExternalDataFile);
        Assert.Equal(0ul, header.IncompatibleFeatures);
    }

    [Fact]
    public void A_symbolic_link_to_an_image_is_an_unsafe_path()
    {
        var target = QemuImage();
        var link = _dir.File("link");
        File.CreateSymbolicLink(link, target);

        Assert.Equal(StorageErrorCode.UnsafePath, ReadFails(link).Code);
    }

    [Fact]
    public void A_directory_or_a_fifo_in_place_of_an_image_is_an_unsafe_path_and_does_not_block()
    {
        Directory.CreateDirectory(_dir.File("dir"));
        RequiredTool.RunChecked(RequiredTool.Find("mkfifo", "coreutils"), _dir.File("fifo"));

        Assert.Equal(StorageErrorCode.UnsafePath, ReadFails(_dir.File("dir")).Code);
        Assert.Equal(StorageErrorCode.UnsafePath, ReadFails(_dir.File("fifo")).Code);
    }

    [Fact]
    public void A_missing_image_is_a_broken_chain()
    {
        var missing = _dir.File("volume-gone");

        var error = ReadFails(missing);

        Assert.Equal(StorageErrorCode.ChainBroken, error.Code);
        Assert.Contains(missing, error.Message, StringComparison.Ordinal);
        Assert.Equal(StorageErrorCode.ChainBroken, ReadFails(_dir.File("no-such-dir/volume")).Code);
    }

    [Fact]
    public void Parsing_bytes_without_the_qcow2_magic_is_invalid_data()
    {
        Assert.Throws<InvalidDataException>(() => ImageHeaderReader.ParseQcow2([]));
        Assert.Throws<InvalidDataException>(() => ImageHeaderReader.ParseQcow2("QFI"u8));
        Assert.Throws<InvalidDataException>(() => ImageHeaderReader.ParseQcow2(new byte[4096]));
    }

    [Fact]
    public void Randomly_damaged_headers_parse_or_fail_with_invalid_data_and_nothing_else()
    {
        RunQemuImg("create", "-f", "raw", _dir.File("base"), "1M");
        var pristine = ReadPrefix(QemuImage("-b", "base", "-F", "raw", "-o", "cluster_size=4096"), 4096);

        Gen.Select(Gen.Int[0, 255], Gen.Byte).Array[1, 6].Sample(damage =>
        {
            var bytes = (byte[])pristine.Clone();
            foreach (var (offset, value) in damage)
            {
                bytes[offset] = value;
            }
            try
            {
                var header = ImageHeaderReader.ParseQcow2(bytes);
                Assert.InRange(header.ClusterBits, 9, 21);
                Assert.True(header.BackingFile is null || header.BackingFile.Length <= 1023);
            }
            catch (InvalidDataException)
            {
                // Refusing nonsense is the other allowed outcome.
            }
        }, iter: 20_000);
    }
}
