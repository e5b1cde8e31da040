using System.Collections.Concurrent;
using System.Text;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Oslo;
using NfsVolumeWorker.Storage.Durability;
using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Shares;

namespace NfsVolumeWorker.OsloBridge;

/// <summary>
/// Finds volumes and snapshots on the configured shares when a Cinder request does not say where they are.
/// Cost per lookup: a volume is found from memory (filled from requests and from the native events of every
/// instance), else by one stat of <c>volume-&lt;id&gt;</c> (or its <c>.info</c>) per share — never a directory
/// listing. A snapshot's volume is found from memory, else from the persistent index on the shares
/// (<c>.nfsvolumeworker/oslo-index/snapshot-&lt;id&gt;</c>, written when the snapshot is requested: one stat
/// per share), else — only for snapshots this worker never saw (taken by Cinder before the handover) — by
/// reading the share's <c>volume-*.info</c> files once (a listing), whose result is then indexed.
/// </summary>
public sealed class ShareVolumeLocator(ShareMap shares, IOptions<VolumeEngineOptions> engine) : IVolumeLocator
{
    private const string IndexFolder = "oslo-index";
    private readonly ConcurrentDictionary<Guid, string> _volumes = new();
    private readonly ConcurrentDictionary<Guid, (Guid, string)> _snapshots = new();

    public IReadOnlyList<string> Shares => shares.All.Select(s => s.Export).ToList();

    public string? ShareOfVolume(Guid volumeId)
    {
        if (_volumes.TryGetValue(volumeId, out var known) && Holds(shares.Resolve(known), volumeId))
        {
            return known;
        }
        foreach (var share in shares.All)
        {
            if (Holds(share, volumeId))
            {
                _volumes[volumeId] = share.Export;
                return share.Export;
            }
        }
        return null;
    }

    private static bool Holds(Share share, Guid volumeId) =>
        File.Exists(share.PathOf(VolumeFileNames.Base(volumeId))) || File.Exists(share.PathOf(VolumeFileNames.Info(volumeId)));

    public (Guid VolumeId, string Share)? VolumeOfSnapshot(Guid snapshotId)
    {
        if (_snapshots.TryGetValue(snapshotId, out var known))
        {
            return known;
        }
        foreach (var share in shares.All)
        {
            var path = IndexPath(share, snapshotId);
            if (File.Exists(path) && Guid.TryParse(File.ReadAllText(path).Trim(), out var volumeId))
            {
                _snapshots[snapshotId] = (volumeId, share.Export);
                return (volumeId, share.Export);
            }
        }
        // Last resort: snapshots taken before this worker served the share are only in the .info files.
        var id = VolumeFileNames.Format(snapshotId);
        foreach (var share in shares.All)
        {
            IEnumerable<string> infos;
            try
            {
                infos = Directory.EnumerateFiles(share.LocalPath, "volume-*.info").ToList();
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                continue; // an unreachable share holds nothing we can use
            }
            foreach (var info in infos)
            {
                if (File.ReadAllText(info).Contains($"\"{id}\"", StringComparison.Ordinal)
                    && VolumeFileNames.TryParse(Path.GetFileName(info), out var volumeId, out _))
                {
                    RememberSnapshot(snapshotId, volumeId, share.Export);
                    return (volumeId, share.Export);
                }
            }
        }
        return null;
    }

    public void RememberVolume(Guid volumeId, string share) => _volumes[volumeId] = share;

    public void RememberSnapshot(Guid snapshotId, Guid volumeId, string share)
    {
        _snapshots[snapshotId] = (volumeId, share);
        _volumes.TryAdd(volumeId, share);
        try
        {
            var s = shares.Resolve(share);
            var dir = Path.Combine(s.WorkerDirectory, IndexFolder);
            Directory.CreateDirectory(s.WorkerDirectory);
            Directory.CreateDirectory(dir);
            var path = IndexPath(s, snapshotId);
            if (!File.Exists(path))
            {
                DurableFile.WriteAtomically(path, Encoding.ASCII.GetBytes(VolumeFileNames.Format(volumeId) + "\n"), engine.Value.NewFileMode);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or Storage.Errors.StorageException)
        {
            // The index saves a listing later; the in-memory entry serves this instance.
        }
    }

    private static string IndexPath(Share share, Guid snapshotId) =>
        Path.Combine(share.WorkerDirectory, IndexFolder, "snapshot-" + VolumeFileNames.Format(snapshotId));

    public string ChooseShareForNewVolume(long sizeBytes)
    {
        var all = shares.All.ToList();
        if (all.Count == 1)
        {
            return all[0].Export;
        }
        return all.OrderByDescending(s => FreeBytes(s.LocalPath)).First().Export;
    }

    internal static long FreeBytes(string path)
    {
        try
        {
            return new DriveInfo(path).AvailableFreeSpace;
        }
        catch (Exception e) when (e is IOException or ArgumentException or UnauthorizedAccessException)
        {
            return 0;
        }
    }
}
