using System.Collections.Immutable;

namespace NfsVolumeWorker.Storage.Info;

/// <summary>
/// The contents of <c>volume-&lt;id&gt;.info</c>: which file is active, and for each snapshot the overlay
/// created when it was taken. The data of snapshot S is the <em>backing file</em> of <c>Snapshots[S]</c>.
/// </summary>
/// <param name="Active">File name (no directory) of the image the volume reads and writes now.</param>
/// <param name="Snapshots">Snapshot id to the bare file name of the overlay created at that snapshot.</param>
public sealed record VolumeInfo(string Active, ImmutableDictionary<Guid, string> Snapshots)
{
    /// <summary>The info of a volume with no snapshots, as Cinder leaves it: only <c>active</c>.</summary>
    public static VolumeInfo ActiveOnly(string active) => new(active, ImmutableDictionary<Guid, string>.Empty);

    public VolumeInfo WithSnapshot(Guid snapshotId, string overlay) =>
        this with { Active = overlay, Snapshots = Snapshots.SetItem(snapshotId, overlay) };

    public VolumeInfo WithoutSnapshot(Guid snapshotId) => this with { Snapshots = Snapshots.Remove(snapshotId) };

    public bool Equals(VolumeInfo? other) =>
        other is not null && Active == other.Active && Snapshots.Count == other.Snapshots.Count
        && Snapshots.All(kv => other.Snapshots.TryGetValue(kv.Key, out var v) && v == kv.Value);

    public override int GetHashCode() => HashCode.Combine(Active, Snapshots.Count);
}
