using System.Runtime.InteropServices;

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
}
