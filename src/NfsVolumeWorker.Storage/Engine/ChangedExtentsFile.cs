using System.Text.Json;
using NfsVolumeWorker.Storage.Durability;
using NfsVolumeWorker.Storage.Locking;
using NfsVolumeWorker.Storage.Shares;

namespace NfsVolumeWorker.Storage.Engine;

/// <summary>A long list of changed extents, kept on the share where an event would be too large:
/// <c>.nfsvolumeworker/extents/&lt;id&gt;.json</c>, a JSON array of <c>{"offset","length"}</c>, written atomically.</summary>
public static class ChangedExtentsFile
{
    private const string Folder = "extents";
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    /// <summary>Writes the list for <paramref name="id"/> (a command id) and returns its path relative to the share.</summary>
    public static string Write(Share share, Guid id, IReadOnlyList<ByteRange> extents, UnixFileMode mode)
    {
        ArgumentNullException.ThrowIfNull(share);
        var dir = WorkerDirectories.Ensure(share, Folder);
        var name = $"{id:N}.json";
        DurableFile.WriteAtomically(Path.Combine(dir, name), JsonSerializer.SerializeToUtf8Bytes(extents, Json), mode);
        return $"{Share.WorkerDirectoryName}/{Folder}/{name}";
    }
}
