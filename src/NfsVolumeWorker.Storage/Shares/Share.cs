namespace NfsVolumeWorker.Storage.Shares;

/// <summary>A share as Cinder names it (<c>host:/export</c>) and the local directory that holds its files.</summary>
/// <param name="Export">The share as Cinder and callers name it, e.g. <c>192.0.2.10:/export</c>, or a local path.</param>
/// <param name="LocalPath">Absolute directory where the share is mounted (<c>&lt;mount base&gt;/&lt;md5hex(export)&gt;</c> by default).</param>
/// <param name="MountOptions">Mount options from the shares file, passed on in connection info; may be null.</param>
public sealed record Share(string Export, string LocalPath, string? MountOptions)
{
    /// <summary>The worker's own directory on the share (locks, journal). Cinder never looks at dot-files.</summary>
    public const string WorkerDirectoryName = ".nfsvolumeworker";

    public string WorkerDirectory => Path.Combine(LocalPath, WorkerDirectoryName);

    /// <summary>True when <see cref="LocalPath"/> must be a mount point to count as available (a Cinder share
    /// with <see cref="SharesOptions.RequireMountedShares"/>); see <see cref="ShareMarker"/>.</summary>
    public bool MustBeMounted { get; init; }

    /// <summary>Full path of a file of this share from a bare name produced by <see cref="Layout.VolumeFileNames"/>.</summary>
    public string PathOf(string fileName)
    {
        // Names come from templates, but a name read from an .info file or a header passes here too:
        // refuse anything that is not a single plain path segment.
        if (fileName.Length == 0 || fileName.Contains('/', StringComparison.Ordinal) || fileName is "." or ".." || fileName.Contains('\0', StringComparison.Ordinal))
        {
            throw new Errors.StorageException(Errors.StorageErrorCode.UnsafePath,
                $"'{fileName}' is not a plain file name inside share {Export}.");
        }
        return Path.Combine(LocalPath, fileName);
    }
}
