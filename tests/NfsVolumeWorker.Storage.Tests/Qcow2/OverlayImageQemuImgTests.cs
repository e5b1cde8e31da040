using System.Globalization;
using System.Text.Json;
using CsCheck;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Qcow2;
using static NfsVolumeWorker.Storage.Tests.Qcow2.Qcow2TestImages;

namespace NfsVolumeWorker.Storage.Tests.Qcow2;

/// <summary>The proof behind <see cref="OverlayImage"/>: for each input, the file it writes is compared byte for byte
/// with what the installed <c>qemu-img create -f qcow2 -b B -F F -u FILE SIZE</c> writes (the engine's own command
/// line), and passes <c>qemu-img check</c>.</summary>
public sealed class OverlayImageQemuImgTests : IDisposable
{
    private const long KiB = 1024, MiB = KiB * 1024, GiB = MiB * 1024, TiB = GiB * 1024, PiB = TiB * 1024;

    private static readonly Guid VolumeId = Guid.Parse("6b7c1e8a-0d3f-4f3e-9a51-2c6d9e1f0a42");
    private static readonly Guid SnapshotId = Guid.Parse("f0e1d2c3-b4a5-4968-8776-655443322110");

    private readonly TempDirectory _dir = new("qcow2-overlay-");

    public void Dispose() => _dir.Dispose();

    /// <summary>Sizes around every boundary of the layout: sector rounding, one L1 entry (512 MiB), the L1 table
    /// filling one cluster (4 TiB) and spanning several, up to qemu's largest (2 PiB, an L1 table of 32 MiB).</summary>
    public static readonly long[] Sizes =
    [
        1, 511, 512, 513, 1000, 4097, 64 * KiB - 1, 64 * KiB, 64 * KiB + 1, MiB, (512 * MiB) - 512, 512 * MiB, (512 * MiB) + 1,
        GiB, (10 * GiB) + 12345, TiB, 4 * TiB, (4 * TiB) + 1, 16 * TiB, (16 * TiB) + 512, (100 * TiB) + 7, PiB,
        (2 * PiB) - (512 * MiB), (2 * PiB) - 1, 2 * PiB,
    ];

    public static TheoryData<long, ImageFormat, string> CinderOverlays()
    {
        var data = new TheoryData<long, ImageFormat, string>();
        foreach (var size in Sizes)
        {
            foreach (var format in new[] { ImageFormat.Raw, ImageFormat.Qcow2 })
            {
                // A first snapshot's overlay names the base; later ones name the previous overlay.
                data.Add(size, format, VolumeFileNames.Base(VolumeId));
                data.Add(size, format, VolumeFileNames.Overlay(VolumeId, SnapshotId));
            }
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(CinderOverlays))]
    public void An_overlay_on_a_Cinder_volume_file_is_byte_for_byte_what_qemu_img_create_writes(long size, ImageFormat backingFormat, string backingFile) =>
        AssertSameAsQemuImg(new OverlayImage(size, backingFile, backingFormat));

    [Theory]
    [InlineData("a")]
    [InlineData("volume-6b7c1e8a-0d3f-4f3e-9a51-2c6d9e1f0a42.tmp-snap-0123456789abcdef")]
    [InlineData("Some_Other.name-9")]
    public void An_overlay_on_any_plain_backing_name_is_what_qemu_img_create_writes(string backingFile)
    {
        AssertSameAsQemuImg(new OverlayImage(GiB, backingFile, ImageFormat.Raw));
        AssertSameAsQemuImg(new OverlayImage(3 * TiB, backingFile, ImageFormat.Qcow2));
    }

    [Fact]
    public void An_overlay_on_the_longest_backing_name_covered_is_what_qemu_img_create_writes() =>
        AssertSameAsQemuImg(new OverlayImage(GiB, new string('n', OverlayImage.MaxBackingFileLength), ImageFormat.Qcow2));

    [Fact]
    public void Overlays_of_random_sizes_up_to_the_largest_are_what_qemu_img_create_writes()
    {
        // Log-uniform, so small and large sizes are drawn alike; sequential, one qemu-img at a time.
        var sizes = Gen.Int[0, 50].SelectMany(bits => Gen.Long[1L << bits, 1L << (bits + 1)]);
        Gen.Select(sizes, Gen.Bool).Sample((size, qcow2) =>
            AssertSameAsQemuImg(new OverlayImage(size, VolumeFileNames.Overlay(VolumeId, SnapshotId), qcow2 ? ImageFormat.Qcow2 : ImageFormat.Raw)),
            iter: 40, threads: 1);
    }

