using NfsVolumeWorker.Storage.Durability;
using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Storage.Info;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Qcow2;
using NfsVolumeWorker.Storage.Shares;

namespace NfsVolumeWorker.Storage.Chains;

/// <summary>
/// Reads a volume's chain from its <c>.info</c> file and the image headers (no qemu-img process), and
/// enforces the security rules on the way: only files of the same volume in the same directory, never a
/// symlink, explicit backing formats (so qemu-img never probes a raw image), no encryption, no external
/// data files.
/// </summary>
public static class VolumeChainReader
{
    // dirty, corrupt, external data file, compression type, extended L2 (qemu 7.2's set).
    private const ulong KnownIncompatibleFeatures = 0x1F;

    /// <summary>Reads the chain. Security violations and an unreadable chain throw; softer inconsistencies
    /// (an info entry outside the chain, an unrecorded overlay) are listed in <see cref="VolumeChain.Problems"/>.</summary>
    /// <param name="share">The share holding the volume.</param>
    /// <param name="volumeId">The volume.</param>
    /// <param name="baseFormat">The base image's format when the caller knows it (a raw volume is then never
    /// taken for qcow2 because of what a guest wrote into it); null to read it from the header.</param>
    public static VolumeChain Read(Share share, Guid volumeId, ImageFormat? baseFormat = null) =>
        Read(share, volumeId, ReadInfo(share, volumeId), baseFormat);

    /// <summary>Reads the chain that <paramref name="info"/> (from <see cref="ReadInfo"/>, under the same volume lock)
    /// names: the caller read the .info file already, and on NFS each read of it is a round trip.</summary>
    internal static VolumeChain Read(Share share, Guid volumeId, VolumeInfo? info, ImageFormat? baseFormat)
    {
        if (info is not null)
        {
            // Every image the .info names and the base, before the walk reads their headers one by one (each names
            // the next): with a cold cache that is one disk round trip for all, not one per image.
            ImageHeaderReader.Prefetch(info.Snapshots.Values.Prepend(info.Active).Append(VolumeFileNames.Base(volumeId))
                .Distinct(StringComparer.Ordinal).Select(share.PathOf));
        }
        var activeName = info?.Active ?? VolumeFileNames.Base(volumeId);
        var images = new List<ChainImage>();
        var headers = new Dictionary<string, ImageHeader>(StringComparer.Ordinal);
        var problems = new List<string>();
        var visited = new HashSet<string>(StringComparer.Ordinal);
        var name = activeName;
        ImageFormat? formatFromAbove = null;
        string? above = null;

        while (true)
        {
            var path = share.PathOf(name);
            DurableFile.EnsureNotSymlink(path);
            if (!File.Exists(path))
            {
                if (above is null && info is null)
                {
                    throw new StorageException(StorageErrorCode.VolumeNotFound, $"Volume {volumeId} has no files on {share.Export} ({path} does not exist).") { VolumeId = volumeId };
                }
                var why = above is null
                    ? $"the active file {name} named by the .info file does not exist"
                    : $"{above} names backing file {name}, which does not exist";
                throw new StorageException(StorageErrorCode.ChainBroken, $"Volume {volumeId} on {share.Export}: {why}. Run 'nfsvol check' for a diagnosis.") { VolumeId = volumeId };
            }

            var header = ImageHeaderReader.Read(path);
            var isBaseName = name == VolumeFileNames.Base(volumeId);
            var format = formatFromAbove ?? FormatOfTop(header, name, isBaseName, baseFormat, volumeId);
            var image = Describe(volumeId, name, path, header, format, above);
            images.Add(image with { SnapshotId = SnapshotOf(info, name) });
            headers[name] = header;

            if (image.BackingFile is null)
            {
                break;
            }
            if (!visited.Add(name) || visited.Contains(image.BackingFile))
            {
                throw new StorageException(StorageErrorCode.ChainBroken, $"Volume {volumeId}: the backing chain loops at {image.BackingFile}.") { VolumeId = volumeId };
            }
            above = name;
            name = image.BackingFile;
            formatFromAbove = image.BackingFormat;
        }

        if (images[^1].FileName != VolumeFileNames.Base(volumeId))
        {
            problems.Add($"the chain ends at {images[^1].FileName}, not at {VolumeFileNames.Base(volumeId)}");
        }
        if (info is not null)
        {
            foreach (var (snapshotId, overlay) in info.Snapshots.OrderBy(kv => kv.Value, StringComparer.Ordinal))
            {
                if (images.All(i => i.FileName != overlay))
                {
                    problems.Add(File.Exists(share.PathOf(overlay))
                        ? $"snapshot {snapshotId}'s overlay {overlay} is not in the active chain (an interrupted delete, or a stale snapshot)"
                        : $"snapshot {snapshotId}'s overlay {overlay} does not exist");
                }
            }
        }
        foreach (var image in images)
        {
            if (image.FileName != VolumeFileNames.Base(volumeId) && image.SnapshotId is null)
            {
                problems.Add($"{image.FileName} is in the chain but no snapshot in the .info file names it");
            }
        }
        return new VolumeChain(share, volumeId, info, images, problems, headers);
    }

