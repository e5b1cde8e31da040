namespace NfsVolumeWorker.Storage.Shares;

/// <summary>The mount a path lives on, from <c>/proc/self/mountinfo</c>.</summary>
/// <param name="MountPoint">Where it is mounted.</param>
/// <param name="FileSystemType">e.g. <c>ext4</c>, <c>xfs</c>, <c>nfs</c> (NFS 2 and 3), <c>nfs4</c> (4.x).</param>
/// <param name="SuperOptions">The file system's own options, e.g. <c>rw,vers=4.2,rsize=…</c>.</param>
public sealed record MountEntry(string MountPoint, string FileSystemType, string SuperOptions)
{
    /// <summary>True for an NFS mount whose protocol has no server-side COPY (before 4.2): there the kernel
    /// still accepts <c>copy_file_range</c>, but reads the data over the wire and writes it back.</summary>
    public bool IsNfsWithoutServerSideCopy =>
        FileSystemType == "nfs" || (FileSystemType == "nfs4" && !SuperOptions.Split(',').Contains("vers=4.2", StringComparer.Ordinal));

    /// <summary>True for a file system served by another machine (NFS, CIFS/SMB3, CephFS), whose own copy runs there.</summary>
    public bool IsNetworkFileSystem => FileSystemType is "nfs" or "nfs4" or "cifs" or "smb3" or "ceph";
}

/// <summary>Reads <c>/proc/self/mountinfo</c>.</summary>
public static class MountTable
{
    /// <summary>The mount holding <paramref name="path"/> (its deepest mount point), or null when it cannot be read.</summary>
    public static MountEntry? Find(string path)
    {
        try
        {
            return Find(Path.GetFullPath(path), File.ReadAllText("/proc/self/mountinfo"));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>The deepest mount whose mount point holds <paramref name="path"/> in <paramref name="mountinfo"/>
    /// (proc(5): <c>id parent major:minor root mount-point options [optional…] - type source super-options</c>).</summary>
    public static MountEntry? Find(string path, string mountinfo)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(mountinfo);
        MountEntry? best = null;
        foreach (var line in mountinfo.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var fields = line.Split(' ');
            var dash = Array.IndexOf(fields, "-");
            if (dash < 5 || dash + 1 >= fields.Length)
            {
                continue;
            }
            var mountPoint = Unescape(fields[4]);
            var holds = path == mountPoint || mountPoint == "/" || path.StartsWith(mountPoint.TrimEnd('/') + "/", StringComparison.Ordinal);
            if (holds && (best is null || mountPoint.Length >= best.MountPoint.Length))
            {
                best = new MountEntry(mountPoint, fields[dash + 1], dash + 3 < fields.Length ? fields[dash + 3] : "");
            }
        }
        return best;
    }

    /// <summary>mountinfo writes space, tab, newline and backslash in paths as octal escapes (<c>\040</c>).</summary>
    private static string Unescape(string field) =>
        field.Replace("\\040", " ", StringComparison.Ordinal).Replace("\\011", "\t", StringComparison.Ordinal)
            .Replace("\\012", "\n", StringComparison.Ordinal).Replace("\\134", "\\", StringComparison.Ordinal);
}
