using System.Runtime.InteropServices;

namespace NfsVolumeWorker.Storage.Durability;

/// <summary>Owner and allocation of files (stat), and giving a new file the owner of the file it derives from.</summary>
public static partial class FileOwnership
{
    // struct stat on x86_64 / aarch64 glibc is 144 / 128 bytes; read fields at their x86_64 offsets.
    private const int StatBufferSize = 256;
    private const int UidOffset = 28;
    private const int GidOffset = 32;
    private const int BlocksOffset = 64;
    private const int InodeOffset = 8;
    private const int DeviceOffset = 0;

    /// <summary>True when this process runs as root (then new files get the owner of their source, as Cinder's chown --reference).</summary>
    public static bool IsRoot => GetEuid() == 0;

    /// <summary>Bytes allocated on disk for <paramref name="path"/> (st_blocks × 512): what a sparse file really costs.</summary>
    public static long AllocatedBytes(string path)
    {
        var buffer = Stat(path);
        return BitConverter.ToInt64(buffer, BlocksOffset) * 512;
    }

    /// <summary>The inode number of <paramref name="path"/> (not following a symlink), or null when it does not
    /// exist or cannot be reached. Stable for a file across remounts of its file system (NFS: the fileid).</summary>
    public static ulong? InodeOf(string path)
    {
        var buffer = new byte[StatBufferSize];
        return LStat(path, buffer) == 0 ? BitConverter.ToUInt64(buffer, InodeOffset) : null;
    }

    /// <summary>Device and inode of <paramref name="path"/> (not following a symlink), or null when it is not there.</summary>
    internal static (ulong Device, ulong Inode)? IdentityOf(string path)
    {
        var buffer = new byte[StatBufferSize];
        return LStat(path, buffer) == 0 ? (BitConverter.ToUInt64(buffer, DeviceOffset), BitConverter.ToUInt64(buffer, InodeOffset)) : null;
    }

    /// <summary>Device and inode of an open descriptor, or null when it cannot be read (NFS: ESTALE once another
    /// client removed the file).</summary>
    internal static (ulong Device, ulong Inode)? IdentityOf(int fd)
    {
        var buffer = new byte[StatBufferSize];
        return FStat(fd, buffer) == 0 ? (BitConverter.ToUInt64(buffer, DeviceOffset), BitConverter.ToUInt64(buffer, InodeOffset)) : null;
    }

    /// <summary>True when <paramref name="directory"/> is the root of a mounted file system: on another device
    /// than its parent (what <c>mountpoint(1)</c> checks, bind mounts of the same file system aside).</summary>
    public static bool IsMountPoint(string directory)
    {
        var full = Path.GetFullPath(directory).TrimEnd('/');
        var parent = Path.GetDirectoryName(full);
        if (parent is null)
        {
            return true; // "/"
        }
        var a = new byte[StatBufferSize];
        var b = new byte[StatBufferSize];
        return LStat(full, a) == 0 && LStat(parent, b) == 0
            && BitConverter.ToUInt64(a, DeviceOffset) != BitConverter.ToUInt64(b, DeviceOffset);
    }

    /// <summary>Gives <paramref name="path"/> the owner and group of <paramref name="reference"/> when running as root.</summary>
    public static void CopyOwner(string reference, string path)
    {
        if (!IsRoot || !RuntimeInformation.ProcessArchitecture.Equals(Architecture.X64))
        {
            return;
        }
        var r = Stat(reference);
        var p = Stat(path);
        var uid = BitConverter.ToUInt32(r, UidOffset);
        var gid = BitConverter.ToUInt32(r, GidOffset);
        if (uid == BitConverter.ToUInt32(p, UidOffset) && gid == BitConverter.ToUInt32(p, GidOffset))
        {
            return;
        }
        if (LChown(path, uid, gid) != 0)
        {
            throw DurableFile.IoError($"chown of {path}", Marshal.GetLastPInvokeError());
        }
    }

    private static byte[] Stat(string path)
    {
        var buffer = new byte[StatBufferSize];
        if (LStat(path, buffer) != 0)
        {
            throw DurableFile.IoError($"stat of {path}", Marshal.GetLastPInvokeError());
        }
        return buffer;
    }

    [LibraryImport("libc", EntryPoint = "geteuid")]
    private static partial uint GetEuid();

    [LibraryImport("libc", EntryPoint = "lstat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int LStat(string path, [Out] byte[] buffer);

    [LibraryImport("libc", EntryPoint = "fstat", SetLastError = true)]
    private static partial int FStat(int fd, [Out] byte[] buffer);

    [LibraryImport("libc", EntryPoint = "lchown", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int LChown(string path, uint owner, uint group);
}
