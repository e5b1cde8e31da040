using System.Runtime.InteropServices;
using NfsVolumeWorker.Storage.Diagnostics;
using NfsVolumeWorker.Storage.Errors;

namespace NfsVolumeWorker.Storage.Durability;

/// <summary>
/// Making changes survive a crash: fsync of files and directories, atomic replace of small files
/// (design crash rule 1), and refusing symbolic links where the engine expects plain files.
/// Every fsync of the project goes through here, so <see cref="StorageTelemetry.Syncs"/> counts them all.
/// </summary>
public static class DurableFile
{
    private static readonly KeyValuePair<string, object?> FileKind = new("kind", "file");
    private static readonly KeyValuePair<string, object?> DirectoryKind = new("kind", "directory");

    /// <summary>Flushes a file's data and metadata to stable storage.</summary>
    public static void FsyncFile(string path)
    {
        using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        StorageTelemetry.Syncs.Add(1, FileKind);
        if (NativeMethods.Fsync((int)handle.DangerousGetHandle()) != 0)
        {
            throw IoError($"fsync of {path}", Marshal.GetLastPInvokeError());
        }
    }

    /// <summary>Flushes a directory's entries (creates, renames, deletes) to stable storage.</summary>
    public static void FsyncDirectory(string directory)
    {
        var fd = NativeMethods.Open(directory, NativeMethods.O_RDONLY | NativeMethods.O_DIRECTORY | NativeMethods.O_CLOEXEC, 0);
        if (fd < 0)
        {
            throw IoError($"open of directory {directory}", Marshal.GetLastPInvokeError());
        }
        try
        {
            StorageTelemetry.Syncs.Add(1, DirectoryKind);
            if (NativeMethods.Fsync(fd) != 0)
            {
                throw IoError($"fsync of directory {directory}", Marshal.GetLastPInvokeError());
            }
        }
        finally
        {
            _ = NativeMethods.Close(fd);
        }
    }

    /// <summary>Writes a stream's buffer and flushes the file's data and metadata to stable storage (fsync).</summary>
    public static void Flush(FileStream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        StorageTelemetry.Syncs.Add(1, FileKind);
        stream.Flush(flushToDisk: true);
    }

    /// <summary>
    /// Replaces <paramref name="path"/> with <paramref name="content"/> atomically: a temp file in the
    /// same directory, fsync, rename over the target, fsync the directory. A crash at any point leaves
    /// either the old file or the new one, never a truncated one.
    /// </summary>
    /// <param name="soleWriter">The caller holds the only right to write <paramref name="path"/> (the volume lock).
    /// The temp file then has one fixed name (<see cref="SoleWriterTempName"/>), so a write killed before its rename
    /// leaves a temp file that the next write replaces, instead of one more left for <c>nfsvol check</c> each time.</param>
    public static void WriteAtomically(string path, ReadOnlySpan<byte> content, UnixFileMode mode, bool soleWriter = false)
    {
        var directory = Path.GetDirectoryName(Path.GetFullPath(path))!;
        var name = Path.GetFileName(path);
        var temp = Path.Combine(directory, soleWriter ? SoleWriterTempName(name) : TempName(name));
        try
        {
            FileStream stream;
            try
            {
                stream = CreateNew(temp, mode);
            }
            catch (IOException) when (soleWriter)
            {
                // Left by a write that was killed (or planted: unlinking a symbolic link removes the link, not its
                // target). Nobody else may be writing it, so it goes; O_EXCL again, so nothing is ever followed. Any
                // other failure (no space, no permission) fails the second create the same way and is thrown.
                File.Delete(temp);
                stream = CreateNew(temp, mode);
            }
            using (stream)
            {
                stream.Write(content);
                Flush(stream);
            }
            File.SetUnixFileMode(temp, mode); // umask may have narrowed the create mode
            File.Move(temp, path, overwrite: true);
        }
        catch
        {
            TryDelete(temp);
            throw;
        }
        FsyncDirectory(directory);
    }

