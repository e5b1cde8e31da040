using System.Globalization;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using NfsVolumeWorker.Partitions;

namespace NfsVolumeWorker.Health;

/// <summary>The partition consumers' connection is open, and every partition and the ingress queue are
/// subscribed (active or waiting); degraded while a partition keeps failing to accept a command, or the router
/// to forward one (the share or broker is failing).</summary>
public sealed class PartitionHealthCheck(PartitionSubscriptions subscriptions) : IHealthCheck
{
    /// <summary>How long a partition may retry one command before it counts as stalled.</summary>
    public static readonly TimeSpan StalledAfter = TimeSpan.FromSeconds(30);

    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var all = subscriptions.All;
        var subscribed = all.Count(p => p.IsSubscribed);
        var data = new Dictionary<string, object> { ["partitions"] = all.Count, ["subscribed"] = subscribed, ["ingress"] = subscriptions.Ingress.IsSubscribed };
        if (subscriptions.IsStopping)
        {
            return Task.FromResult(HealthCheckResult.Degraded("stopping: partitions released", data: data));
        }
        if (subscriptions.Connection is null)
        {
            return Task.FromResult(HealthCheckResult.Unhealthy("no connection to the broker for the partition consumers", data: data));
        }
        if (subscribed < all.Count)
        {
            var missing = string.Join(",", all.Where(p => !p.IsSubscribed).Select(p => p.Partition.ToString("D2", CultureInfo.InvariantCulture)));
            return Task.FromResult(HealthCheckResult.Unhealthy($"not subscribed to partition(s) {missing}; re-subscribing", data: data));
        }
        if (!subscriptions.Ingress.IsSubscribed)
        {
            return Task.FromResult(HealthCheckResult.Unhealthy("not subscribed to the ingress queue; re-subscribing", data: data));
        }
        var now = DateTimeOffset.UtcNow;
        if (subscriptions.Ingress.RetryingSince is { } routing && now - routing > StalledAfter)
        {
            return Task.FromResult(HealthCheckResult.Degraded("the ingress router cannot forward its next command (see the log, event 3126); it waits in order", data: data));
        }
        var stalled = all.Where(p => p.RetryingSince is { } since && now - since > StalledAfter).ToList();
        if (stalled.Count > 0)
        {
            var which = string.Join(",", stalled.Select(p => p.Partition.ToString("D2", CultureInfo.InvariantCulture)));
            return Task.FromResult(HealthCheckResult.Degraded($"partition(s) {which} cannot accept their next command (see the log, event 3123); they wait in order", data: data));
        }
        return Task.FromResult(HealthCheckResult.Healthy($"{subscribed} partition(s) and the ingress queue subscribed", data));
    }
}
