using System.Globalization;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Shares;

namespace NfsVolumeWorker.Storage.Locking;

/// <summary>
/// A second, independent witness that operations on one volume never overlap, across processes and hosts:
/// while it holds the volume lock, an operation keeps a marker <c>.nfsvolumeworker/locks/volume-&lt;id&gt;.running</c> (next to the lock it belongs to)
/// naming its host, process and operation. Finding a marker of a live process when starting means two
/// operations overlap (the lock failed); a marker of a dead process is what a crash leaves, and is ignored.
/// </summary>
public static class RunningMarker
{
    private const string Folder = "locks";

    public static string PathFor(Share share, Guid volumeId) => Path.Combine(share.WorkerDirectory, Folder, VolumeFileNames.Base(volumeId) + ".running");

    /// <summary>Writes this process's marker; returns the marker of another live operation found there, or null.</summary>
    public static string? Enter(Share share, Guid volumeId, string operation)
    {
        WorkerDirectories.Ensure(share, Folder);
        var path = PathFor(share, volumeId);
        var mine = string.Create(CultureInfo.InvariantCulture, $"{Environment.MachineName} {Environment.ProcessId} {StartTime(Environment.ProcessId)} {operation}");
        try
        {
            using var created = new FileStream(path, new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write });
            created.Write(System.Text.Encoding.UTF8.GetBytes(mine));
            return null;
        }
        catch (IOException) when (File.Exists(path))
        {
            string existing;
            try
            {
                existing = File.ReadAllText(path);
            }
            catch (FileNotFoundException)
            {
                existing = "";
            }
            File.WriteAllText(path, mine);
            return IsLive(existing) ? existing : null;
        }
    }

    /// <summary>Removes the marker at the end of the operation.</summary>
    public static void Exit(Share share, Guid volumeId)
    {
        try
        {
            File.Delete(PathFor(share, volumeId));
        }
        catch (IOException)
        {
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
