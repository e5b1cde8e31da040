using NfsVolumeWorker.Storage.Chains;
using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Locking;

namespace NfsVolumeWorker.Storage.Engine;

/// <summary>A point of a volume's history: its base, one of its snapshots, or its active image.</summary>
/// <param name="SnapshotId">The snapshot; null with <paramref name="Active"/> false for the base.</param>
/// <param name="Active">The volume as it is now.</param>
public sealed record VolumePoint(Guid? SnapshotId, bool Active)
{
    public static readonly VolumePoint Base = new(null, false);
    public static readonly VolumePoint Now = new(null, true);

    public static VolumePoint Snapshot(Guid id) => new(id, false);

    /// <summary><c>base</c>, <c>active</c>, or a snapshot id.</summary>
    public static VolumePoint Parse(string text) => text switch
    {
        "base" => Base,
        "active" => Now,
        _ when Guid.TryParse(text, out var id) => Snapshot(Ids.Require(id, "snapshot id")),
        _ => throw new StorageException(StorageErrorCode.InvalidRequest, $"'{text}' is not base, active or a snapshot id (a UUID)."),
    };

    public override string ToString() => Active ? "active" : SnapshotId is { } s ? $"snapshot {s}" : "base";
}

/// <summary>Byte ranges of a volume that may differ between two points of its history.</summary>
/// <param name="From">The older point.</param>
/// <param name="To">The newer point.</param>
/// <param name="Extents">Sorted, non-overlapping, adjacent ranges merged.</param>
/// <param name="VirtualSize">The volume's size at <paramref name="To"/>.</param>
public sealed record ChangedExtents(VolumePoint From, VolumePoint To, IReadOnlyList<ByteRange> Extents, long VirtualSize)
{
    public long TotalBytes => Extents.Sum(e => e.Length);
}

/// <summary>A range of bytes.</summary>
public sealed record ByteRange(long Offset, long Length);

public sealed partial class VolumeEngine
{
    /// <summary>
    /// The byte ranges that may differ between two points of a volume (for incremental backup): what the images
    /// written between them hold, from <c>qemu-img map</c> of the newer point's image (every extent provided by an
    /// image above the older point's image), plus any growth. Exact while the snapshots in between exist; after
    /// a merge it is a safe superset (the merged image holds the union). Takes the volume's lock; writes nothing.
    /// </summary>
    public async Task<ChangedExtents> GetChangedExtentsAsync(string? share, Guid volumeId, VolumePoint from, VolumePoint to, ImageFormat? baseFormat = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(from);
        ArgumentNullException.ThrowIfNull(to);
        Ids.Require(volumeId, "volume id");
        var s = ShareFor(share);
        using var volumeLock = await VolumeLock.AcquireAsync(s, volumeId, _options.LockTimeout, cancellationToken).ConfigureAwait(false);
        var chain = VolumeChainReader.Read(s, volumeId, baseFormat);
        chain.EnsureHealthy();
        var fromImage = ImageAt(chain, from);
        var toImage = ImageAt(chain, to);
        var images = chain.Images.ToList();
        var fromIndex = images.IndexOf(fromImage);
        var toIndex = images.IndexOf(toImage);
        if (toIndex > fromIndex)
        {
            throw new StorageException(StorageErrorCode.InvalidRequest,
                $"Volume {volumeId}: {from} is newer than {to}; give the older point first.") { VolumeId = volumeId };
        }
        var depthOfFrom = fromIndex - toIndex;
        var ranges = new List<ByteRange>();
        if (depthOfFrom > 0)
        {
            foreach (var e in await _qemuImg.MapAsync(chain.PathOf(toImage.FileName), toImage.Format, cancellationToken).ConfigureAwait(false))
            {
                if (e.Present && e.Depth < depthOfFrom)
                {
                    ranges.Add(new ByteRange(e.Start, e.Length));
                }
            }
        }
        if (toImage.VirtualSize > fromImage.VirtualSize)
        {
            ranges.Add(new ByteRange(fromImage.VirtualSize, toImage.VirtualSize - fromImage.VirtualSize));
        }
        return new ChangedExtents(from, to, Merge(ranges), toImage.VirtualSize);
    }

    private static ChainImage ImageAt(VolumeChain chain, VolumePoint point) =>
        point.Active ? chain.Active : point.SnapshotId is { } s ? chain.SnapshotData(s) : chain.Base;

    private static List<ByteRange> Merge(List<ByteRange> ranges)
    {
        var merged = new List<ByteRange>();
        foreach (var r in ranges.Where(r => r.Length > 0).OrderBy(r => r.Offset))
        {
            if (merged.Count > 0 && merged[^1].Offset + merged[^1].Length >= r.Offset)
            {
                var last = merged[^1];
                merged[^1] = last with { Length = Math.Max(last.Offset + last.Length, r.Offset + r.Length) - last.Offset };
            }
            else
            {
                merged.Add(r);
            }
        }
        return merged;
    }
}
