using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using NfsVolumeWorker.Storage.Errors;

namespace NfsVolumeWorker.Storage.Durability;

/// <summary>
/// Copies a file by sharing its extents (<c>ioctl(FICLONE)</c>, what <c>cp --reflink=always</c> does): the copy
/// costs metadata, not data, and later writes to either file are copy-on-write, so neither ever sees the other's.
/// XFS made with <c>reflink=1</c>, btrfs, and NFS 4.2 (<c>CLONE</c>) where the server's file system offers it.
/// </summary>
public static class ExtentSharing
{
    private const int EOPNOTSUPP = 95;
    private const int EXDEV = 18;
    private const int EINVAL = 22;
    private const int ENOTTY = 25;

    /// <summary>Creates <paramref name="target"/> (which must not exist) sharing every extent of
    /// <paramref name="source"/>. False, with no target left behind, when the file system cannot share extents
    /// between these two files; throws on any other error.</summary>
    public static bool TryClone(string source, string target, UnixFileMode mode)
    {
        using var from = File.OpenHandle(source, FileMode.Open, FileAccess.Read);
        var shared = false;
        var to = new FileStream(target, new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, UnixCreateMode = mode, BufferSize = 0 });
        try
        {
            if (NativeMethods.IoctlInt((int)to.SafeFileHandle.DangerousGetHandle(), NativeMethods.FICLONE, (int)from.DangerousGetHandle()) == 0)
            {
                shared = true;
                return true;
            }
            var errno = Marshal.GetLastPInvokeError();
            return errno is EOPNOTSUPP or EXDEV or EINVAL or ENOTTY
                ? false
                : throw DurableFile.IoError($"FICLONE of {source} to {target}", errno);
        }
        finally
        {
            to.Dispose();
            if (!shared)
            {
                DurableFile.TryDelete(target);
            }
        }
    }

    /// <summary>Makes <paramref name="length"/> bytes of <paramref name="target"/> at <paramref name="targetOffset"/>
    /// share the extents of <paramref name="source"/> at <paramref name="sourceOffset"/> (<c>ioctl(FICLONERANGE)</c>):
    /// metadata only, the range's former contents in the target are replaced. False, with the target unchanged, when
    /// the file system cannot share this range (offsets or length not on its block size, no reflink, another file
    /// system); throws on any other error.</summary>
    public static bool TryCloneRange(SafeFileHandle source, long sourceOffset, SafeFileHandle target, long targetOffset, long length)
    {
        var range = new NativeMethods.FileCloneRange
        {
            src_fd = source.DangerousGetHandle(),
            src_offset = (ulong)sourceOffset,
            src_length = (ulong)length,
            dest_offset = (ulong)targetOffset,
        };
        if (NativeMethods.IoctlCloneRange((int)target.DangerousGetHandle(), NativeMethods.FICLONERANGE, ref range) == 0)
        {
            return true;
        }
        var errno = Marshal.GetLastPInvokeError();
        return errno is EOPNOTSUPP or EXDEV or EINVAL or ENOTTY
            ? false
            : throw DurableFile.IoError($"FICLONERANGE of {length} bytes at {sourceOffset} to {targetOffset}", errno);
    }
}