    [Fact]
    public void The_largest_size_the_writer_accepts_is_the_largest_qemu_img_creates()
    {
        Assert.Null(OverlayImage.Unsupported(OverlayImage.MaxVirtualSize, "volume-x", ImageFormat.Raw));
        Assert.NotNull(OverlayImage.Unsupported(OverlayImage.MaxVirtualSize + 1, "volume-x", ImageFormat.Raw));

        var (code, _, stderr) = RequiredTool.Run(RequiredTool.QemuImg, "create", "-q", "-f", "qcow2", "-b", "volume-x", "-F", "raw", "-u",
            _dir.File("too-large"), (OverlayImage.MaxVirtualSize + 512).ToString(CultureInfo.InvariantCulture));

        Assert.NotEqual(0, code);
        Assert.Contains("too large", stderr, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(0L, "volume-x")]
    [InlineData(-512L, "volume-x")]
    [InlineData(GiB, "")]
    [InlineData(GiB, "../volume-x")]
    [InlineData(GiB, "json:{}")]
    [InlineData(GiB, "volume x")]
    [InlineData(GiB, "volume-é")]
    public void Inputs_outside_the_proof_are_named_and_refused_by_the_writer(long size, string backingFile)
    {
        var reason = OverlayImage.Unsupported(size, backingFile, ImageFormat.Raw);

        Assert.NotNull(reason);
        var path = _dir.File("refused");
        Assert.Throws<ArgumentException>(() => new OverlayImage(size, backingFile, ImageFormat.Raw).Create(path, UnixFileMode.UserRead | UnixFileMode.UserWrite));
        Assert.False(File.Exists(path));
    }

    [Fact]
    public void A_backing_name_one_over_the_longest_covered_is_refused_by_the_writer() =>
        Assert.NotNull(OverlayImage.Unsupported(GiB, new string('n', OverlayImage.MaxBackingFileLength + 1), ImageFormat.Raw));

    [Fact]
    public void The_writer_does_not_replace_an_existing_file()
    {
        var path = _dir.File("exists");
        File.WriteAllText(path, "data");

        Assert.Throws<IOException>(() => new OverlayImage(GiB, "volume-x", ImageFormat.Raw).Create(path, UnixFileMode.UserRead | UnixFileMode.UserWrite));
        Assert.Equal("data", File.ReadAllText(path));
    }

    private void AssertSameAsQemuImg(OverlayImage overlay)
    {
        var expected = _dir.File("by-qemu-img");
        var actual = _dir.File("native");
        File.Delete(expected);
        File.Delete(actual);
        RunQemuImg("create", "-q", "-f", "qcow2", "-b", overlay.BackingFile, "-F", overlay.BackingFormat.ToQemuName(), "-u",
            expected, overlay.VirtualSize.ToString(CultureInfo.InvariantCulture));

        overlay.Create(actual, UnixFileMode.UserRead | UnixFileMode.UserWrite);

        var what = $"{overlay.VirtualSize} bytes on {overlay.BackingFormat} {overlay.BackingFile}";
        var (want, got) = (File.ReadAllBytes(expected), File.ReadAllBytes(actual));
        Assert.True(want.Length == got.Length, $"{what}: qemu-img wrote {want.Length} bytes, the writer {got.Length}");
        Assert.Equal(overlay.FileLength, got.Length);
        var firstDifference = want.AsSpan().CommonPrefixLength(got);
        Assert.True(firstDifference == want.Length,
            $"{what}: first difference at offset 0x{firstDifference:x}: qemu-img {Hex(want, firstDifference)}, writer {Hex(got, firstDifference)}");

        // qemu-img check opens the chain: give it a backing file of the stated format.
        var backing = _dir.File(overlay.BackingFile);
        File.Delete(backing);
        RunQemuImg("create", "-q", "-f", overlay.BackingFormat.ToQemuName(), backing, "1M");
        var (code, stdout, stderr) = RequiredTool.Run(RequiredTool.QemuImg, "check", "--output=json", "-f", "qcow2", actual);
        Assert.True(code == 0, $"{what}: qemu-img check exited {code}: {stdout} {stderr}");
        using var check = JsonDocument.Parse(stdout);
        Assert.Equal(0, check.RootElement.TryGetProperty("corruptions", out var c) ? c.GetInt32() : 0);
        Assert.Equal(0, check.RootElement.TryGetProperty("leaks", out var l) ? l.GetInt32() : 0);

        var header = ImageHeaderReader.Read(actual).Qcow2!;
        Assert.Equal((ulong)overlay.StoredVirtualSize, header.VirtualSize);
        Assert.Equal((overlay.BackingFile, overlay.BackingFormat.ToQemuName()), (header.BackingFile, header.BackingFormat));
    }

    private static string Hex(byte[] bytes, int offset) =>
        Convert.ToHexString(bytes.AsSpan(offset, Math.Min(16, bytes.Length - offset)));
}
