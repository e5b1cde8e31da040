using System.Collections.Concurrent;
using NfsVolumeWorker.Storage.Durability;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Locking;

namespace NfsVolumeWorker.Storage.Shares;

/// <summary>
/// The largest volume a share can hold: its file system's largest file (ext4 with 4 KiB blocks: 16 TiB), and
/// for qcow2 images also qcow2's own limit. A size past either is refused before anything is written, so no
/// operation fails halfway on it (a raw file of 20 TiB on ext4 fails at <c>ftruncate</c> with <c>EFBIG</c>).
/// </summary>
public static class VolumeSizeLimit
{
    /// <summary>The largest virtual size qemu-img creates with the default 64 KiB clusters: an L1 table of at
    /// most 32 MiB (qemu's <c>QCOW_MAX_L1_SIZE</c>), 4 Mi entries each mapping 8 Ki clusters: 2^51 bytes (2 PiB).</summary>
    public const long Qcow2MaxVirtualSize = 1L << 51;

    private static readonly ConcurrentDictionary<string, long> Probed = new(StringComparer.Ordinal);

    /// <summary>The largest file the share's file system accepts, probed once per share: a sparse scratch file
    /// in the worker's directory is truncated up by binary search until the file system answers <c>EFBIG</c>
    /// (no data is written; <c>pathconf(FILESIZEBITS)</c> says 64 on ext4 and cannot tell). Null when the
    /// share cannot be probed now (not mounted, read-only): nothing is cached then, the next call probes again.</summary>
    public static long? MaxFileSize(Share share)
    {
        ArgumentNullException.ThrowIfNull(share);
        if (Probed.TryGetValue(share.LocalPath, out var known))
        {
            return known;
        }
        try
        {
            var probed = Probe(Path.Combine(WorkerDirectories.Ensure(share, "tmp"), DurableFile.TempName("size-probe")));
            return Probed.GetOrAdd(share.LocalPath, probed);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or Errors.StorageException)
        {
            return null;
        }
    }

    /// <summary>Why <paramref name="bytes"/> cannot be the size of a volume of <paramref name="format"/> on the
    /// share (null format: either format, so both limits apply), or null when it can.</summary>
    public static string? Problem(Share share, long bytes, ImageFormat? format, string what)
    {
        if (bytes <= 0)
        {
            return $"{what} must be a positive number of bytes; got {bytes}";
        }
        if (format is null or ImageFormat.Qcow2 && bytes > Qcow2MaxVirtualSize)
        {
            return $"{what} {bytes} bytes is more than qcow2 allows ({Qcow2MaxVirtualSize} bytes, 2 PiB)";
        }
        if (MaxFileSize(share) is { } max && bytes > max)
        {
            return $"{what} {bytes} bytes is more than the largest file the file system of share {share.Export} holds ({max} bytes)";
        }
        return null;
    }

    private static long Probe(string path)
    {
        using var handle = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, FileOptions.DeleteOnClose);
        // Invariant: lo is accepted, hi is refused (long.MaxValue is refused by .NET itself).
        long lo = 0, hi = long.MaxValue;
        while (hi - lo > 1)
        {
            var mid = lo + ((hi - lo) / 2);
            if (TrySetLength(handle, mid))
            {
                lo = mid;
            }
            else
            {
                hi = mid;
            }
        }
        RandomAccess.SetLength(handle, 0);
        return lo;
    }

    private static bool TrySetLength(Microsoft.Win32.SafeHandles.SafeFileHandle handle, long length)
    {
        try
        {
            RandomAccess.SetLength(handle, length);
            return true;
        }
        catch (ArgumentOutOfRangeException)
        {
            return false; // EFBIG: .NET reports "file length too large for the file system" this way
        }
    }
}
