using NfsVolumeWorker.Storage.Durability;
using NfsVolumeWorker.Storage.Locking;
using NfsVolumeWorker.Storage.Shares;

namespace NfsVolumeWorker.Storage.Inbox;

/// <summary>
/// What each finished command ended with, by command id, under <c>.nfsvolumeworker/outcomes/</c> on the
/// share. A command that arrives again (redelivery, a producer's retry) is answered from here instead of
/// running twice, with the very same terminal event. Payloads are opaque to the storage layer.
/// </summary>
public static class CommandOutcomes
{
    private const string Folder = "outcomes";

    public static string PathOf(Share share, Guid commandId) =>
        Path.Combine(share.WorkerDirectory, Folder, $"{commandId:N}.json");

    public static byte[]? Read(Share share, Guid commandId)
    {
        var path = PathOf(share, commandId);
        DurableFile.EnsureNotSymlink(path);
        try
        {
            return File.ReadAllBytes(path);
        }
        catch (FileNotFoundException)
        {
            return null;
        }
        catch (DirectoryNotFoundException)
        {
            return null;
        }
    }

    /// <summary>Records a command's outcome durably, in one sync: the record is created under its final name
    /// (O_CREAT|O_EXCL) and fsynced (<see cref="DurableFile.TryWriteNew"/>), no temp file, no rename, no directory
    /// sync. A crash before the fsync returned can leave the record empty or torn; the terminal event is published
    /// only after this returns and the message acknowledged after that, so such a record answers nothing: its readers
    /// take a record they cannot parse for an absent one, the command runs again, and this replaces the torn record
    /// with an atomic replace (temp file, fsync, rename, directory fsync): the slow path, in that rare case only.</summary>
    public static void Write(Share share, Guid commandId, ReadOnlySpan<byte> payload, UnixFileMode mode)
    {
        WorkerDirectories.Ensure(share, Folder);
        var path = PathOf(share, commandId);
        DurableFile.EnsureNotSymlink(path);
        if (!DurableFile.TryWriteNew(path, payload, mode))
        {
            DurableFile.WriteAtomically(path, payload, mode);
        }
    }

    /// <summary>The mode bit that marks a record published. The sticky bit means nothing on a regular file to Linux,
    /// to NFS servers or to older workers (they read the record's bytes, never its mode).</summary>
    internal const UnixFileMode PublishedBit = UnixFileMode.StickyBit;

    /// <summary>Notes that the command's terminal event went out (the broker confirmed it), without any sync and
    /// without a new file: the record gets <see cref="PublishedBit"/> (one chmod; a create of a new name cost an inode
    /// allocation, and on NFS a server round trip, per command). A mark a crash loses costs one more publish of the
    /// same event, which subscribers drop by its message id. Where the share does not keep the bit (a server that
    /// drops it: the mode read back lacks it) or another user owns the record (only the owner may chmod), the mark is an empty <c>&lt;id&gt;.published</c> file beside the record,
    /// as older workers make. Returns false when it had to fall back to that file.</summary>
    public static bool MarkPublished(Share share, Guid commandId, UnixFileMode mode)
    {
        var record = PathOf(share, commandId);
        DurableFile.EnsureNotSymlink(record);
        try
        {
            var current = File.GetUnixFileMode(record);
            if ((current & PublishedBit) != 0)
            {
                return true;
            }
            File.SetUnixFileMode(record, current | PublishedBit);
            if ((File.GetUnixFileMode(record) & PublishedBit) != 0)
            {
                return true;
            }
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            return true; // pruned meanwhile: nothing left that a mark would answer for
        }
        catch (UnauthorizedAccessException)
        {
            // Another instance's user owns the record (only the owner may chmod): the file mark needs no ownership.
        }
        var path = PublishedMarkOf(share, commandId);
        DurableFile.EnsureNotSymlink(path);
        using var _ = new FileStream(path, new FileStreamOptions { Mode = FileMode.OpenOrCreate, Access = FileAccess.Write, UnixCreateMode = mode });
        return false;
    }

    /// <summary>True when the command's event is noted as sent: the record carries <see cref="PublishedBit"/>, or an
    /// <c>&lt;id&gt;.published</c> file (an older worker's mark, or this one's on a share that drops the bit) is there.</summary>
    public static bool IsMarkedPublished(Share share, Guid commandId)
    {
        try
        {
            if ((File.GetUnixFileMode(PathOf(share, commandId)) & PublishedBit) != 0)
            {
                return true;
            }
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
        }
        return File.Exists(PublishedMarkOf(share, commandId));
    }

    /// <summary>The separate mark of older workers (and of this one where the share drops <see cref="PublishedBit"/>).</summary>
    public static string PublishedMarkOf(Share share, Guid commandId) =>
        Path.Combine(share.WorkerDirectory, Folder, $"{commandId:N}.published");

    /// <summary>Deletes outcome records (and the <c>.published</c> files of older workers) older than <paramref name="maxAge"/>; returns how many records.</summary>
    public static int Prune(Share share, TimeSpan maxAge)
    {
        PruneFolder(share, Folder, maxAge, "*.published");
        return PruneFolder(share, Folder, maxAge);
    }

    /// <summary>Removes the files matching <paramref name="pattern"/> of a folder of the worker's directory written before <paramref name="maxAge"/>.</summary>
    internal static int PruneFolder(Share share, string folder, TimeSpan maxAge, string pattern = "*.json")
    {
        var dir = Path.Combine(share.WorkerDirectory, folder);
        if (!Directory.Exists(dir))
        {
            return 0;
        }
        var cutoff = DateTime.UtcNow - maxAge;
        var removed = 0;
        foreach (var file in Directory.EnumerateFiles(dir, pattern))
        {
            if (File.GetLastWriteTimeUtc(file) < cutoff && DurableFile.TryDelete(file))
            {
                removed++;
            }
        }
        return removed;
    }
}
