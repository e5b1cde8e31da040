using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Shares;
using NfsVolumeWorker.Storage.Tests.Support;
using static NfsVolumeWorker.Storage.Tests.Support.EngineTestBed;

namespace NfsVolumeWorker.Storage.Tests.Engine;

/// <summary>The copy mode of full copies is the faster of the two measured on the share (unless pinned); the
/// measurement is cached, taken again when old, and leaves no file behind.</summary>
public sealed class CopyModeSpecs : IDisposable
{
    private readonly EngineTestBed _bed = new(new VolumeEngineOptions
    {
        LockTimeout = TimeSpan.FromSeconds(30), ServerSideCopy = false, CopyModeProbeBytes = 4 * MiB,
    });

    public void Dispose() => _bed.Dispose();

    [Theory]
    [InlineData(300e6, 200e6, CopyMode.DirectIo)]
    [InlineData(200e6, 300e6, CopyMode.PageCache)]
    [InlineData(0, 50e6, CopyMode.PageCache)] // O_DIRECT refused
    [InlineData(250e6, 250e6, CopyMode.DirectIo)] // a tie keeps the page cache for others
    [InlineData(250e6, 310e6, CopyMode.DirectIo)] // within the margin: the probe flatters the page cache
    [InlineData(250e6, 320e6, CopyMode.PageCache)]
    public void The_faster_mode_is_chosen(double directIo, double pageCache, CopyMode expected) =>
        Assert.Equal(expected, CopyModeMeasurement.Choose(directIo, pageCache));

    [Fact]
    public void A_measurement_is_due_when_there_is_none_or_it_is_old_enough()
    {
        var at = new DateTimeOffset(2026, 12, 5, 12, 0, 0, TimeSpan.Zero);
        var m = new CopyModeMeasurement(CopyMode.DirectIo, 1, 0, MiB, at);

        Assert.True(CopyModeProbe.IsDue(null, at, TimeSpan.FromDays(1)));
        Assert.False(CopyModeProbe.IsDue(m, at.AddHours(23), TimeSpan.FromDays(1)));
        Assert.True(CopyModeProbe.IsDue(m, at.AddDays(1), TimeSpan.FromDays(1)));
        Assert.True(CopyModeProbe.IsDue(m, at, TimeSpan.Zero));
    }

    [Fact]
    public async Task The_measurement_copies_both_ways_records_itself_with_the_share_and_leaves_nothing_behind()
    {
        var before = Files(_bed.Share.LocalPath);

        var m = await CopyModeProbe.MeasureAsync(_bed.Share, _bed.Qemu, 4 * MiB, 8, TimeSpan.Zero, TimeProvider.System, CancellationToken.None);

        Assert.True(m.PageCacheBytesPerSecond > 0, "the page-cache copy was not measured");
        Assert.Equal(CopyModeMeasurement.Choose(m.DirectIoBytesPerSecond, m.PageCacheBytesPerSecond), m.Fastest);
        Assert.Equal(4 * MiB, m.ProbeBytes);
        Assert.Same(m, CopyModeProbe.Latest(_bed.Share));
        Assert.Equal(m, ShareCapabilities.Of(_bed.Share).CopyMode);
        Assert.Contains("copy mode", ShareCapabilities.Of(_bed.Share).Describe(), StringComparison.Ordinal);
        // Only the worker's directories may have appeared (tmp, for the scratch files), never a file.
        Assert.Equal(before, Files(_bed.Share.LocalPath));

        var cached = await CopyModeProbe.MeasureAsync(_bed.Share, _bed.Qemu, 4 * MiB, 8, TimeSpan.FromDays(1), TimeProvider.System, CancellationToken.None);
        Assert.Same(m, cached);
        var again = await CopyModeProbe.MeasureAsync(_bed.Share, _bed.Qemu, 4 * MiB, 8, TimeSpan.Zero, TimeProvider.System, CancellationToken.None);
        Assert.NotSame(m, again);
        Assert.Equal(before, Files(_bed.Share.LocalPath));
    }

