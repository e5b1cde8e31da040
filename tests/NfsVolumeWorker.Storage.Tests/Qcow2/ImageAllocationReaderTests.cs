using System.Text.Json;
using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Qcow2;
using NfsVolumeWorker.Storage.Tests.Support;
using static NfsVolumeWorker.Storage.Tests.Qcow2.Qcow2TestImages;

namespace NfsVolumeWorker.Storage.Tests.Qcow2;

/// <summary>The empty-image detector against overlays made and written by the real qemu-img and qemu-io; qemu-img map
/// is the oracle: an image holds no guest data exactly when no extent of it is at depth 0.</summary>
public sealed class ImageAllocationReaderTests : IDisposable
{
    private readonly TempDirectory _dir = new("qcow2-allocation-");

    public void Dispose() => _dir.Dispose();

    private static string QemuIo => RequiredTool.Find("qemu-io", "qemu-utils");

    /// <summary>A raw base with data everywhere and an empty qcow2 overlay on it (64 KiB clusters, or as given).</summary>
    private string Overlay(string size = "4M", params string[] options)
    {
        var basePath = _dir.File("volume-base");
        RunQemuImg("create", "-f", "raw", basePath, size);
        RequiredTool.RunChecked(QemuIo, "-f", "raw", "-c", "write -P 0x5a 0 4M", basePath);
        var overlay = _dir.File("volume-base.snap");
        RunQemuImg(["create", "-f", "qcow2", .. options, "-b", "volume-base", "-F", "raw", overlay]);
        return overlay;
    }

    private static void Io(string image, string command) => RequiredTool.RunChecked(QemuIo, "-f", "qcow2", "-c", command, image);

    /// <summary>True when qemu-img map reports no extent of the top image itself (depth 0).</summary>
    private static bool QemuMapsNothingAtTop(string image)
    {
        using var map = JsonDocument.Parse(RunQemuImg("map", "--output=json", "-f", "qcow2", image));
        return map.RootElement.EnumerateArray().All(e => e.GetProperty("depth").GetInt32() > 0);
    }

    [Theory]
    [InlineData("4M")]
    [InlineData("3G")] // more than one L1 entry
    public void An_empty_overlay_made_by_qemu_img_holds_no_data(string size)
    {
        var overlay = Overlay(size);

        Assert.True(ImageAllocationReader.HoldsNoGuestData(overlay, out var reason), reason);
        Assert.True(QemuMapsNothingAtTop(overlay));
    }

    [Fact]
    public void An_empty_overlay_written_natively_holds_no_data()
    {
        Overlay();
        var native = _dir.File("volume-base.native");
        new OverlayImage(4 * 1024 * 1024, "volume-base", ImageFormat.Raw).Create(native, UnixFileMode.UserRead | UnixFileMode.UserWrite);

        Assert.True(ImageAllocationReader.HoldsNoGuestData(native, out var reason), reason);
    }

    [Theory]
    [InlineData("write 0 64k")]
    [InlineData("write 3M 512")] // one sector, in a later cluster
    [InlineData("write -c 0 64k")] // compressed
    public void An_overlay_after_a_write_holds_data(string write)
    {
        var overlay = Overlay();
        Io(overlay, write);

        Assert.False(ImageAllocationReader.HoldsNoGuestData(overlay, out var reason));
        Assert.Contains("allocated", reason, StringComparison.Ordinal);
        Assert.False(QemuMapsNothingAtTop(overlay));
    }

