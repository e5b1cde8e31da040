using NfsVolumeWorker.Storage.Errors;

namespace NfsVolumeWorker.Storage.Info;

/// <summary>
/// Reads and writes Cinder's <c>.info</c> file. Writes are byte-identical to Python's
/// <c>json.dump(info, f, indent=1, sort_keys=True)</c> and atomic (temp file, fsync, rename, fsync dir).
/// </summary>
public static class InfoFile
{
    /// <summary>Reads <paramref name="path"/>; null when the file does not exist. Throws
    /// <see cref="StorageErrorCode.InfoFileCorrupt"/> for an empty, truncated or malformed file and
    /// <see cref="StorageErrorCode.UnsafePath"/> when the path is a symbolic link.</summary>
    public static VolumeInfo? Read(string path) => throw new NotImplementedException();

    /// <summary>Parses the text of an info file (structure only: an object with a string <c>active</c>
    /// and UUID keys with string values).</summary>
    public static VolumeInfo Parse(string json, string pathForErrors) => throw new NotImplementedException();

    /// <summary>The exact text Python's json.dump would write for this info.</summary>
    public static string Serialize(VolumeInfo info) => throw new NotImplementedException();

    /// <summary>Writes atomically and durably, with <paramref name="mode"/> permissions.</summary>
    public static void Write(string path, VolumeInfo info, UnixFileMode mode) => throw new NotImplementedException();
}