    /// <summary>Reads and validates the .info file: every name in it must be a file of this volume.</summary>
    public static VolumeInfo? ReadInfo(Share share, Guid volumeId)
    {
        var infoPath = share.PathOf(VolumeFileNames.Info(volumeId));
        var info = InfoFile.Read(infoPath);
        if (info is null)
        {
            return null;
        }
        foreach (var name in info.Snapshots.Values.Prepend(info.Active))
        {
            if (!VolumeFileNames.IsImageOf(volumeId, name))
            {
                throw new StorageException(StorageErrorCode.InfoFileCorrupt,
                    $"{infoPath} names '{name}', which is not a file of volume {volumeId} in the share directory; refusing to follow it.") { VolumeId = volumeId };
            }
        }
        return info;
    }

    private static ImageFormat FormatOfTop(ImageHeader header, string name, bool isBaseName, ImageFormat? baseFormat, Guid volumeId)
    {
        if (!isBaseName)
        {
            // Overlays are always qcow2 (Cinder creates them so); anything else is not an overlay.
            return header.Kind == ImageKind.Qcow2
                ? ImageFormat.Qcow2
                : throw new StorageException(StorageErrorCode.ImageCorrupt, $"{name} is the active overlay of volume {volumeId} but has no qcow2 header.") { VolumeId = volumeId };
        }
        if (baseFormat is { } known)
        {
            return known;
        }
        return header.Kind switch
        {
            ImageKind.Qcow2 => ImageFormat.Qcow2,
            ImageKind.Luks => throw Encrypted(volumeId, name),
            _ => ImageFormat.Raw,
        };
    }

    private static ChainImage Describe(Guid volumeId, string name, string path, ImageHeader header, ImageFormat format, string? above)
    {
        if (format == ImageFormat.Raw)
        {
            if (header.Kind == ImageKind.Luks)
            {
                throw Encrypted(volumeId, name);
            }
            return new ChainImage(name, ImageFormat.Raw, header.FileLength, null, null, null, false);
        }
        if (header.Kind != ImageKind.Qcow2 || header.Qcow2 is null)
        {
            var who = above is null ? "its header" : above;
            throw new StorageException(StorageErrorCode.ImageCorrupt, $"{path} should be qcow2 (per {who}) but has no qcow2 header.") { VolumeId = volumeId };
        }
        var q = header.Qcow2;
        if (q.IsEncrypted)
        {
            throw Encrypted(volumeId, name);
        }
        if (q.HasExternalDataFile)
        {
            throw new StorageException(StorageErrorCode.UnsupportedFormat, $"{path} keeps its data in an external file; the engine refuses such images.") { VolumeId = volumeId };
        }
        if ((q.IncompatibleFeatures & ~KnownIncompatibleFeatures) != 0)
        {
            throw new StorageException(StorageErrorCode.UnsupportedFormat, $"{path} uses qcow2 features this engine does not know (incompatible bits 0x{q.IncompatibleFeatures:x}).") { VolumeId = volumeId };
        }
        if (q.IsCorrupt)
        {
            throw new StorageException(StorageErrorCode.ImageCorrupt, $"{path} is marked corrupt by qemu; run 'qemu-img check' on it.") { VolumeId = volumeId };
        }
        ImageFormat? backingFormat = null;
        if (q.BackingFile is { } backing)
        {
            if (!VolumeFileNames.IsImageOf(volumeId, backing))
            {
                throw new StorageException(StorageErrorCode.InvalidBackingFile,
                    $"{path} names backing file '{Printable(backing)}', which is not a file of volume {volumeId} in the same directory; refusing it (a guest can write such a header into a raw volume).") { VolumeId = volumeId };
            }
            if (!ImageFormatNames.TryParse(q.BackingFormat, out var bf))
            {
                throw new StorageException(StorageErrorCode.InvalidBackingFile,
                    $"{path} records no usable backing format ('{Printable(q.BackingFormat)}'); qemu-img would probe {backing}, so the engine refuses it.") { VolumeId = volumeId };
            }
            backingFormat = bf;
        }
        return new ChainImage(name, ImageFormat.Qcow2, (long)q.VirtualSize, q.BackingFile, backingFormat, null, q.IsDirty);
    }

    private static Guid? SnapshotOf(VolumeInfo? info, string fileName) =>
        info?.Snapshots.Where(kv => kv.Value == fileName).Select(kv => (Guid?)kv.Key).FirstOrDefault();

    private static StorageException Encrypted(Guid volumeId, string name) => new(StorageErrorCode.VolumeEncrypted,
        $"{name} of volume {volumeId} is encrypted; there is no key manager here, so the engine does not touch it.") { VolumeId = volumeId };

    private static string Printable(string? s) => s is null ? "(none)" : s.Length > 120 ? s[..120] + "..." : s;
}
