using NfsVolumeWorker.Storage.Errors;

namespace NfsVolumeWorker.Storage.Shares;

/// <summary>
/// Free space on a share against what an operation will write, checked before the operation touches anything:
/// a merge or a copy that cannot fit is refused with <see cref="StorageErrorCode.NoSpace"/> (transient: it may
/// fit once space is freed) instead of failing halfway.
/// </summary>
public static class ShareSpace
{
    private const long MiB = 1024 * 1024;

    /// <summary>Bytes an unprivileged writer may still allocate on the share (<c>statvfs</c>: <c>f_bavail</c> blocks).</summary>
    public static long Available(Share share)
    {
        ArgumentNullException.ThrowIfNull(share);
        return new DriveInfo(share.LocalPath).AvailableFreeSpace;
    }

    /// <summary>What writing <paramref name="dataBytes"/> of image data may take with the image's own metadata
    /// (qcow2 L2 tables and refcounts are well under 1/64 of the data with 64 KiB clusters) and the small files
    /// an operation writes beside it (<c>.info</c>, journal, outcome).</summary>
    public static long Needed(long dataBytes) => dataBytes + (dataBytes / 64) + MiB;

    /// <summary>Throws <see cref="StorageErrorCode.NoSpace"/> when <paramref name="neededBytes"/> do not fit on the share.</summary>
    public static void Require(Share share, long neededBytes, string what, Guid volumeId)
    {
        var available = Available(share);
        if (available < neededBytes)
        {
            throw new StorageException(StorageErrorCode.NoSpace,
                $"{what} needs about {neededBytes} bytes on share {share.Export}, which has {available} free; nothing was changed. Free space and send the command again (or let its retries run).")
            { VolumeId = volumeId };
        }
    }
}
