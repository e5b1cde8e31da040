using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Health;
using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Shares;
using NfsVolumeWorker.Testing;

namespace NfsVolumeWorker.Host.Tests;

/// <summary>The <c>shares</c> check of <c>/health</c>: a writable share is healthy, and its line says what its file
/// system offers and, when full copies are limited, the limit (a slow clone explains itself there).</summary>
public sealed class ShareHealthCheckSpecs : IDisposable
{
    private readonly TempDirectory _dir = new("nfsvol-health-");

    public void Dispose() => _dir.Dispose();

    private async Task<HealthCheckResult> CheckAsync(long copyBytesPerSecond)
    {
        var share = new Share("/export/health", _dir.Path, null);
        var check = new ShareHealthCheck(new ShareMap([share]), Options.Create(new VolumeEngineOptions { CopyBytesPerSecond = copyBytesPerSecond }));
        return await check.CheckHealthAsync(new HealthCheckContext());
    }

    [Fact]
    public async Task A_share_with_limited_copies_says_the_limit_beside_what_its_file_system_offers()
    {
        var result = await CheckAsync(100_000_000);

        Assert.Equal(HealthStatus.Healthy, result.Status);
        var line = Assert.IsType<string>(result.Data["/export/health"]);
        Assert.Contains("clones copy", line, StringComparison.Ordinal);
        Assert.EndsWith("; full copies at most 100 MB/s (Engine:CopyBytesPerSecond)", line, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Unlimited_copies_say_nothing_of_a_limit()
    {
        var result = await CheckAsync(0);

        Assert.Equal(HealthStatus.Healthy, result.Status);
        Assert.DoesNotContain("at most", Assert.IsType<string>(result.Data["/export/health"]), StringComparison.Ordinal);
    }
}
