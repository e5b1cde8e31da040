using System.Diagnostics;
using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Shares;

namespace NfsVolumeWorker.Storage.Locking;

/// <summary>
/// An exclusive lock on one volume, held for the length of one operation: an <see cref="OfdLockFile"/> lock on
/// <c>.nfsvolumeworker/locks/volume-&lt;id&gt;.lock</c> on the share itself. The kernel drops the lock when the
/// holder dies, so a crash never leaves a volume locked.
/// </summary>
public sealed class VolumeLock : IDisposable
{
    private int _fd;

    private VolumeLock(int fd, string path, Guid volumeId)
    {
        _fd = fd;
        FilePath = path;
        VolumeId = volumeId;
    }

    public string FilePath { get; }

    public Guid VolumeId { get; }

    /// <summary>Path of the lock file for <paramref name="volumeId"/> on <paramref name="share"/>.</summary>
    public static string PathFor(Share share, Guid volumeId) =>
        Path.Combine(share.WorkerDirectory, "locks", VolumeFileNames.Base(volumeId) + ".lock");

    /// <summary>
    /// Waits for the lock (polling with back-off, so the wait is cancellable and holds no thread) up to
    /// <paramref name="timeout"/>; then throws <see cref="StorageErrorCode.VolumeBusy"/>.
    /// </summary>
    public static Task<VolumeLock> AcquireAsync(Share share, Guid volumeId, TimeSpan timeout, CancellationToken cancellationToken) =>
        AcquireFileAsync(share, PathFor(share, volumeId), volumeId, timeout,
            () => new StorageException(StorageErrorCode.VolumeBusy,
                $"Volume {volumeId} is busy: another operation has held its lock ({PathFor(share, volumeId)}) for more than {timeout.TotalSeconds:0.#} s.")
            { VolumeId = volumeId }, cancellationToken);

    /// <summary>
    /// The same kind of lock for something that is not a volume (<c>.nfsvolumeworker/locks/&lt;name&gt;.lock</c>),
    /// e.g. which instance serves a Cinder backend's queues. <see cref="StorageErrorCode.VolumeBusy"/> when another
    /// holder keeps it past <paramref name="timeout"/>.
    /// </summary>
    public static Task<VolumeLock> AcquireNamedAsync(Share share, string name, TimeSpan timeout, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(share);
        if (name.Length == 0 || name.StartsWith("volume-", StringComparison.Ordinal) || !name.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '-' or '_' or '@'))
        {
            throw new ArgumentException($"'{name}' is not a lock name (letters, digits, . - _ @; not volume-*)", nameof(name));
        }
        var path = Path.Combine(share.WorkerDirectory, "locks", name + ".lock");
        return AcquireFileAsync(share, path, Guid.Empty, timeout,
            () => new StorageException(StorageErrorCode.VolumeBusy, $"{name} is held by another process ({path})."), cancellationToken);
    }

    private static async Task<VolumeLock> AcquireFileAsync(Share share, string path, Guid volumeId, TimeSpan timeout, Func<StorageException> busy, CancellationToken cancellationToken)
    {
        WorkerDirectories.Ensure(share, "locks");
        var fd = OfdLockFile.Open(path);
        if (fd < 0)
        {
            throw new StorageException(StorageErrorCode.ShareUnavailable, $"Cannot open lock file {path}: its directory is gone.");
        }
        var started = Stopwatch.GetTimestamp();
        var delay = TimeSpan.FromMilliseconds(5);
        try
        {
            while (!OfdLockFile.TryLock(fd, path))
            {
                if (Stopwatch.GetElapsedTime(started) >= timeout)
                {
                    throw busy();
                }
                await Task.Delay(delay, cancellationToken).ConfigureAwait(false);
                delay = TimeSpan.FromMilliseconds(Math.Min(delay.TotalMilliseconds * 2, 200));
            }
            return new VolumeLock(fd, path, volumeId);
        }
        catch
        {
            OfdLockFile.Close(fd);
            throw;
        }
    }

    /// <summary>The note the lock file holds (<see cref="RunningMarker"/> keeps its marker there while the lock is held).</summary>
    internal string ReadNote() => OfdLockFile.ReadNote(Descriptor, FilePath);

    /// <summary>Replaces the lock file's note, <paramref name="previous"/> (as read), with <paramref name="note"/>; no sync.
    /// (Decoding never shortens: an invalid byte reads as U+FFFD, 3 bytes, so the count never misses a byte to cut.)</summary>
    internal void ReplaceNote(string previous, string note) =>
        OfdLockFile.WriteNote(Descriptor, FilePath, note, System.Text.Encoding.UTF8.GetByteCount(previous));

    /// <summary>Empties the lock file's note; no sync.</summary>
    internal void ClearNote() => OfdLockFile.ClearNote(Descriptor, FilePath);

    private int Descriptor => _fd >= 0 ? _fd : throw new ObjectDisposedException(FilePath);

    /// <summary>True when some open file description (this process or another) holds the lock now.</summary>
    public static bool IsHeld(Share share, Guid volumeId) => OfdLockFile.IsHeld(PathFor(share, volumeId));

    public void Dispose()
    {
        var fd = Interlocked.Exchange(ref _fd, -1);
        if (fd >= 0)
        {
            // Closing the last descriptor of the open file description releases the OFD lock.
            OfdLockFile.Close(fd);
        }
    }
}
