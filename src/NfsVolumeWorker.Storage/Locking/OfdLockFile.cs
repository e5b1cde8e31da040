using System.Runtime.InteropServices;
using NfsVolumeWorker.Storage.Durability;
using NfsVolumeWorker.Storage.Errors;

namespace NfsVolumeWorker.Storage.Locking;

/// <summary>
/// The one lock primitive of the worker's directory: an OFD (open file description) write lock on a whole file.
/// OFD locks conflict between threads of one process as well as between processes, NFSv4 enforces them across
/// client hosts, and the kernel drops them when the holder dies. <see cref="VolumeLock"/> and
/// <see cref="Inbox.InboxLock"/> are built on it.
/// </summary>
internal static class OfdLockFile
{
    private const int ENOENT = 2;
    private const int ELOOP = 40;

    /// <summary>Opens (creating) the lock file; -1 when its directory is not there (it was removed under the
    /// caller). A symlink at the name is refused.</summary>
    public static int Open(string path)
    {
        var fd = NativeMethods.Open(path, NativeMethods.O_RDWR | NativeMethods.O_CREAT | NativeMethods.O_NOFOLLOW | NativeMethods.O_CLOEXEC, Convert.ToInt32("660", 8));
        if (fd >= 0)
        {
            return fd;
        }
        var errno = Marshal.GetLastPInvokeError();
        return errno switch
        {
            ENOENT => -1,
            ELOOP => throw new StorageException(StorageErrorCode.UnsafePath, $"{path} is a symbolic link; refusing to use it as a lock."),
            _ => throw DurableFile.IoError($"open of lock file {path}", errno),
        };
    }

    /// <summary>Takes the write lock on the whole file without waiting: false when another description holds it.</summary>
    public static bool TryLock(int fd, string path)
    {
        var flock = new NativeMethods.Flock { l_type = NativeMethods.F_WRLCK, l_whence = 0, l_start = 0, l_len = 0 };
        if (NativeMethods.FcntlLock(fd, NativeMethods.F_OFD_SETLK, ref flock) == 0)
        {
            return true;
        }
        var errno = Marshal.GetLastPInvokeError();
        return errno is NativeMethods.EAGAIN or NativeMethods.EACCES or NativeMethods.EINTR ? false : throw DurableFile.IoError($"lock of {path}", errno);
    }

    /// <summary>True when some description (this process or another) holds the lock of <paramref name="path"/> now.</summary>
    public static bool IsHeld(string path)
    {
        var fd = NativeMethods.Open(path, NativeMethods.O_RDWR | NativeMethods.O_NOFOLLOW | NativeMethods.O_CLOEXEC, 0);
        if (fd < 0)
        {
            return false;
        }
        try
        {
            var flock = new NativeMethods.Flock { l_type = NativeMethods.F_WRLCK, l_whence = 0, l_start = 0, l_len = 0 };
            return NativeMethods.FcntlLock(fd, NativeMethods.F_OFD_GETLK, ref flock) == 0 && flock.l_type != NativeMethods.F_UNLCK;
        }
        finally
        {
            _ = NativeMethods.Close(fd);
        }
    }

    /// <summary>True when the file the descriptor locks is still the one named <paramref name="path"/>: a lock
    /// taken on a file that was unlinked or renamed away meanwhile (its directory removed) guards nothing.</summary>
    public static bool IsStillAt(int fd, string path) =>
        FileOwnership.IdentityOf(fd) is { } held && FileOwnership.IdentityOf(path) is { } named && held == named;

    /// <summary>The largest note <see cref="ReadNote(int, string)"/> reads; a note is one short line.</summary>
    private const int NoteLimit = 4096;

    /// <summary>The note the lock file holds (UTF-8, read from offset 0), "" when empty. The lock file's bytes are
    /// free: the lock is on the file, not on its content.</summary>
    public static string ReadNote(int fd, string path)
    {
        var buffer = new byte[NoteLimit];
        var read = NativeMethods.Pread(fd, ref buffer[0], (nuint)buffer.Length, 0);
        return read >= 0 ? System.Text.Encoding.UTF8.GetString(buffer, 0, (int)read) : throw DurableFile.IoError($"read of lock file {path}", Marshal.GetLastPInvokeError());
    }

    /// <summary>The note of the lock file at <paramref name="path"/>, read without taking or testing any lock (a
    /// FileStream would take a flock, which NFS maps onto the byte-range lock the holder has); null when no such file.</summary>
    public static string? ReadNote(string path)
    {
        var fd = NativeMethods.Open(path, NativeMethods.O_RDONLY | NativeMethods.O_NOFOLLOW | NativeMethods.O_CLOEXEC, 0);
        if (fd < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            return errno == ENOENT ? null : throw DurableFile.IoError($"open of lock file {path}", errno);
        }
        try
        {
            return ReadNote(fd, path);
        }
        finally
        {
            _ = NativeMethods.Close(fd);
        }
    }

    /// <summary>Replaces the note with <paramref name="note"/>, without any sync: written at 0, then cut to its length
    /// when the file held more (<paramref name="previousBytes"/>), so no new file (inode) is made for it.</summary>
    public static void WriteNote(int fd, string path, string note, int previousBytes)
    {
        var bytes = System.Text.Encoding.UTF8.GetBytes(note);
        if (bytes.Length > 0 && NativeMethods.Pwrite(fd, ref bytes[0], (nuint)bytes.Length, 0) != bytes.Length)
        {
            throw DurableFile.IoError($"write of lock file {path}", Marshal.GetLastPInvokeError());
        }
        if (previousBytes > bytes.Length && NativeMethods.Ftruncate(fd, bytes.Length) != 0)
        {
            throw DurableFile.IoError($"truncate of lock file {path}", Marshal.GetLastPInvokeError());
        }
    }

    /// <summary>Empties the lock file (its note), without any sync.</summary>
    public static void ClearNote(int fd, string path)
    {
        if (NativeMethods.Ftruncate(fd, 0) != 0)
        {
            throw DurableFile.IoError($"truncate of lock file {path}", Marshal.GetLastPInvokeError());
        }
    }

    public static void Close(int fd) => _ = NativeMethods.Close(fd);
}
