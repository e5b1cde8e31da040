using System.Diagnostics;
using System.Reflection;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Balancing;
using NfsVolumeWorker.Configuration;
using NfsVolumeWorker.Execution;
using NfsVolumeWorker.Oslo;
using NfsVolumeWorker.Oslo.Rpc;
using NfsVolumeWorker.Partitions;
using NfsVolumeWorker.Storage.Durability;
using NfsVolumeWorker.Storage.Shares;
using NfsVolumeWorker.Telemetry;

namespace NfsVolumeWorker.Status;

/// <summary>Builds a <see cref="StatusReport"/> from what the worker already holds. Touches the shares only for a
/// <c>statvfs</c> and the availability check each (and the one-time file-size probe of <c>VolumeSizeLimit</c>):
/// the inbox figures are the sweeper's, never a walk of the share per request.</summary>
public sealed class StatusCollector(
    ShareMap shares, InboxBacklog backlog, VolumeExecutor executor, PartitionSubscriptions subscriptions, FleetView fleet, StatusBoard board,
    StatusAddress address, IOptions<WorkerOptions> worker, IConfiguration configuration, IServiceProvider services)
{
    /// <summary>Volumes listed in <see cref="StatusReport.Inbox"/>, over all shares.</summary>
    public const int InboxListed = InboxBacklog.DeepestKept;

    private static readonly DateTimeOffset ProcessStarted = StartTime();

    private static readonly string Version =
        typeof(StatusCollector).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "unknown";

    public StatusReport Collect()
    {
        var instance = worker.Value.InstanceName;
        var reading = fleet.Latest;
        var activeHere = reading?.Snapshot.ActiveOf(instance).ToHashSet();
        var partitions = subscriptions.All.Select(p => new PartitionStatus(
            p.Partition, p.IsSubscribed, activeHere is null ? null : activeHere.Contains(p.Partition), p.RetryingSince)).ToList();

        FleetStatus? fleetStatus = null;
        if (reading is { } r)
        {
            var s = r.Snapshot;
            fleetStatus = new FleetStatus(r.ReadAt,
                s.Instances.Select(i => new InstanceStatus(i, s.ActiveOf(i), s.WaitingOf(i), s.StatusUrls.GetValueOrDefault(i))).ToList(),
                s.Unowned);
        }

        var totals = backlog.Snapshot();
        var shareStatus = shares.All.OrderBy(s => s.Export, StringComparer.Ordinal).Select(s => Share(s, totals)).ToList();

        var byExport = shares.All.ToDictionary(s => s.Export, StringComparer.Ordinal);
        var inbox = backlog.Deepest()
            .SelectMany(d => d.Value.Select(v => (Share: d.Key, v.VolumeId, v.Waiting)))
            .OrderByDescending(v => v.Waiting).ThenBy(v => v.Share, StringComparer.Ordinal).ThenBy(v => v.VolumeId)
            .Take(InboxListed)
            .Select(v => new InboxVolumeStatus(v.Share, v.VolumeId, v.Waiting, byExport.TryGetValue(v.Share, out var share) && executor.IsDraining(share, v.VolumeId)))
            .ToList();

        var volumes = new VolumesStatus(executor.ActiveVolumes, executor.FailingVolumes.OrderByDescending(f => f.Attempts)
            .Select(f => new BackingOffVolumeStatus(f.Share, f.VolumeId, f.Attempts, f.LastError, f.NextAttemptAt)).ToList());

        return new StatusReport(StatusReport.CurrentSchemaVersion, instance, Version, DateTimeOffset.UtcNow, ProcessStarted, address.Url,
            worker.Value.PartitionCount, new IngressStatus(subscriptions.Ingress.IsSubscribed, subscriptions.Ingress.RetryingSince),
            partitions, fleetStatus, shareStatus, inbox, volumes, board.Running(), board.RecentFailures(), Oslo());
    }

    private static ShareStatus Share(Share share, IReadOnlyDictionary<string, (int Volumes, int Commands)> totals)
    {
        var available = ShareMarker.IsAvailable(share, out var problem);
        bool mountPoint;
        long? free = null, size = null;
        try
        {
            mountPoint = Directory.Exists(share.LocalPath) && FileOwnership.IsMountPoint(share.LocalPath);
            var drive = new DriveInfo(share.LocalPath);
            free = drive.AvailableFreeSpace;
            size = drive.TotalSize;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException)
        {
            mountPoint = false;
        }
        var maxFile = available ? VolumeSizeLimit.MaxFileSize(share) : null;
        var backlog = totals.TryGetValue(share.Export, out var b) ? b : ((int Volumes, int Commands)?)null;
        return new ShareStatus(share.Export, share.LocalPath, available, problem, mountPoint, share.MustBeMounted, free, size, maxFile,
            backlog?.Volumes, backlog?.Commands);
    }

    private OsloStatus Oslo()
    {
        var enabled = configuration.GetValue<bool>($"{OsloOptions.SectionName}:{nameof(OsloOptions.Enabled)}");
        if (!enabled)
        {
            return new OsloStatus(false, null, false, null);
        }
        var server = services.GetService<OsloRpcServer>();
        return new OsloStatus(true, configuration[$"{OsloOptions.SectionName}:{nameof(OsloOptions.Host)}"], server?.IsServing == true, server?.PendingCount);
    }

    private static DateTimeOffset StartTime()
    {
        using var self = Process.GetCurrentProcess();
        return new DateTimeOffset(self.StartTime.ToUniversalTime(), TimeSpan.Zero);
    }
}
