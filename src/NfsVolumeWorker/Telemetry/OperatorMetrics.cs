using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Globalization;
using NfsVolumeWorker.Partitions;
using NfsVolumeWorker.Storage.Shares;

namespace NfsVolumeWorker.Telemetry;

/// <summary>What the inbox sweeper saw on its last pass over each share: the commands waiting in volume
/// inboxes (accepted, not yet finished) and the volumes they belong to. The sweeper walks the inboxes every
/// <c>Worker:SweepInterval</c> anyway; a scrape only reads these numbers, it never walks the share.</summary>
public sealed class InboxBacklog
{
    /// <summary>Volumes kept per share for the status page: the deepest inboxes.</summary>
    public const int DeepestKept = 50;

    private readonly ConcurrentDictionary<string, (int Volumes, int Commands)> _byShare = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, IReadOnlyList<(Guid VolumeId, int Waiting)>> _deepest = new(StringComparer.Ordinal);

    public void Update(Share share, int volumes, int commands) => _byShare[share.Export] = (volumes, commands);

    /// <summary>The share's totals and its deepest inboxes (at most <see cref="DeepestKept"/>, deepest first).</summary>
    public void Update(Share share, int volumes, int commands, IReadOnlyList<(Guid VolumeId, int Waiting)> deepest)
    {
        ArgumentNullException.ThrowIfNull(share);
        _deepest[share.Export] = deepest;
        Update(share, volumes, commands);
    }

    /// <summary>The share could not be walked: no figure rather than a stale one.</summary>
    public void Forget(Share share)
    {
        ArgumentNullException.ThrowIfNull(share);
        _byShare.TryRemove(share.Export, out _);
        _deepest.TryRemove(share.Export, out _);
    }

    /// <summary>Each share's deepest inboxes at the sweeper's last pass.</summary>
    public IReadOnlyDictionary<string, IReadOnlyList<(Guid VolumeId, int Waiting)>> Deepest() =>
        new Dictionary<string, IReadOnlyList<(Guid, int)>>(_deepest, StringComparer.Ordinal);

    public IReadOnlyDictionary<string, (int Volumes, int Commands)> Snapshot() => new Dictionary<string, (int, int)>(_byShare, StringComparer.Ordinal);
}

/// <summary>
/// Gauges an operator alerts on, read when <c>/metrics</c> is scraped (meter <c>NfsVolumeWorker</c>, made by
/// the host's <see cref="IMeterFactory"/> so that it goes with the host): each share's free and total bytes
/// (<c>statvfs</c>), the inbox backlog per share (from the sweeper's last pass), and for each partition how long
/// its next command has been failing to be accepted. A hosted service only so that the host builds it at start.
/// </summary>
public sealed class OperatorMetrics : IHostedService
{
    public OperatorMetrics(IMeterFactory meters, ShareMap shares, InboxBacklog backlog, PartitionSubscriptions partitions)
    {
        ArgumentNullException.ThrowIfNull(meters);
        var meter = meters.Create(WorkerTelemetry.SourceName);
        meter.CreateObservableGauge("nfsvolumeworker.share.free", () => Space(shares, d => d.AvailableFreeSpace), unit: "By",
            description: "Bytes the worker may still allocate on the share (statvfs f_bavail).");
        meter.CreateObservableGauge("nfsvolumeworker.share.size", () => Space(shares, d => d.TotalSize), unit: "By",
            description: "Size of the file system holding the share (statvfs f_blocks).");
        meter.CreateObservableGauge("nfsvolumeworker.inbox.commands", () => Backlog(backlog, b => b.Commands), unit: "{command}",
            description: "Commands waiting in the share's volume inboxes (accepted, not finished), at the sweeper's last pass. Every instance reports the same share.");
        meter.CreateObservableGauge("nfsvolumeworker.inbox.volumes", () => Backlog(backlog, b => b.Volumes), unit: "{volume}",
            description: "Volumes with waiting commands on the share, at the sweeper's last pass.");
        meter.CreateObservableGauge("nfsvolumeworker.partition.blocked", () => Blocked(partitions), unit: "s",
            description: "How long the partition's (or the ingress router's, partition=\"ingress\") next command has failed to be accepted or forwarded and been retried in order; 0 while commands flow.");
    }

    public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    private static List<Measurement<long>> Space(ShareMap shares, Func<DriveInfo, long> read)
    {
        var measurements = new List<Measurement<long>>();
        foreach (var share in shares.All)
        {
            try
            {
                measurements.Add(new Measurement<long>(read(new DriveInfo(share.LocalPath)), new KeyValuePair<string, object?>("share", share.Export)));
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException)
            {
                // A share that cannot be read has no figure; /health says why.
            }
        }
        return measurements;
    }

    private static IEnumerable<Measurement<int>> Backlog(InboxBacklog backlog, Func<(int Volumes, int Commands), int> read) =>
        backlog.Snapshot().Select(s => new Measurement<int>(read(s.Value), new KeyValuePair<string, object?>("share", s.Key)));

    private static IEnumerable<Measurement<double>> Blocked(PartitionSubscriptions partitions)
    {
        var now = DateTimeOffset.UtcNow;
        return partitions.All.Append(partitions.Ingress).Select(p => new Measurement<double>(
            p.RetryingSince is { } since ? Math.Max(0, (now - since).TotalSeconds) : 0,
            new KeyValuePair<string, object?>("partition", p.Partition < 0 ? "ingress" : p.Partition.ToString("D2", CultureInfo.InvariantCulture))));
    }
}
