using System.Collections.Concurrent;
using NfsVolumeWorker.Storage.Durability;
using NfsVolumeWorker.Storage.Locking;

namespace NfsVolumeWorker.Storage.Shares;

/// <summary>What a share's file system offers the engine, found by trying it once per share and process.</summary>
/// <param name="ExtentSharing">Files can share extents (<c>FICLONE</c>: XFS with reflink, btrfs, NFS 4.2
/// <c>CLONE</c>): clones then cost what the overlays hold, not the whole volume.</param>
/// <param name="MaxFileSize">The largest file the file system holds (see <see cref="VolumeSizeLimit"/>), when known.</param>
public sealed record ShareCapabilities(bool ExtentSharing, long? MaxFileSize)
{
    private static readonly ConcurrentDictionary<string, ShareCapabilities> Probed = new(StringComparer.Ordinal);

    /// <summary>The share's capabilities, probed on first use (two scratch files in the worker's directory, a
    /// one-block <c>FICLONE</c> between them); a share that cannot be probed now is probed again next time.</summary>
    public static ShareCapabilities Of(Share share)
    {
        ArgumentNullException.ThrowIfNull(share);
        if (Probed.TryGetValue(share.LocalPath, out var known))
        {
            return known;
        }
        try
        {
            var found = new ShareCapabilities(ProbeExtentSharing(share), VolumeSizeLimit.MaxFileSize(share));
            return Probed.GetOrAdd(share.LocalPath, found);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or Errors.StorageException)
        {
            return new ShareCapabilities(false, null);
        }
    }

    /// <summary>One line for logs, health and <c>nfsvol check</c>.</summary>
    public string Describe() =>
        (ExtentSharing ? "extent sharing (reflink): clones share the base's extents" : "no extent sharing: clones copy")
        + (MaxFileSize is { } max ? $"; largest file {max} bytes" : "");

    private static bool ProbeExtentSharing(Share share)
    {
        var dir = WorkerDirectories.Ensure(share, "tmp");
        var source = Path.Combine(dir, DurableFile.TempName("reflink-probe"));
        var target = Path.Combine(dir, DurableFile.TempName("reflink-probe"));
        try
        {
            File.WriteAllBytes(source, new byte[4096]);
            return Durability.ExtentSharing.TryClone(source, target, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        }
        finally
        {
            DurableFile.TryDelete(source);
            DurableFile.TryDelete(target);
        }
    }
}
