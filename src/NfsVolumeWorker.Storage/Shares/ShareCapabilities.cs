using System.Collections.Concurrent;
using NfsVolumeWorker.Storage.Durability;
using NfsVolumeWorker.Storage.Locking;

namespace NfsVolumeWorker.Storage.Shares;

/// <summary>What a share's file system offers the engine, found by trying it once per share and process.</summary>
/// <param name="ExtentSharing">Files can share extents (<c>FICLONE</c>: XFS with reflink, btrfs, NFS 4.2
/// <c>CLONE</c>): clones then cost what the overlays hold, not the whole volume.</param>
/// <param name="MaxFileSize">The largest file the file system holds (see <see cref="VolumeSizeLimit"/>), when known.</param>
/// <param name="HardLinks">Files can have a second name (<c>link</c>): a merge may then pull the lower image up into the
/// overlay and give it the lower image's name. Without, merges only commit down.</param>
public sealed record ShareCapabilities(bool ExtentSharing, long? MaxFileSize, bool HardLinks = false)
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
            var found = new ShareCapabilities(ProbeExtentSharing(share), VolumeSizeLimit.MaxFileSize(share), ProbeHardLinks(share));
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
        + (MaxFileSize is { } max ? $"; largest file {max} bytes" : "")
        + (HardLinks ? "" : "; no hard links: merges only commit down");

    private static bool ProbeHardLinks(Share share)
    {
        var dir = WorkerDirectories.Ensure(share, "tmp");
        var source = Path.Combine(dir, DurableFile.TempName("link-probe"));
        var target = Path.Combine(dir, DurableFile.TempName("link-probe"));
        try
        {
            File.WriteAllBytes(source, []);
            DurableFile.ReplaceWithLink(source, target);
            return true;
        }
        catch (Errors.StorageException)
        {
            return false;
        }
        finally
        {
            DurableFile.TryDelete(source);
            DurableFile.TryDelete(target);
        }
    }

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
