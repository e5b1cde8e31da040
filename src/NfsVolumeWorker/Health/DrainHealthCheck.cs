using Microsoft.Extensions.Diagnostics.HealthChecks;
using NfsVolumeWorker.Execution;

namespace NfsVolumeWorker.Health;

/// <summary>Degraded while any volume's drain loop waits out a back-off after failing outside a command (a
/// share or broker fault): its commands wait, the other volumes go on. Lists the first few with their errors.</summary>
public sealed class DrainHealthCheck(VolumeExecutor executor) : IHealthCheck
{
    private const int Listed = 20;

    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var failing = executor.FailingVolumes.OrderByDescending(f => f.Attempts).ToList();
        if (failing.Count == 0)
        {
            return Task.FromResult(HealthCheckResult.Healthy($"{executor.ActiveVolumes} volume(s) running, none backing off"));
        }
        var data = failing.Take(Listed).ToDictionary(
            f => $"{f.Share} volume {f.VolumeId}",
            f => (object)$"attempt {f.Attempts} failed: {f.LastError}; next attempt {f.NextAttemptAt:O}");
        return Task.FromResult(HealthCheckResult.Degraded(
            $"{failing.Count} volume(s) cannot be drained and are retried with back-off (share or broker fault); their commands wait", data: data));
    }
}
