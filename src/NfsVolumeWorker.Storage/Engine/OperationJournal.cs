using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using NfsVolumeWorker.Storage.Durability;
using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Locking;
using NfsVolumeWorker.Storage.Shares;

namespace NfsVolumeWorker.Storage.Engine;

/// <summary>The multi-step operations that record their intent before touching the disk.</summary>
public enum PendingOperationKind
{
    DeleteSnapshot,
    CreateVolumeFromSnapshot,
    CloneVolume,
    DeleteVolume,
}

/// <summary>An operation that was started on a volume and has not finished. It is written (atomically)
/// before the operation's first change and removed after its last, so a crash in between is visible
/// to <c>nfsvol check</c> and the next operation on the volume finishes it first. <c>BaseFormat</c> is the base
/// image's format as the request stated it (null: read from the header), so a resumed run never reads a raw
/// volume's guest-written qcow2 header as its own. <c>Merge</c> is a snapshot delete's decision (not an argument of the
/// request): it is made once, before the first change, and a resumed delete follows it.</summary>
public sealed record PendingOperation(
    PendingOperationKind Kind,
    Guid VolumeId,
    Guid? SnapshotId,
    Guid? NewVolumeId,
    string? TargetFormat,
    long? NewSizeBytes,
    string? TargetShare,
    DateTimeOffset StartedAt,
    string? BaseFormat = null,
    MergePlan? Merge = null)
{
    public string Describe() => Kind switch
    {
        PendingOperationKind.DeleteSnapshot => $"delete of snapshot {SnapshotId}",
        PendingOperationKind.CreateVolumeFromSnapshot => $"creation of volume {NewVolumeId} from snapshot {SnapshotId}",
        PendingOperationKind.CloneVolume => $"clone into volume {NewVolumeId}",
        PendingOperationKind.DeleteVolume => "delete of the volume",
        _ => Kind.ToString(),
    };

    /// <summary>Same operation with the same arguments (the start time and the merge decision do not matter).</summary>
    public bool SameAs(PendingOperation other) => this with { StartedAt = default, Merge = null } == other with { StartedAt = default, Merge = null };
}

/// <summary>Journal files under <c>.nfsvolumeworker/journal/</c> on the share, one per volume.</summary>
public static class OperationJournal
{
    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        Converters = { new JsonStringEnumConverter() },
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
    };

    public static string PathFor(Share share, Guid volumeId) =>
        Path.Combine(share.WorkerDirectory, "journal", VolumeFileNames.Base(volumeId) + ".json");

    public static PendingOperation? Read(Share share, Guid volumeId)
    {
        var path = PathFor(share, volumeId);
        DurableFile.EnsureNotSymlink(path);
        if (!File.Exists(path))
        {
            return null;
        }
        try
        {
            var entry = JsonSerializer.Deserialize<PendingOperation>(File.ReadAllText(path), Json);
            return entry is not null && entry.VolumeId == volumeId
                ? entry
                : throw new StorageException(StorageErrorCode.InfoFileCorrupt, $"Journal entry {path} does not describe volume {volumeId}.") { VolumeId = volumeId };
        }
        catch (JsonException e)
        {
            // The journal is written atomically, so this is not a torn write: someone edited it.
            throw new StorageException(StorageErrorCode.InfoFileCorrupt, $"Journal entry {path} is not valid: {e.Message}", e) { VolumeId = volumeId };
        }
    }

    public static void Write(Share share, PendingOperation entry, UnixFileMode mode)
    {
        WorkerDirectories.Ensure(share, "journal");
        DurableFile.WriteAtomically(PathFor(share, entry.VolumeId), Encoding.UTF8.GetBytes(JsonSerializer.Serialize(entry, Json)), mode);
    }

    /// <summary>Removes the volume's entry, and temp files of entry writes a crash interrupted: called under the
    /// volume lock, so no write of this volume's entry is under way. These are the worker's own files in its
    /// dot-directory, never named by an image, unlike temp files beside the volumes (left for <c>nfsvol check</c>).</summary>
    public static void Clear(Share share, Guid volumeId)
    {
        var path = PathFor(share, volumeId);
        var directory = Path.GetDirectoryName(path)!;
        var removed = DurableFile.TryDelete(path);
        if (Directory.Exists(directory))
        {
            foreach (var temp in Directory.EnumerateFiles(directory, "." + Path.GetFileName(path) + ".tmp-*"))
            {
                removed |= DurableFile.TryDelete(temp);
            }
        }
        if (removed)
        {
            DurableFile.FsyncDirectory(directory);
        }
    }

    /// <summary>Every pending entry on a share (for <c>nfsvol check</c>).</summary>
    public static IEnumerable<Guid> VolumesWithEntries(Share share)
    {
        var dir = Path.Combine(share.WorkerDirectory, "journal");
        if (!Directory.Exists(dir))
        {
            yield break;
        }
        foreach (var file in Directory.EnumerateFiles(dir, "volume-*.json"))
        {
            var name = Path.GetFileNameWithoutExtension(file);
            if (VolumeFileNames.TryParse(name, out var id, out var kind) && kind == VolumeFileKind.Base)
            {
                yield return id;
            }
        }
    }
}
