using System.Globalization;
using NfsVolumeWorker.Storage.Durability;
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

/// <summary>What one look over a share's inbox found: the volumes with waiting commands, and empty inbox
/// directories to remove (left by a worker of format 1, or by a drainer that died before removing its own).</summary>
/// <param name="Waiting">Volumes with waiting entries, and how many wait in each.</param>
/// <param name="Empty">Empty inbox directories to remove, at most the limit asked for.</param>
/// <param name="EmptyLeft">Empty inbox directories beyond that limit (the next looks remove them).</param>
/// <param name="Leftovers">Removed directories not yet emptied (a crash between the rename and the delete).</param>
public sealed record InboxSurvey(IReadOnlyList<(Guid VolumeId, int Waiting)> Waiting, IReadOnlyList<Guid> Empty, int EmptyLeft, IReadOnlyList<string> Leftovers);

/// <summary>
/// A durable first-in-first-out list of accepted commands per volume, kept on the volume's share under
/// <c>.nfsvolumeworker/inbox/volume-&lt;id&gt;/</c>. A command appended here (atomically, fsynced) is safe:
/// whichever process drains the inbox next runs it, so the message that carried it can be acknowledged
/// at once, however long the operation will take. The payload is opaque to the storage layer.
/// <para>A volume's directory goes once it has been empty for <see cref="IdleGrace"/> (format 2,
/// <see cref="CommandStoreFormat"/>), so the inbox folder holds only volumes with waiting or recent work and a sweep
/// costs nothing per idle volume. Removal is a rename away under both of the directory's locks; an appender or
/// drainer that took a lock on a file that was renamed away meanwhile sees that its lock file is no longer at its
/// name, and starts over in a new directory.</para>
/// </summary>
public static class VolumeInbox
{
    /// <summary>How long an emptied inbox directory stays before a sweep removes it: a volume that gets commands
    /// more often than this keeps its directory and its commands pay no sync for a new one.</summary>
    public static readonly TimeSpan IdleGrace = TimeSpan.FromSeconds(10);

    /// <summary>Empty inbox directories a sweep removes per share: 2,000 clear the 100,000 of a busy format-1 share
    /// in 50 sweeps, each batch a fraction of a second, so the sweep goes on scheduling waiting work meanwhile.</summary>
    public const int RemovalBatch = 2000;

    private const string InboxFolder = "inbox";
    private const string AppendLockName = ".append.lock";
    private const string DrainLockName = ".drain.lock";

    /// <summary>A removed inbox directory on its way out: renamed to this prefix first (atomic), then emptied.</summary>
    private const string RemovedPrefix = ".removed-";

    public static string DirectoryOf(Share share, Guid volumeId) =>
        Path.Combine(share.WorkerDirectory, InboxFolder, VolumeFileNames.Base(volumeId));