    [Fact]
    public async Task Scratch_files_of_a_measurement_killed_long_ago_are_removed_and_a_running_ones_are_not()
    {
        var tmp = Directory.CreateDirectory(Path.Combine(_bed.Share.WorkerDirectory, "tmp")).FullName;
        var abandoned = Path.Combine(tmp, ".copy-mode-probe.tmp-0123456789abcdef0123456789abcdef");
        var running = Path.Combine(tmp, ".copy-mode-probe.tmp-fedcba9876543210fedcba9876543210");
        File.WriteAllBytes(abandoned, new byte[4096]);
        File.WriteAllBytes(running, new byte[4096]);
        File.SetLastWriteTimeUtc(abandoned, DateTime.UtcNow.AddHours(-2));

        await CopyModeProbe.MeasureAsync(_bed.Share, _bed.Qemu, 2 * MiB, 8, TimeSpan.Zero, TimeProvider.System, CancellationToken.None);

        Assert.False(File.Exists(abandoned), "a scratch file two hours old was left");
        Assert.True(File.Exists(running), "another instance's running measurement lost its file");
    }

    [Fact]
    public async Task An_unpinned_full_copy_measures_the_share_first_and_uses_the_faster_mode()
    {
        Assert.Null(CopyModeProbe.Latest(_bed.Share));
        var volume = await _bed.CreateVolumeAsync(32 * MiB);
        _bed.GuestWrite(volume, 0, 8 * MiB, 0x5a);
        var reference = _bed.SaveReference(volume, "now");
        var clone = Guid.NewGuid();

        var result = await _bed.Engine.CloneVolumeAsync(new CloneVolumeRequest(Export, volume, clone));

        var measured = CopyModeProbe.Latest(_bed.Share);
        Assert.NotNull(measured);
        Assert.Contains(measured.Fastest == CopyMode.DirectIo ? "copied with O_DIRECT" : "copied through the page cache", result.Message, StringComparison.Ordinal);
        Assert.True(_bed.SameContents(_bed.PathOf(VolumeFileNames.Base(clone)), ImageFormat.Raw, reference));
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(_bed.Share.WorkerDirectory, "tmp")));
        Assert.DoesNotContain(_bed.Listing(), f => f.Contains(".tmp-", StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_copy_smaller_than_the_probe_measures_nothing_and_uses_O_DIRECT_until_a_measurement_says_otherwise()
    {
        // The probe writes seven times its size: for a smaller copy that costs more than the copy itself.
        var volume = await _bed.CreateVolumeAsync(32 * MiB);
        _bed.GuestWrite(volume, 0, 2 * MiB, 0x5b); // 2 MiB allocated, under the bed's 4 MiB probe
        var reference = _bed.SaveReference(volume, "now");

        var small = await _bed.Engine.CloneVolumeAsync(new CloneVolumeRequest(Export, volume, Guid.NewGuid()));

        Assert.Null(CopyModeProbe.Latest(_bed.Share));
        Assert.Contains("copied with O_DIRECT", small.Message, StringComparison.Ordinal);

        // Once the share has a measurement (here, the page cache made to look 10x faster), small copies follow it.
        var paged = new CopyModeMeasurement(CopyMode.PageCache, 1e6, 1e7, 4 * MiB, DateTimeOffset.UtcNow);
        CopyModeProbe.Record(_bed.Share, paged);
        var clone = Guid.NewGuid();

        var followed = await _bed.Engine.CloneVolumeAsync(new CloneVolumeRequest(Export, volume, clone));

        Assert.Same(paged, CopyModeProbe.Latest(_bed.Share));
        Assert.Contains("copied through the page cache", followed.Message, StringComparison.Ordinal);
        Assert.True(_bed.SameContents(_bed.PathOf(VolumeFileNames.Base(clone)), ImageFormat.Raw, reference));
    }

    private static List<string> Files(string root) =>
        Directory.EnumerateFiles(root, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal).ToList();
}
