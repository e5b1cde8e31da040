using System.Globalization;
using System.Runtime.InteropServices;
using NfsVolumeWorker.Storage.Durability;
using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Locking;
using NfsVolumeWorker.Storage.Shares;

namespace NfsVolumeWorker.Storage.Inbox;

/// <summary>One accepted command waiting in a volume's inbox.</summary>
/// <param name="Sequence">Position in the volume's inbox (arrival order).</param>
/// <param name="CommandId">The command's id.</param>
/// <param name="Path">The entry's file.</param>
public sealed record InboxEntry(long Sequence, Guid CommandId, string Path)
{
    public byte[] ReadPayload() => File.ReadAllBytes(Path);
}

/// <summary>
/// A durable first-in-first-out list of accepted commands per volume, kept on the volume's share under
/// <c>.nfsvolumeworker/inbox/volume-&lt;id&gt;/</c>. A command appended here (atomically, fsynced) is safe:
/// whichever process drains the inbox next runs it, so the message that carried it can be acknowledged
/// at once, however long the operation will take. The payload is opaque to the storage layer.
/// </summary>
public static class VolumeInbox
{
    private const string InboxFolder = "inbox";

    public static string DirectoryOf(Share share, Guid volumeId) =>
        Path.Combine(share.WorkerDirectory, InboxFolder, VolumeFileNames.Base(volumeId));

    /// <summary>Appends a command unless an entry with the same command id is already waiting.
    /// Returns false for such a duplicate.</summary>
    public static async Task<bool> AppendAsync(Share share, Guid volumeId, Guid commandId, ReadOnlyMemory<byte> payload, UnixFileMode mode, CancellationToken cancellationToken)
    {
        var dir = EnsureDirectory(share, volumeId);
        // Appenders of one volume take turns so sequence numbers stay in arrival order; the drainer does
        // not take this lock, so a long operation never delays an append.
        using var appendLock = await InboxLock.AcquireAsync(Path.Combine(dir, ".append.lock"), cancellationToken).ConfigureAwait(false);
        var entries = List(share, volumeId);
        if (entries.Any(e => e.CommandId == commandId))
        {
            return false;
        }
        var next = entries.Count == 0 ? 1 : entries[^1].Sequence + 1;
        var path = Path.Combine(dir, FileName(next, commandId));
        DurableFile.WriteAtomically(path, payload.Span, mode);
        return true;
    }

    /// <summary>The waiting entries of a volume in arrival order.</summary>
    public static List<InboxEntry> List(Share share, Guid volumeId)
    {
        var dir = DirectoryOf(share, volumeId);
        var entries = new List<InboxEntry>();
        if (!Directory.Exists(dir))
        {
            return entries;
        }
        foreach (var file in Directory.EnumerateFiles(dir, "*.cmd"))
        {
            var name = Path.GetFileNameWithoutExtension(file);
            var dash = name.IndexOf('-', StringComparison.Ordinal);
            if (dash > 0 && long.TryParse(name.AsSpan(0, dash), NumberStyles.None, CultureInfo.InvariantCulture, out var seq)
                && Guid.TryParseExact(name.AsSpan(dash + 1), "N", out var commandId))
            {
                entries.Add(new InboxEntry(seq, commandId, file));
            }
        }
        entries.Sort((a, b) => a.Sequence.CompareTo(b.Sequence));
        return entries;
    }

    /// <summary>Removes a finished entry (durably).</summary>
    public static void Remove(InboxEntry entry)
    {
        if (DurableFile.TryDelete(entry.Path))
        {
            DurableFile.FsyncDirectory(Path.GetDirectoryName(entry.Path)!);
        }
    }

    /// <summary>Volumes on the share that have an inbox with waiting entries.</summary>
    public static IEnumerable<Guid> VolumesWithEntries(Share share)
    {
        var root = Path.Combine(share.WorkerDirectory, InboxFolder);
        if (!Directory.Exists(root))
        {
            yield break;
        }
        foreach (var dir in Directory.EnumerateDirectories(root, VolumeFileNames.Prefix + "*"))
        {
            if (VolumeFileNames.TryParse(Path.GetFileName(dir), out var id, out var kind) && kind == VolumeFileKind.Base
                && Directory.EnumerateFiles(dir, "*.cmd").Any())
            {
                yield return id;
            }
        }
    }

