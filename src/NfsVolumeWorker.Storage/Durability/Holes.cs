using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace NfsVolumeWorker.Storage.Durability;

/// <summary>Ranges of a file made to read as zeroes without writing them where the file system can (a punched hole).</summary>
public static class Holes
{
    private const int EOPNOTSUPP = 95;
    private const int ENOSYS = 38;
    private const int EINVAL = 22;

    /// <summary>Makes <paramref name="length"/> bytes of <paramref name="file"/> at <paramref name="offset"/> read as
    /// zeroes, keeping the file's size: <c>fallocate(PUNCH_HOLE)</c> (also frees extents shared with another file), or
    /// zeroes written where the file system cannot punch. Not durable until the caller fsyncs the file.</summary>
    public static void Zero(SafeFileHandle file, long offset, long length)
    {
        if (NativeMethods.Fallocate((int)file.DangerousGetHandle(), NativeMethods.FALLOC_FL_PUNCH_HOLE | NativeMethods.FALLOC_FL_KEEP_SIZE, offset, length) == 0)
        {
            return;
        }
        var errno = Marshal.GetLastPInvokeError();
        if (errno is not (EOPNOTSUPP or ENOSYS or EINVAL))
        {
            throw DurableFile.IoError($"punching a hole of {length} bytes at {offset}", errno);
        }
        var zeroes = new byte[(int)Math.Min(length, 1 << 20)];
        for (var done = 0L; done < length; done += zeroes.Length)
        {
            RandomAccess.Write(file, zeroes.AsSpan(0, (int)Math.Min(zeroes.Length, length - done)), offset + done);
        }
    }
}
