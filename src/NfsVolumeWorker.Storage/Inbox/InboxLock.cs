using NfsVolumeWorker.Storage.Locking;

namespace NfsVolumeWorker.Storage.Inbox;

/// <summary>An <see cref="OfdLockFile"/> lock on a file in a volume's inbox directory (the drain lock, the append lock).</summary>
public sealed class InboxLock : IDisposable
{
    private readonly string _path;
    private int _fd;

    private InboxLock(int fd, string path)
    {
        _fd = fd;
        _path = path;
    }

    /// <summary>True while the locked file is still the one at its name: false once a drainer renamed its
    /// directory away (then the lock guards nothing).</summary>
    internal bool IsStillInPlace => Volatile.Read(ref _fd) is var fd and >= 0 && OfdLockFile.IsStillAt(fd, _path);

    /// <summary>Null when another holds the lock, or (<paramref name="directoryGone"/>) when the directory is not there.</summary>
    internal static InboxLock? TryAcquire(string path, out bool directoryGone)
    {
        var fd = OfdLockFile.Open(path);
        directoryGone = fd < 0;
        if (directoryGone)
        {
            return null;
        }
        if (OfdLockFile.TryLock(fd, path))
        {
            return new InboxLock(fd, path);
        }
        OfdLockFile.Close(fd);
        return null;
    }

    /// <summary>Waits for the lock; null when the directory is not there (or went while waiting).</summary>
    internal static async Task<InboxLock?> AcquireAsync(string path, CancellationToken cancellationToken)
    {
        var fd = OfdLockFile.Open(path);
        if (fd < 0)
        {
            return null;
        }
        try
        {
            var delay = 1;
            while (!OfdLockFile.TryLock(fd, path))
            {
                await Task.Delay(delay, cancellationToken).ConfigureAwait(false);
                delay = Math.Min(delay * 2, 50);
            }
            return new InboxLock(fd, path);
        }
        catch
        {
            OfdLockFile.Close(fd);
            throw;
        }
    }

    public void Dispose()
    {
        var fd = Interlocked.Exchange(ref _fd, -1);
        if (fd >= 0)
        {
            OfdLockFile.Close(fd);
        }
    }
}