    /// <summary>
    /// Creates <paramref name="path"/> (O_CREAT|O_EXCL) with <paramref name="content"/> and fsyncs it: one sync, for a
    /// file whose name nothing else claims. On ext4, xfs and btrfs the fsync of a newly created file also commits its
    /// directory entry; on NFS the CREATE itself is synchronous at the server. A crash before the fsync returns may
    /// leave the file empty or torn: its readers must take a file they cannot parse for an absent one. False (and
    /// nothing written) when the file exists already.
    /// </summary>
    public static bool TryWriteNew(string path, ReadOnlySpan<byte> content, UnixFileMode mode)
    {
        FileStream stream;
        try
        {
            stream = new FileStream(path, new FileStreamOptions
            {
                Mode = FileMode.CreateNew,
                Access = FileAccess.Write,
                // Readers may open it while it is written (it is under its final name): they read a torn record as
                // absent. FileShare.None would take an exclusive flock that makes their open throw instead.
                Share = FileShare.Read,
                UnixCreateMode = mode,
            });
        }
        catch (IOException) when (File.Exists(path))
        {
            return false;
        }
        try
        {
            using (stream)
            {
                File.SetUnixFileMode(stream.SafeFileHandle, mode); // umask may have narrowed the create mode
                stream.Write(content);
                Flush(stream);
            }
        }
        catch
        {
            TryDelete(path); // ours, and not yet complete: a reader would take it for absent anyway
            throw;
        }
        return true;
    }

    /// <summary>
    /// Gives <paramref name="target"/> the file <paramref name="source"/> is (a hard link, made under a temp name and
    /// renamed over the target, then the directory fsynced): a crash leaves the target either as it was or as the
    /// source, never missing, and <paramref name="source"/> keeps its name. Both must be in the same directory.
    /// </summary>
    public static void ReplaceWithLink(string source, string target)
    {
        var directory = Path.GetDirectoryName(Path.GetFullPath(target))!;
        var temp = Path.Combine(directory, TempName(Path.GetFileName(target)));
        if (NativeMethods.Link(source, temp) != 0)
        {
            throw IoError($"hard link of {source} as {temp}", Marshal.GetLastPInvokeError());
        }
        try
        {
            File.Move(temp, target, overwrite: true);
        }
        catch
        {
            TryDelete(temp);
            throw;
        }
        FsyncDirectory(directory);
    }

    /// <summary>The hidden temp name used next to <paramref name="fileName"/> while it is replaced.</summary>
    public static string TempName(string fileName) => $".{fileName}.tmp-{Guid.NewGuid():N}";

    /// <summary>The one temp name of a file whose writer holds a lock on it (<see cref="WriteAtomically"/>).</summary>
    public static string SoleWriterTempName(string fileName) => $".{fileName}.tmp-write";

    private static FileStream CreateNew(string path, UnixFileMode mode) => new(path, new FileStreamOptions
    {
        Mode = FileMode.CreateNew,
        Access = FileAccess.Write,
        Share = FileShare.None,
        UnixCreateMode = mode,
    });

    /// <summary>True when <paramref name="fileName"/> is a temp file left by <see cref="WriteAtomically"/>.</summary>
    public static bool IsTempName(string fileName) => fileName.StartsWith('.') && fileName.Contains(".tmp-", StringComparison.Ordinal);

    /// <summary>Throws <see cref="StorageErrorCode.UnsafePath"/> when <paramref name="path"/> exists and is a symbolic link.</summary>
    public static void EnsureNotSymlink(string path)
    {
        // One readlink: asking for existence and attributes apart raced with a directory that went in between (the
        // attributes of a path that no longer exists read as every flag set, a "symbolic link to nothing").
        if (new FileInfo(path).LinkTarget is { } target)
        {
            throw new StorageException(StorageErrorCode.UnsafePath,
                $"{path} is a symbolic link (to {target}); the engine only works on plain files it created.");
        }
    }

    /// <summary>Deletes a file if it exists; returns whether it did.</summary>
    public static bool TryDelete(string path)
    {
        try
        {
            if (!File.Exists(path) && new FileInfo(path).LinkTarget is null)
            {
                return false;
            }
            File.Delete(path);
            return true;
        }
        catch (FileNotFoundException)
        {
            return false;
        }
    }

    /// <summary>Maps an errno to the engine's error codes (transient vs permanent).</summary>
    public static StorageException IoError(string what, int errno) => errno switch
    {
        28 or 122 => new StorageException(StorageErrorCode.NoSpace, $"{what} failed: no space left on the share (errno {errno})."),
        NativeMethods.EAGAIN or NativeMethods.EINTR or 116 /* ESTALE */ or 5 /* EIO */ =>
            new StorageException(StorageErrorCode.TransientIo, $"{what} failed with a transient error (errno {errno}: {Marshal.GetPInvokeErrorMessage(errno)})."),
        _ => new StorageException(StorageErrorCode.ShareUnavailable, $"{what} failed (errno {errno}: {Marshal.GetPInvokeErrorMessage(errno)})."),
    };
}
