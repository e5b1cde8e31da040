using System.Globalization;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using NfsVolumeWorker.Messaging;

namespace NfsVolumeWorker.Health;

/// <summary>Degraded while a publish (a forward of the router, a terminal event) has waited longer than
/// <see cref="PartitionHealthCheck.StalledAfter"/> for the broker's confirmation: the broker accepts work but cannot
/// commit it (a quorum queue without a majority of its replicas, a memory or disk alarm). Nothing is acknowledged
/// meanwhile, so nothing is lost; the worker goes on once the broker confirms.</summary>
public sealed class BrokerHealthCheck(BrokerWaits waits) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var (count, oldest, since) = waits.Snapshot();
        var data = new Dictionary<string, object> { ["waiting"] = count };
        if (since is { } s && DateTimeOffset.UtcNow - s > PartitionHealthCheck.StalledAfter)
        {
            data["oldest"] = oldest!;
            data["since"] = s.ToString("O", CultureInfo.InvariantCulture);
            return Task.FromResult(HealthCheckResult.Degraded(string.Create(CultureInfo.InvariantCulture,
                $"{count} publish(es) wait for the broker's confirmation, the oldest ({oldest}) for {(DateTimeOffset.UtcNow - s).TotalSeconds:0} s: the broker cannot commit (quorum queues without a majority of their nodes, or a resource alarm); nothing is acknowledged meanwhile"),
                data: data));
        }
        return Task.FromResult(HealthCheckResult.Healthy(string.Create(CultureInfo.InvariantCulture, $"{count} publish(es) waiting for a confirmation, none for long"), data));
    }
}