    [Fact]
    public void A_zero_flagged_cluster_is_data_because_it_hides_the_backing_file()
    {
        var overlay = Overlay();
        Io(overlay, "write -z 0 64k");

        Assert.False(ImageAllocationReader.HoldsNoGuestData(overlay, out var reason));
        Assert.Contains("zero flag", reason, StringComparison.Ordinal);
        Assert.False(QemuMapsNothingAtTop(overlay));
        // And it matters: the overlay no longer reads as its backing file.
        var (code, _, _) = RequiredTool.Run(RequiredTool.QemuImg, "compare", "-f", "qcow2", "-F", "raw", overlay, _dir.File("volume-base"));
        Assert.Equal(1, code);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_discard_is_judged_as_qemu_img_map_sees_it(bool writtenFirst)
    {
        var overlay = Overlay();
        if (writtenFirst)
        {
            Io(overlay, "write 0 128k");
        }
        Io(overlay, "discard 0 128k");

        var empty = ImageAllocationReader.HoldsNoGuestData(overlay, out var reason);

        // With a backing file qemu keeps a discarded cluster reading as zeroes (zero flag), so it is not empty; what
        // must hold in every case is agreement with qemu's own map.
        Assert.Equal(QemuMapsNothingAtTop(overlay), empty);
        if (writtenFirst)
        {
            Assert.False(empty, reason);
        }
    }

    [Fact]
    public void L2_tables_with_only_unallocated_entries_are_empty()
    {
        // A written cluster then made unallocated by hand (what a full discard leaves): the L1 entry and the L2 table
        // stay, every L2 entry is zero.
        var overlay = Overlay();
        Io(overlay, "write 0 64k");
        var header = ImageHeaderReader.Read(overlay).Qcow2!;
        var l1Entry = System.Buffers.Binary.BinaryPrimitives.ReadUInt64BigEndian(ReadAt(overlay, (long)header.L1TableOffset, 8));
        var l2Offset = (long)(l1Entry & 0x00FF_FFFF_FFFF_FE00UL);
        PatchUInt64(overlay, l2Offset, 0);

        Assert.True(ImageAllocationReader.HoldsNoGuestData(overlay, out var reason), reason);
        Assert.Contains("L2 table", reason, StringComparison.Ordinal);
    }

    [Fact]
    public void L2_tables_beyond_the_read_limit_are_not_read_and_the_image_is_not_judged_empty()
    {
        // 2 MiB clusters: one L2 table is already more than the reader reads (its entries zeroed, as in the test above).
        var overlay = Overlay("4M", "-o", "cluster_size=2M");
        Io(overlay, "write 0 64k");
        var header = ImageHeaderReader.Read(overlay).Qcow2!;
        var l1Entry = System.Buffers.Binary.BinaryPrimitives.ReadUInt64BigEndian(ReadAt(overlay, (long)header.L1TableOffset, 8));
        PatchUInt64(overlay, (long)(l1Entry & 0x00FF_FFFF_FFFF_FE00UL), 0);

        Assert.False(ImageAllocationReader.HoldsNoGuestData(overlay, out var reason));
        Assert.Contains("not read", reason, StringComparison.Ordinal);
    }

    [Fact]
    public void An_overlay_with_an_internal_snapshot_is_not_judged_empty()
    {
        var overlay = Overlay();
        RunQemuImg("snapshot", "-c", "internal", overlay);

        Assert.False(ImageAllocationReader.HoldsNoGuestData(overlay, out var reason));
        Assert.Contains("internal snapshot", reason, StringComparison.Ordinal);
    }

    [Fact]
    public void An_overlay_with_a_persistent_bitmap_is_not_judged_empty()
    {
        var overlay = Overlay();
        RunQemuImg("bitmap", "--add", overlay, "b0");

        Assert.False(ImageAllocationReader.HoldsNoGuestData(overlay, out var reason));
        Assert.Contains("bitmaps", reason, StringComparison.Ordinal);
    }

    [Fact]
    public void An_overlay_with_an_external_data_file_is_not_judged_empty()
    {
        var overlay = Overlay("4M", "-o", "data_file=" + _dir.File("data"));

        Assert.False(ImageAllocationReader.HoldsNoGuestData(overlay, out var reason));
        Assert.Contains("external data file", reason, StringComparison.Ordinal);
    }

    [Fact]
    public void An_encrypted_image_is_not_judged_empty()
    {
        // crypt_method 1 (legacy AES) set by hand: qemu-img's LUKS key setup measures CPU time, which this machine refuses.
        var path = Overlay();
        PatchUInt32(path, 32, 1);

        Assert.False(ImageAllocationReader.HoldsNoGuestData(path, out var reason));
        Assert.Contains("encrypted", reason, StringComparison.Ordinal);
    }

    [Fact]
    public void A_dirty_image_is_not_judged_empty()
    {
        var overlay = Overlay();
        PatchUInt64(overlay, 72, 1); // incompatible features: dirty

        Assert.False(ImageAllocationReader.HoldsNoGuestData(overlay, out var reason));
        Assert.Contains("incompatible", reason, StringComparison.Ordinal);
    }

    [Fact]
    public void An_L1_table_outside_the_file_is_not_judged_empty()
    {
        var overlay = Overlay();
        PatchUInt64(overlay, 40, 1UL << 40);

        Assert.False(ImageAllocationReader.HoldsNoGuestData(overlay, out var reason));
        Assert.Contains("L1 table", reason, StringComparison.Ordinal);
    }

    [Fact]
    public void A_raw_file_is_not_judged_empty_and_a_missing_one_throws()
    {
        Overlay();

        Assert.False(ImageAllocationReader.HoldsNoGuestData(_dir.File("volume-base"), out var reason));
        Assert.Contains("raw", reason, StringComparison.Ordinal);
        Assert.Throws<StorageException>(() => ImageAllocationReader.HoldsNoGuestData(_dir.File("missing"), out _));
    }

    [Theory]
    [InlineData("empty")]
    [InlineData("data")]
    [InlineData("zero-flag")]
    [InlineData("internal-snapshot")]
    [InlineData("raw")]
    public void Judged_from_a_header_read_before_the_answer_is_the_one_from_the_file(string kind)
    {
        // What the engine does: the chain read parses the header, the merge planner passes it on and reads the tables.
        var path = Overlay();
        switch (kind)
        {
            case "data":
                Io(path, "write -P 0x33 1M 64k");
                break;
            case "zero-flag":
                Io(path, "write -z 0 64k");
                break;
            case "internal-snapshot":
                RunQemuImg("snapshot", "-c", "internal", path);
                break;
            case "raw":
                path = _dir.File("volume-base");
                break;
        }
        var header = ImageHeaderReader.Read(path);

        var fromHeader = ImageAllocationReader.HoldsNoGuestData(path, header, out var reason);

        Assert.Equal(ImageAllocationReader.HoldsNoGuestData(path, out var fromFile), fromHeader);
        Assert.Equal(fromFile, reason);
        Assert.Equal(kind == "empty", fromHeader);
    }

    [Fact]
    public void Judged_from_a_header_read_before_a_file_gone_since_throws_as_from_the_file()
    {
        var path = Overlay();
        var header = ImageHeaderReader.Read(path);
        File.Delete(path);

        Assert.Equal(StorageErrorCode.ChainBroken, Assert.Throws<StorageException>(() => ImageAllocationReader.HoldsNoGuestData(path, header, out _)).Code);
        Assert.Equal(StorageErrorCode.ChainBroken, Assert.Throws<StorageException>(() => ImageAllocationReader.HoldsNoGuestData(path, out _)).Code);
    }

    private static byte[] ReadAt(string path, long offset, int length)
    {
        using var f = File.OpenRead(path);
        f.Position = offset;
        var bytes = new byte[length];
        f.ReadExactly(bytes);
        return bytes;
    }

    [Fact]
    public void Damaged_tables_never_make_an_image_with_data_pass_for_empty()
    {
        // Seeded damage to the header fields and tables the reader uses, on an overlay holding data: whatever it
        // answers, "empty" must be true of the image as qemu reads it (or qemu must refuse the image).
        var pristine = Overlay();
        Io(pristine, "write -P 0x33 1M 64k");
        var header = ImageHeaderReader.Read(pristine).Qcow2!;
        var l1 = (long)header.L1TableOffset;
        var l2 = (long)(System.Buffers.Binary.BinaryPrimitives.ReadUInt64BigEndian(ReadAt(pristine, l1, 8)) & 0x00FF_FFFF_FFFF_FE00UL);
        long[] targets = [36, 40, 44, 60, 72, 88, l1, l1 + 7, l2 + (16 * 8), l2 + (16 * 8) + 7];
        var random = new Random(20261205);
        var judgedEmpty = 0;
        for (var round = 0; round < 40; round++)
        {
            var damaged = _dir.File($"damaged-{round}");
            File.Copy(pristine, damaged);
            var at = targets[random.Next(targets.Length)];
            Patch(damaged, at, [(byte)random.Next(256)]);
            bool empty;
            try
            {
                empty = ImageAllocationReader.HoldsNoGuestData(damaged, out _);
            }
            catch (StorageException)
            {
                continue; // refused as malformed: the delete then fails before changing anything
            }
            if (empty)
            {
                judgedEmpty++;
                var (code, stdout, _) = RequiredTool.Run(RequiredTool.QemuImg, "map", "--output=json", "-f", "qcow2", damaged);
                Assert.True(code != 0 || JsonDocument.Parse(stdout).RootElement.EnumerateArray().All(e => e.GetProperty("depth").GetInt32() > 0),
                    $"byte {at} damaged: judged empty but qemu-img map shows data: {stdout}");
            }
        }
        Assert.True(judgedEmpty < 40, "every damaged image was judged empty");
    }
}
