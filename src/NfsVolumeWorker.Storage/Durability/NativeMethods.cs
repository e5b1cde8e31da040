using System.Runtime.InteropServices;

namespace NfsVolumeWorker.Storage.Durability;

/// <summary>The few libc calls .NET does not expose: fsync of a directory, OFD locks, FICLONE(RANGE), copy_file_range, fallocate, hard links, positioned I/O on a raw descriptor (the volume lock's file), and read-ahead advice.</summary>
internal static partial class NativeMethods
{
    internal const int O_RDONLY = 0;
    internal const int O_RDWR = 2;
    internal const int O_CREAT = 0x40;
    internal const int O_NOFOLLOW = 0x20000;
    internal const int O_DIRECTORY = 0x10000;
    internal const int O_CLOEXEC = 0x80000;

    /// <summary><c>_IOW(0x94, 9, int)</c>: make the target share all of the source's extents (reflink).</summary>
    internal const ulong FICLONE = 0x40049409;

    /// <summary><c>_IOW(0x94, 13, struct file_clone_range)</c>: make a range of the target share a range of the source's extents.</summary>
    internal const ulong FICLONERANGE = 0x4020940D;

    /// <summary><c>fallocate(2)</c> modes: deallocate the range (it reads as zeroes) without changing the file's size.</summary>
    internal const int FALLOC_FL_KEEP_SIZE = 1;
    internal const int FALLOC_FL_PUNCH_HOLE = 2;

    internal const int F_OFD_GETLK = 36;
    internal const int F_OFD_SETLK = 37;

    internal const short F_RDLCK = 0;
    internal const short F_WRLCK = 1;
    internal const short F_UNLCK = 2;

    internal const int EINTR = 4;
    internal const int EAGAIN = 11;
    internal const int EACCES = 13;

    /// <summary>struct flock on 64-bit Linux.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct Flock
    {
        public short l_type;
        public short l_whence;
        public long l_start;
        public long l_len;
        public int l_pid;
        public int pad;
    }

    /// <summary>struct file_clone_range, the argument of FICLONERANGE.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct FileCloneRange
    {
        public long src_fd;
        public ulong src_offset;
        public ulong src_length;
        public ulong dest_offset;
    }

    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    internal static partial int IoctlInt(int fd, ulong request, int argument);

    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    internal static partial int IoctlCloneRange(int fd, ulong request, ref FileCloneRange range);

    [LibraryImport("libc", EntryPoint = "fallocate", SetLastError = true)]
    internal static partial int Fallocate(int fd, int mode, long offset, long length);

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int Open(string path, int flags, int mode);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    internal static partial int Close(int fd);

    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    internal static partial int Fsync(int fd);

    [LibraryImport("libc", EntryPoint = "link", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int Link(string existingPath, string newPath);

    /// <summary><c>copy_file_range(2)</c> with both offsets null (the files' own positions are used and advanced).</summary>
    [LibraryImport("libc", EntryPoint = "copy_file_range", SetLastError = true)]
    internal static partial nint CopyFileRange(int fdIn, nint offIn, int fdOut, nint offOut, nuint length, uint flags);

    /// <summary><c>copy_file_range(2)</c> at explicit offsets (advanced by the call; the files' positions are left alone).</summary>
    [LibraryImport("libc", EntryPoint = "copy_file_range", SetLastError = true)]
    internal static partial nint CopyFileRangeAt(int fdIn, ref long offIn, int fdOut, ref long offOut, nuint length, uint flags);

    [LibraryImport("libc", EntryPoint = "fcntl", SetLastError = true)]
    internal static partial int FcntlLock(int fd, int cmd, ref Flock flock);

    [LibraryImport("libc", EntryPoint = "pread", SetLastError = true)]
    internal static partial nint Pread(int fd, ref byte buffer, nuint count, long offset);

    [LibraryImport("libc", EntryPoint = "pwrite", SetLastError = true)]
    internal static partial nint Pwrite(int fd, ref byte buffer, nuint count, long offset);

    [LibraryImport("libc", EntryPoint = "ftruncate", SetLastError = true)]
    internal static partial int Ftruncate(int fd, long length);

    /// <summary><c>posix_fadvise(2)</c> advice: start reading the range into the page cache now, without waiting.</summary>
    internal const int POSIX_FADV_WILLNEED = 3;

    /// <summary><c>posix_fadvise(2)</c>; returns the error number itself (0 on success), it does not set errno.</summary>
    [LibraryImport("libc", EntryPoint = "posix_fadvise")]
    internal static partial int PosixFadvise(int fd, long offset, long length, int advice);
}
