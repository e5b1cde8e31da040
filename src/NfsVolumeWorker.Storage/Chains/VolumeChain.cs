using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Storage.Info;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Qcow2;
using NfsVolumeWorker.Storage.Shares;

namespace NfsVolumeWorker.Storage.Chains;

/// <summary>
/// A volume's state as read from the share: the <c>.info</c> file and the chain of images from the
/// active one down to the base, each described by its header. Immutable: an operation reads it, changes
/// the disk, and reads it again.
/// </summary>
public sealed class VolumeChain
{
    private readonly IReadOnlyDictionary<string, ImageHeader> _headers;

    internal VolumeChain(Share share, Guid volumeId, VolumeInfo? info, IReadOnlyList<ChainImage> images, IReadOnlyList<string> problems, IReadOnlyDictionary<string, ImageHeader> headers)
    {
        Share = share;
        VolumeId = volumeId;
        InfoOnDisk = info;
        Images = images;
        Problems = problems;
        _headers = headers;
    }

    public Share Share { get; }

    public Guid VolumeId { get; }

    /// <summary>The <c>.info</c> file as read; null when there is none (no snapshot was ever taken).</summary>
    public VolumeInfo? InfoOnDisk { get; }

    /// <summary>The info in effect: the file's content, or Cinder's default (<c>active = volume-&lt;id&gt;</c>).</summary>
    public VolumeInfo Info => InfoOnDisk ?? VolumeInfo.ActiveOnly(VolumeFileNames.Base(VolumeId));

    /// <summary>Images from the active one (index 0) down to the base.</summary>
    public IReadOnlyList<ChainImage> Images { get; }

    /// <summary>Inconsistencies between <c>.info</c> and the headers, in words; empty for a healthy chain.</summary>
    public IReadOnlyList<string> Problems { get; }

    public ChainImage Active => Images[0];

    public ChainImage Base => Images[^1];

    public bool HasSnapshots => Info.Snapshots.Count > 0;

    public string PathOf(string fileName) => Share.PathOf(fileName);

    public ChainImage? Find(string fileName) => Images.FirstOrDefault(i => i.FileName == fileName);

    /// <summary>The header of <paramref name="image"/> as the chain read parsed it, so that an operation reads each
    /// header once (on NFS each read is a round trip). It describes the file as it was then: once the operation has
    /// changed the file (qemu-img, a re-point) or let go of the volume's lock, the file must be read again.</summary>
    internal ImageHeader HeaderOf(ChainImage image)
    {
        ArgumentNullException.ThrowIfNull(image);
        return _headers[image.FileName];
    }

    /// <summary>The image whose backing file is <paramref name="fileName"/> (the one "above" it).</summary>
    public ChainImage? Above(string fileName) => Images.FirstOrDefault(i => i.BackingFile == fileName);

    /// <summary>Bytes allocated on disk by <paramref name="image"/> and every image below it: what reading that
    /// image's data reads at most, so an upper bound of what a copy of it writes.</summary>
    public long AllocatedBytesFrom(ChainImage image)
    {
        ArgumentNullException.ThrowIfNull(image);
        long total = 0;
        for (var i = Images.ToList().IndexOf(image); i >= 0 && i < Images.Count; i++)
        {
            total += Durability.FileOwnership.AllocatedBytes(PathOf(Images[i].FileName));
        }
        return total;
    }

    /// <summary>The image holding snapshot <paramref name="snapshotId"/>'s data: the backing file of its overlay.</summary>
    public ChainImage SnapshotData(Guid snapshotId)
    {
        if (!Info.Snapshots.TryGetValue(snapshotId, out var overlay))
        {
            throw new StorageException(StorageErrorCode.SnapshotNotFound, $"Snapshot {snapshotId} is not recorded for volume {VolumeId}.") { VolumeId = VolumeId };
        }
        var image = Find(overlay) ?? throw Broken($"the overlay {overlay} of snapshot {snapshotId} is not in the active chain");
        if (image.BackingFile is null)
        {
            throw Broken($"the overlay {overlay} of snapshot {snapshotId} has no backing file (stale snapshot)");
        }
        return Find(image.BackingFile) ?? throw Broken($"{image.BackingFile} is missing");
    }

    /// <summary>Throws <see cref="StorageErrorCode.ChainBroken"/> listing the problems, if any.</summary>
    public void EnsureHealthy()
    {
        if (Problems.Count > 0)
        {
            throw Broken(string.Join("; ", Problems));
        }
    }

    public StorageException Broken(string what) => new(StorageErrorCode.ChainBroken,
        $"Volume {VolumeId} on {Share.Export}: {what}. Run 'nfsvol check --repair' after reading 'nfsvol check'.") { VolumeId = VolumeId };
}
