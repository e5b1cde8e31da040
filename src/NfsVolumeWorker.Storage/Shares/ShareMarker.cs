using System.Collections.Concurrent;
using NfsVolumeWorker.Storage.Durability;
using NfsVolumeWorker.Storage.Errors;

namespace NfsVolumeWorker.Storage.Shares;

/// <summary>
/// Tells a share that is there from one that has gone. An unmounted NFS share leaves its mount point behind as
/// an empty local directory that accepts writes: work done there would land on the local disk and vanish when
/// the share comes back. So each share carries a marker file, <c>.nfsvolumeworker/share-id</c>; the first time
/// this process finds the share it pins the marker's inode number, and from then on the share counts as
/// available only while that same file is there (one <c>lstat</c>; the inode survives remounts). Gone or
/// different: <see cref="StorageErrorCode.ShareUnavailable"/> (transient), and nothing is written. A share whose
/// command store a newer worker has upgraded (<see cref="Inbox.CommandStoreFormat"/>) is unavailable the same way.
/// </summary>
public static class ShareMarker
{
    public const string FileName = "share-id";

    private const UnixFileMode MarkerMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.OtherRead;

    private static readonly ConcurrentDictionary<string, ulong> Pinned = new(StringComparer.Ordinal);

    /// <summary>Throws <see cref="StorageErrorCode.ShareUnavailable"/> unless the share is the one this process
    /// found first (creating the marker on a share that has none yet).</summary>
    public static void EnsureAvailable(Share share)
    {
        ArgumentNullException.ThrowIfNull(share);
        var marker = Path.Combine(share.WorkerDirectory, FileName);
        // A share a newer worker has upgraded is refused before anything on it is touched.
        Inbox.CommandStoreFormat.EnsureReadable(share);
        if (Pinned.TryGetValue(share.LocalPath, out var pinned))
        {
            var inode = FileOwnership.InodeOf(marker);
            if (inode == pinned)
            {
                return;
            }
            DurableFile.EnsureNotSymlink(share.WorkerDirectory); // a hostile swap of the worker's directory says so
            throw new StorageException(StorageErrorCode.ShareUnavailable, inode is null
                ? $"Share {share.Export} is not available: {marker} is gone (unmounted, or the directory was replaced); nothing was written. Work resumes when it is back."
                : $"Share {share.Export} is not available: {share.LocalPath} now holds a different share (its marker changed); nothing was written.");
        }
        if (!Directory.Exists(share.LocalPath))
        {
            throw new StorageException(StorageErrorCode.ShareUnavailable, $"Share {share.Export} is not available: {share.LocalPath} does not exist (not mounted?).");
        }
        if (share.MustBeMounted && !FileOwnership.IsMountPoint(share.LocalPath))
        {
            throw new StorageException(StorageErrorCode.ShareUnavailable,
                $"Share {share.Export} is not mounted: {share.LocalPath} is a plain directory of the local file system; nothing was written (mount it, or set Shares:RequireMountedShares=false for a local directory).");
        }
        try
        {
            if (FileOwnership.InodeOf(marker) is null)
            {
                CreateMarker(share, marker);
            }
        }
        catch (IOException e)
        {
            throw new StorageException(StorageErrorCode.ShareUnavailable, $"Share {share.Export} is not available: cannot write its marker {marker}: {e.Message}", e);
        }
        catch (UnauthorizedAccessException e)
        {
            throw new StorageException(StorageErrorCode.ShareUnavailable, $"Share {share.Export} is not available: cannot write its marker {marker}: {e.Message}", e);
        }
        var found = FileOwnership.InodeOf(marker)
            ?? throw new StorageException(StorageErrorCode.ShareUnavailable, $"Share {share.Export} is not available: its marker {marker} vanished as it was written.");
        try
        {
            Inbox.CommandStoreFormat.RecordCurrent(share, MarkerMode);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new StorageException(StorageErrorCode.ShareUnavailable, $"Share {share.Export} is not available: cannot record its command store format: {e.Message}", e);
        }
        Pinned.TryAdd(share.LocalPath, found);
    }

    /// <summary>Writes the marker under a temp name and links it into place without replacing one that another
    /// instance wrote meanwhile (then that one is the marker).</summary>
    private static void CreateMarker(Share share, string marker)
    {
        DurableFile.EnsureNotSymlink(share.WorkerDirectory);
        Directory.CreateDirectory(share.WorkerDirectory);
        var temp = Path.Combine(share.WorkerDirectory, DurableFile.TempName(FileName));
        File.WriteAllText(temp, Guid.NewGuid().ToString() + "\n");
        DurableFile.FsyncFile(temp);
        try
        {
            File.Move(temp, marker, overwrite: false);
            DurableFile.FsyncDirectory(share.WorkerDirectory);
        }
        catch (IOException) when (File.Exists(marker))
        {
            DurableFile.TryDelete(temp);
        }
    }

    /// <summary>True when the share is gone (<see cref="EnsureAvailable"/> fails with ShareUnavailable), with why.</summary>
    public static bool IsGone(Share share, out string? reason)
    {
        try
        {
            EnsureAvailable(share);
        }
        catch (StorageException e) when (e.Code == StorageErrorCode.ShareUnavailable)
        {
            reason = e.Message;
            return true;
        }
        catch (StorageException)
        {
            // Refused for another reason (a symlinked worker directory): that reason stands where it arises.
        }
        reason = null;
        return false;
    }

    /// <summary>True when <see cref="EnsureAvailable"/> would not throw.</summary>
    public static bool IsAvailable(Share share, out string? problem)
    {
        try
        {
            EnsureAvailable(share);
            problem = null;
            return true;
        }
        catch (StorageException e)
        {
            problem = e.Message;
            return false;
        }
    }
}