    /// <summary>Volumes on the share with waiting entries, and how many wait in each: the same walk as
    /// <see cref="VolumesWithEntries"/>, counting each volume's entries instead of stopping at the first.</summary>
    public static IEnumerable<(Guid VolumeId, int Waiting)> WaitingCounts(Share share)
    {
        ArgumentNullException.ThrowIfNull(share);
        var root = Path.Combine(share.WorkerDirectory, InboxFolder);
        if (!Directory.Exists(root))
        {
            yield break;
        }
        foreach (var dir in Directory.EnumerateDirectories(root, VolumeFileNames.Prefix + "*"))
        {
            if (VolumeFileNames.TryParse(Path.GetFileName(dir), out var id, out var kind) && kind == VolumeFileKind.Base
                && Directory.EnumerateFiles(dir, "*.cmd").Count() is var waiting and > 0)
            {
                yield return (id, waiting);
            }
        }
    }

    /// <summary>Takes the right to drain a volume's inbox (one drainer per volume across all processes and
    /// hosts); null when another drainer holds it.</summary>
    public static InboxLock? TryTakeDrain(Share share, Guid volumeId)
    {
        var dir = EnsureDirectory(share, volumeId);
        return InboxLock.TryAcquire(Path.Combine(dir, ".drain.lock"));
    }

    private static string EnsureDirectory(Share share, Guid volumeId)
    {
        var root = WorkerDirectories.Ensure(share, InboxFolder);
        var dir = Path.Combine(root, VolumeFileNames.Base(volumeId));
        DurableFile.EnsureNotSymlink(dir);
        if (!Directory.Exists(dir))
        {
            Directory.CreateDirectory(dir);
            DurableFile.FsyncDirectory(root);
        }
        return dir;
    }

    private static string FileName(long sequence, Guid commandId) =>
        $"{sequence.ToString("D12", CultureInfo.InvariantCulture)}-{commandId:N}.cmd";
}

/// <summary>An OFD lock on a file in an inbox directory (same mechanism as <see cref="VolumeLock"/>).</summary>
public sealed class InboxLock : IDisposable
{
    private int _fd;

    private InboxLock(int fd) => _fd = fd;

    internal static InboxLock? TryAcquire(string path)
    {
        var fd = OpenLockFile(path);
        var flock = new NativeMethods.Flock { l_type = NativeMethods.F_WRLCK };
        if (NativeMethods.FcntlLock(fd, NativeMethods.F_OFD_SETLK, ref flock) == 0)
        {
            return new InboxLock(fd);
        }
        var errno = Marshal.GetLastPInvokeError();
        _ = NativeMethods.Close(fd);
        return errno is NativeMethods.EAGAIN or NativeMethods.EACCES ? null : throw DurableFile.IoError($"lock of {path}", errno);
    }

    internal static async Task<InboxLock> AcquireAsync(string path, CancellationToken cancellationToken)
    {
        var delay = 1;
        while (true)
        {
            if (TryAcquire(path) is { } taken)
            {
                return taken;
            }
            await Task.Delay(delay, cancellationToken).ConfigureAwait(false);
            delay = Math.Min(delay * 2, 50);
        }
    }

    private static int OpenLockFile(string path)
    {
        var fd = NativeMethods.Open(path, NativeMethods.O_RDWR | NativeMethods.O_CREAT | NativeMethods.O_NOFOLLOW | NativeMethods.O_CLOEXEC, Convert.ToInt32("660", 8));
        return fd >= 0 ? fd : throw new StorageException(StorageErrorCode.ShareUnavailable,
            $"Cannot open inbox lock {path} (errno {Marshal.GetLastPInvokeError()}).");
    }

    public void Dispose()
    {
        var fd = Interlocked.Exchange(ref _fd, -1);
        if (fd >= 0)
        {
            _ = NativeMethods.Close(fd);
        }
    }
}