    /// <summary>Appends a command unless an entry with the same command id is already waiting.
    /// Returns false for such a duplicate.</summary>
    public static async Task<bool> AppendAsync(Share share, Guid volumeId, Guid commandId, ReadOnlyMemory<byte> payload, UnixFileMode mode, CancellationToken cancellationToken)
    {
        CommandStoreFormat.EnsureReadable(share);
        while (true)
        {
            var dir = EnsureDirectory(share, volumeId);
            // Appenders of one volume take turns so sequence numbers stay in arrival order; the drainer does not take
            // this lock (only the removal of an empty directory does), so a long operation never delays an append.
            using var appendLock = await InboxLock.AcquireAsync(Path.Combine(dir, AppendLockName), cancellationToken).ConfigureAwait(false);
            if (appendLock is null || !appendLock.IsStillInPlace)
            {
                continue; // the drainer removed the directory under us: append into a new one
            }
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
    }

    /// <summary>The waiting entries of a volume in arrival order.</summary>
    public static List<InboxEntry> List(Share share, Guid volumeId)
    {
        var dir = DirectoryOf(share, volumeId);
        var entries = new List<InboxEntry>();
        try
        {
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
        }
        catch (DirectoryNotFoundException)
        {
            // No directory: nothing waits (format 2 removes it when it empties).
        }
        entries.Sort((a, b) => a.Sequence.CompareTo(b.Sequence));
        return entries;
    }

    /// <summary>Removes a finished entry (durably).</summary>
    public static void Remove(InboxEntry entry)
    {
        // No sync: the command's outcome record is durable before its entry goes, so an entry a crash brings back is
        // answered from that record (its event published again if it was not), never run twice.
        DurableFile.TryDelete(entry.Path);
    }

    /// <summary>Takes the right to drain a volume's inbox (one drainer per volume across all processes and
    /// hosts); null when another drainer holds it.</summary>
    public static InboxLock? TryTakeDrain(Share share, Guid volumeId)
    {
        CommandStoreFormat.EnsureReadable(share);
        while (true)
        {
            // A lock is no durable state, so a drainer (an inline run of an idle volume's command) does not sync the
            // directory it creates. An append into it later relies, as the outcome records and overlays do, on the
            // file systems the worker runs on: on ext4, XFS and btrfs the fsync of the entry commits the journal
            // that holds the earlier mkdir, and an NFS server makes a MKDIR stable before it answers.
            var taken = InboxLock.TryAcquire(Path.Combine(EnsureDirectory(share, volumeId, durable: false), DrainLockName), out var directoryGone);
            if (directoryGone)
            {
                continue;
            }
            if (taken is null)
            {
                return null;
            }
            if (taken.IsStillInPlace)
            {
                return taken;
            }
            taken.Dispose(); // locked a directory that was removed meanwhile: the volume's inbox is the new one
        }
    }

    /// <summary>Looks over the share's inbox folder: one directory read, plus one per volume directory that is
    /// there (under format 2 the volumes with waiting work or work in the last <see cref="IdleGrace"/>, and the
    /// directories older workers left until they are removed). Finds at most <paramref name="emptyLimit"/> empty
    /// directories untouched for <paramref name="idleFor"/> to remove.</summary>
    public static InboxSurvey Survey(Share share, int emptyLimit, TimeSpan idleFor)
    {
        ArgumentNullException.ThrowIfNull(share);
        CommandStoreFormat.EnsureReadable(share);
        var waiting = new List<(Guid, int)>();
        var empty = new List<Guid>();
        var leftovers = new List<string>();
        var emptyLeft = 0;
        var idleBefore = DateTime.UtcNow - idleFor;
        var root = Path.Combine(share.WorkerDirectory, InboxFolder);
        if (!Directory.Exists(root))
        {
            return new InboxSurvey(waiting, empty, 0, leftovers);
        }
        foreach (var dir in Directory.EnumerateDirectories(root))
        {
            var name = Path.GetFileName(dir);
            if (name.StartsWith(RemovedPrefix, StringComparison.Ordinal))
            {
                leftovers.Add(dir);
            }
            else if (VolumeFileNames.TryParse(name, out var id, out var kind) && kind == VolumeFileKind.Base)
            {
                var count = CountEntries(dir);
                if (count > 0)
                {
                    waiting.Add((id, count));
                }
                else if (Directory.GetLastWriteTimeUtc(dir) > idleBefore)
                {
                    // Emptied moments ago: its volume may get its next command soon, and a directory kept saves
                    // that command the sync of a new one.
                }
                else if (empty.Count < emptyLimit)
                {
                    empty.Add(id);
                }
                else
                {
                    emptyLeft++;
                }
            }
        }
        return new InboxSurvey(waiting, empty, emptyLeft, leftovers);
    }

    /// <summary>Removes the empty inbox directories a <see cref="Survey"/> found, each only if no drainer or
    /// appender holds it and it is still empty (a busy one is skipped: a later sweep finds it idle). Returns how
    /// many directories went.</summary>
    public static int RemoveEmpty(Share share, InboxSurvey survey)
    {
        ArgumentNullException.ThrowIfNull(survey);
        var removed = 0;
        foreach (var volumeId in survey.Empty)
        {
            var dir = DirectoryOf(share, volumeId);
            var drain = InboxLock.TryAcquire(Path.Combine(dir, DrainLockName), out var gone);
            if (gone || drain is null)
            {
                continue;
            }
            if (!drain.IsStillInPlace)
            {
                drain.Dispose();
                continue;
            }
            var appendLock = InboxLock.TryAcquire(Path.Combine(dir, AppendLockName), out _);
            if (appendLock is null)
            {
                drain.Dispose();
                continue;
            }
            if (RemoveLocked(share, volumeId, drain, appendLock) == true)
            {
                removed++;
            }
        }
        foreach (var leftover in survey.Leftovers)
        {
            DeleteRemoved(leftover);
        }
        return removed;
    }

    /// <summary>Removes a volume's directory unless an entry arrived meanwhile, holding both of its locks: renames it
    /// away (atomic: an appender or drainer now waiting on the old locks sees them moved and starts a new directory),
    /// releases both locks and deletes what is left. No sync: a removal lost in a crash leaves an empty directory,
    /// which a later sweep removes. True: removed; false: entries wait; null: the directory was already gone.
    /// Releases both locks.</summary>
    private static bool? RemoveLocked(Share share, Guid volumeId, InboxLock drain, InboxLock? appendLock)
    {
        string removed;
        try
        {
            if (appendLock is null || !appendLock.IsStillInPlace)
            {
                drain.Dispose();
                return null; // only a drain lock holder removes, and the caller holds it: nothing to do
            }
            if (List(share, volumeId).Count > 0)
            {
                drain.Dispose();
                return false;
            }
            var dir = DirectoryOf(share, volumeId);
            removed = Path.Combine(Path.GetDirectoryName(dir)!, $"{RemovedPrefix}{volumeId:N}-{Guid.NewGuid():N}");
            Directory.Move(dir, removed);
        }
        catch
        {
            drain.Dispose();
            throw;
        }
        finally
        {
            appendLock?.Dispose();
        }
        // Locks closed before their files are deleted: on NFS a file this client still has open is renamed to
        // .nfsXXXX instead of deleted, and the directory would not go.
        drain.Dispose();
        DeleteRemoved(removed);
        return true;
    }

    /// <summary>Deletes a directory renamed away by a removal: its lock files, and the temp file of an appender
    /// that died mid-write (no entry can land here after the rename). One that will not go now (NFS: a lock file
    /// another process of this client still has open) is retried by a later sweep.</summary>
    private static void DeleteRemoved(string dir)
    {
        try
        {
            foreach (var file in Directory.EnumerateFiles(dir))
            {
                DurableFile.TryDelete(file);
            }
            Directory.Delete(dir);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Left for the next sweep.
        }
    }

    private static int CountEntries(string dir)
    {
        try
        {
            return Directory.EnumerateFiles(dir, "*.cmd").Count();
        }
        catch (DirectoryNotFoundException)
        {
            return 0; // removed by its drainer as we looked
        }
    }

    private static string EnsureDirectory(Share share, Guid volumeId, bool durable = true)
    {
        var root = WorkerDirectories.Ensure(share, InboxFolder);
        var dir = Path.Combine(root, VolumeFileNames.Base(volumeId));
        DurableFile.EnsureNotSymlink(dir);
        if (!Directory.Exists(dir))
        {
            // The one sync this layout adds, when a volume gets work after being idle: the new directory's
            // name must be durable before an entry in it is acknowledged.
            CreateDirectoryRacingRemoval(dir);
            if (durable)
            {
                DurableFile.FsyncDirectory(root);
            }
        }
        return dir;
    }

    /// <summary>Makes the directory while an idle sweep may be removing it: .NET's CreateDirectory throws "already
    /// exists" when mkdir found the name taken (the directory, about to be renamed away) and the directory is gone by
    /// the time it looks again. The name is free then: try again. If by the time this looks another appender has
    /// made it again, it is there, as if mkdir had found it.</summary>
    private static void CreateDirectoryRacingRemoval(string dir)
    {
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                Directory.CreateDirectory(dir);
                return;
            }
            catch (IOException) when (attempt < 10 && !File.Exists(dir))
            {
                if (Directory.Exists(dir))
                {
                    return; // made again by a racing appender
                }
                // removed in between: the next mkdir makes it
            }
        }
    }

    private static string FileName(long sequence, Guid commandId) =>
        $"{sequence.ToString("D12", CultureInfo.InvariantCulture)}-{commandId:N}.cmd";
}
