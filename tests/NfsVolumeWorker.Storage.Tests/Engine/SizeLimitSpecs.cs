using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Shares;
using NfsVolumeWorker.Storage.Tests.Support;

namespace NfsVolumeWorker.Storage.Tests.Engine;

/// <summary>A size the share's file system or qcow2 cannot hold is refused before anything is written (it used to
/// escape as an ArgumentOutOfRangeException from ftruncate, which the worker retried forever).</summary>
public sealed class SizeLimitSpecs : IDisposable
{
    private readonly EngineTestBed _bed = new();

    public void Dispose() => _bed.Dispose();

    [Fact]
    public void The_probed_largest_file_is_exactly_where_the_file_system_starts_refusing()
    {
        var max = VolumeSizeLimit.MaxFileSize(_bed.Share);
        Assert.NotNull(max);
        Assert.True(max > 1L << 40, $"probed {max}: implausibly small for a test file system");
        var path = _bed.PathOf("size-witness");
        using (var handle = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite))
        {
            RandomAccess.SetLength(handle, max!.Value); // sparse: writes no data
            if (max < long.MaxValue - 1)
            {
                Assert.ThrowsAny<Exception>(() => RandomAccess.SetLength(handle, max.Value + 1));
            }
            RandomAccess.SetLength(handle, 0);
        }
        File.Delete(path);
        // The probe leaves nothing behind on the share.
        Assert.Empty(Directory.EnumerateFiles(_bed.Share.WorkerDirectory, "*", SearchOption.AllDirectories));
    }

    [Theory]
    [InlineData(ImageFormat.Raw, long.MaxValue)]
    [InlineData(ImageFormat.Qcow2, long.MaxValue)]
    [InlineData(ImageFormat.Qcow2, VolumeSizeLimit.Qcow2MaxVirtualSize + 1)]
    public async Task I_cannot_create_a_volume_larger_than_the_share_or_qcow2_holds(ImageFormat format, long size)
    {
        var volume = Guid.NewGuid();
        var e = await Assert.ThrowsAsync<StorageException>(() => _bed.Engine.CreateVolumeAsync(new CreateVolumeRequest(EngineTestBed.Export, volume, size, format)));
        Assert.Equal(StorageErrorCode.InvalidRequest, e.Code);
        Assert.Contains(size.ToString(System.Globalization.CultureInfo.InvariantCulture), e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(_bed.Listing(), f => f.Contains(volume.ToString(), StringComparison.Ordinal));
    }

    [Fact]
    public async Task I_cannot_create_a_raw_volume_one_byte_past_the_largest_file()
    {
        var max = VolumeSizeLimit.MaxFileSize(_bed.Share)!.Value;
        var volume = Guid.NewGuid();
        var e = await Assert.ThrowsAsync<StorageException>(() => _bed.Engine.CreateVolumeAsync(new CreateVolumeRequest(EngineTestBed.Export, volume, max + 1, ImageFormat.Raw)));
        Assert.Equal(StorageErrorCode.InvalidRequest, e.Code);
        Assert.Contains("largest file", e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(_bed.Listing(), f => f.Contains(volume.ToString(), StringComparison.Ordinal));
    }

    [Fact]
    public async Task I_cannot_extend_or_clone_past_the_limits_and_the_chain_stays_as_it_was()
    {
        var volume = await _bed.CreateVolumeAsync(4 * EngineTestBed.MiB, ImageFormat.Qcow2);
        var before = _bed.Listing();
        var extend = await Assert.ThrowsAsync<StorageException>(() => _bed.Engine.ExtendVolumeAsync(new ExtendVolumeRequest(EngineTestBed.Export, volume, VolumeSizeLimit.Qcow2MaxVirtualSize + 1)));
        Assert.Equal(StorageErrorCode.InvalidRequest, extend.Code);
        var clone = await Assert.ThrowsAsync<StorageException>(() => _bed.Engine.CloneVolumeAsync(
            new CloneVolumeRequest(EngineTestBed.Export, volume, Guid.NewGuid(), ImageFormat.Raw, long.MaxValue)));
        Assert.Equal(StorageErrorCode.InvalidRequest, clone.Code);
        Assert.Equal(before, _bed.Listing());
        Assert.Empty(_bed.ShareProblems());
    }
}
