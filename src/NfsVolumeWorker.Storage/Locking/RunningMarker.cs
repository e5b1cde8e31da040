using System.Globalization;
using NfsVolumeWorker.Storage.Durability;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Shares;

namespace NfsVolumeWorker.Storage.Locking;

/// <summary>
/// A second, independent witness that operations on one volume never overlap, across processes and hosts:
/// while it holds the volume lock, an operation keeps a marker naming its host, process and operation in the
/// content of the lock file itself (<c>.nfsvolumeworker/locks/volume-&lt;id&gt;.lock</c>, which exists for good: no
/// new file per operation), and empties it when it ends. Detection is by content, not by the lock: an operation that
/// wrongly got the lock while another runs still finds that one's marker. Finding a marker of a live process when
/// starting means two operations overlap (the lock failed); a marker of a dead process is what a crash leaves, and
/// is ignored. Workers before this kept the marker in a file of its own, <c>volume-&lt;id&gt;.running</c> beside the
/// lock; during a rolling upgrade one may still run, so that file is looked for too (one lookup, nothing created).
/// </summary>
public static class RunningMarker
{
    /// <summary>Where workers before this one kept the marker (they still write it while an upgrade rolls).</summary>
    public static string LegacyPathFor(Share share, Guid volumeId) => LegacyPathBeside(VolumeLock.PathFor(share, volumeId), volumeId);

    /// <summary>The marker the volume's lock file holds now ("" when none; null when there is no lock file), read
    /// without touching the lock.</summary>
    public static string? Read(Share share, Guid volumeId) => OfdLockFile.ReadNote(VolumeLock.PathFor(share, volumeId));

    /// <summary>"host pid start-time" of this process: the same for its whole life, so read from /proc once, not at
    /// every operation (a uname, and an open, read and close of /proc/self/stat each time).</summary>
    private static readonly Lazy<string> Self = new(() =>
        string.Create(CultureInfo.InvariantCulture, $"{Environment.MachineName} {Environment.ProcessId} {StartTime(Environment.ProcessId)}"));

    /// <summary>Writes this process's marker into the held lock's file; returns the marker of another live operation
    /// found there or in an older worker's <c>.running</c> file, or null.</summary>
    public static string? Enter(VolumeLock held, string operation)
    {
        ArgumentNullException.ThrowIfNull(held);
        var found = held.ReadNote();
        var mine = $"{Self.Value} {operation}";
        held.ReplaceNote(found, mine);
        if (IsLive(found))
        {
            return found;
        }
        return ReadLegacy(LegacyPathBeside(held.FilePath, held.VolumeId)) is { } old && IsLive(old) ? old : null;
    }

    /// <summary>Empties the marker at the end of the operation (no sync: a marker a crash keeps names a dead process).
    /// Never throws: it runs after the operation, whose own result or error is what the caller must see.</summary>
    public static void Exit(VolumeLock held)
    {
        ArgumentNullException.ThrowIfNull(held);
        try
        {
            held.ClearNote();
        }
        catch (Errors.StorageException)
        {
            // The share failed under the operation (which then failed too): a marker left behind names this process,
            // as a .running file an older worker could not delete did.
        }
    }

    private static string LegacyPathBeside(string lockPath, Guid volumeId) =>
        Path.Combine(Path.GetDirectoryName(lockPath)!, VolumeFileNames.Base(volumeId) + ".running");

    /// <summary>An older worker's marker file, or null when there is none (the usual case: one failed lookup).</summary>
    private static string? ReadLegacy(string path)
    {
        if (!File.Exists(path))
        {
            return null;
        }
        try
        {
            DurableFile.EnsureNotSymlink(path);
            return File.ReadAllText(path);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            return null; // its operation ended meanwhile
        }
    }

    /// <summary>True when <paramref name="marker"/> names a process of this host that still runs (same pid and
    /// start time). Markers of other hosts cannot be checked and count as not live.</summary>
    internal static bool IsLive(string marker)
    {
        var parts = marker.Split(' ', 4);
        return parts.Length >= 3 && parts[0] == Environment.MachineName
            && int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var pid)
            && StartTime(pid) is { } started && started == parts[2];
    }

    /// <summary>The process's start time in clock ticks since boot (field 22 of /proc/&lt;pid&gt;/stat), or null
    /// when it does not run (gone, or a zombie).</summary>
    private static string? StartTime(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid.ToString(CultureInfo.InvariantCulture)}/stat");
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            // A zombie (killed, not yet reaped by its parent) holds no lock and runs nothing: it is dead.
            return fields.Length > 19 && fields[0] is not ("Z" or "X") ? fields[19] : null;
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }
}
