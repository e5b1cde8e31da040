using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Durability;
using NfsVolumeWorker.Storage.QemuImg;
using NfsVolumeWorker.Storage.Shares;

namespace NfsVolumeWorker.Health;

/// <summary>Every configured share is a directory this process can write to (a probe file is written, fsynced, removed);
/// its data says, per share, what the file system offers and how full copies run there.</summary>
public sealed class ShareHealthCheck(ShareMap shares, IOptions<VolumeEngineOptions> engine) : IHealthCheck
{
    /// <summary>Said beside each share when full copies are limited, so that a slow clone explains itself.</summary>
    private readonly string _copyLimit = engine.Value.CopyLimitDescription is { } limit ? "; full copies " + limit : "";

    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var failures = new List<string>();
        var data = new Dictionary<string, object>();
        foreach (var share in shares.All)
        {
            if (!ShareMarker.IsAvailable(share, out var problem))
            {
                failures.Add(problem!);
                continue;
            }
            try
            {
                var probe = Path.Combine(share.LocalPath, DurableFile.TempName("health"));
                File.WriteAllBytes(probe, [1]);
                DurableFile.FsyncFile(probe);
                File.Delete(probe);
                data[share.Export] = $"{share.LocalPath}: {ShareCapabilities.Of(share).Describe()}{_copyLimit}";
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or Storage.Errors.StorageException)
            {
                failures.Add($"{share.Export} ({share.LocalPath}): {e.Message}");
            }
        }
        return Task.FromResult(failures.Count == 0
            ? HealthCheckResult.Healthy($"{data.Count} share(s) writable", data)
            : HealthCheckResult.Unhealthy(string.Join("; ", failures), data: data));
    }
}

/// <summary>qemu-img is installed and answers; reports its version.</summary>
public sealed class QemuImgHealthCheck(QemuImgRunner qemuImg) : IHealthCheck
{
    public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        try
        {
            var version = await qemuImg.VersionAsync(cancellationToken).ConfigureAwait(false);
            return HealthCheckResult.Healthy($"qemu-img {version}", new Dictionary<string, object> { ["version"] = version });
        }
        catch (Storage.Errors.StorageException e)
        {
            return HealthCheckResult.Unhealthy(e.Message);
        }
    }
}
