using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace NfsVolumeWorker.Storage.Durability;

/// <summary>
/// Copying inside the file system (<c>copy_file_range(2)</c>): the data does not pass through this process. On NFS 4.2
/// the client turns it into a server-side <c>COPY</c> (no data over the wire); on a local file system the kernel
/// copies in place (ext4, tmpfs) or shares extents (XFS, btrfs). qemu-img uses it with <c>convert -C</c>.
/// </summary>
public static class ServerSideCopy
{
    private const int EXDEV = 18;
    private const int EINVAL = 22;
    private const int ENOSYS = 38;
    private const int EOPNOTSUPP = 95;

    /// <summary>Copies <paramref name="length"/> bytes from the start of <paramref name="source"/> to the start of
    /// <paramref name="target"/> (both open, same file system) with <c>copy_file_range</c>. False when the file
    /// system or kernel does not offer it for these files (or copies less); throws on any other error.</summary>
    public static bool TryCopyRange(string source, string target, int length)
    {
        using var from = File.OpenHandle(source, FileMode.Open, FileAccess.Read);
        using var to = File.OpenHandle(target, FileMode.Open, FileAccess.Write);
        long copied = 0;
        while (copied < length)
        {
            var n = NativeMethods.CopyFileRange((int)from.DangerousGetHandle(), 0, (int)to.DangerousGetHandle(), 0, (nuint)(length - copied), 0);
            if (n < 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                return errno is EXDEV or EINVAL or ENOSYS or EOPNOTSUPP
                    ? false
                    : throw DurableFile.IoError($"copy_file_range of {source} to {target}", errno);
            }
            if (n == 0)
            {
                return false; // nothing copied before the end: not a copy this file system makes
            }
            copied += n;
        }
        return true;
    }

    /// <summary>Copies <paramref name="length"/> bytes of <paramref name="source"/> at <paramref name="sourceOffset"/>
    /// into <paramref name="target"/> at <paramref name="targetOffset"/>: with <c>copy_file_range</c> where the kernel
    /// offers it for these files, otherwise (or for what it leaves) by reading and writing. Not durable until the
    /// caller fsyncs the target.</summary>
    public static void CopyRange(SafeFileHandle source, long sourceOffset, SafeFileHandle target, long targetOffset, long length)
    {
        var (from, to, end) = (sourceOffset, targetOffset, sourceOffset + length);
        while (from < end)
        {
            var n = NativeMethods.CopyFileRangeAt((int)source.DangerousGetHandle(), ref from, (int)target.DangerousGetHandle(), ref to,
                (nuint)Math.Min(end - from, 1L << 30), 0);
            if (n > 0)
            {
                continue; // both offsets were advanced by the call
            }
            var errno = n < 0 ? Marshal.GetLastPInvokeError() : 0;
            if (n < 0 && errno is not (EXDEV or EINVAL or ENOSYS or EOPNOTSUPP))
            {
                throw DurableFile.IoError($"copy_file_range of {end - from} bytes at {from} to {to}", errno);
            }
            ReadAndWrite(source, from, target, to, end - from);
            return;
        }
    }

    private static void ReadAndWrite(SafeFileHandle source, long from, SafeFileHandle target, long to, long length)
    {
        var buffer = new byte[(int)Math.Min(length, 1 << 20)];
        for (var done = 0L; done < length;)
        {
            var n = RandomAccess.Read(source, buffer.AsSpan(0, (int)Math.Min(buffer.Length, length - done)), from + done);
            if (n == 0)
            {
                // Past the source's end: the rest reads as zeroes, as qemu reads a file's tail.
                Array.Clear(buffer);
                n = (int)Math.Min(buffer.Length, length - done);
            }
            RandomAccess.Write(target, buffer.AsSpan(0, n), to + done);
            done += n;
        }
    }
}
