using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Tests.Support;

namespace NfsVolumeWorker.Tests;

/// <summary>A share that disappears mid-run (a real file system, unmounted under the worker): health turns
/// unhealthy, its commands fail with ShareUnavailable (transient) and nothing is written under the empty mount
/// point, the other share goes on, and work resumes when it is mounted again.</summary>
public sealed class ShareFaultTests(ITestOutputHelper output)
{
    private const long MiB = WorkerTestBed.MiB;
    private const int ShareUnavailableLog = 3018;
    private const int ShareBackLog = 3019;

    [Fact]
    public async Task A_share_that_disappears_fails_its_commands_while_the_other_share_goes_on_and_work_resumes_when_it_returns()
    {
        using var images = new TempDirectory("nfsvol-loop-");
        var mountPoint = Path.Combine(images.Path, "share-b");
        Directory.CreateDirectory(mountPoint);
        using var disk = LoopFileSystem.MountExt4(mountPoint, images.Path, 64 * MiB);
        await using var bed = await WorkerTestBed.StartAsync(output, "share-gone", new Dictionary<string, string?>
        {
            ["Shares:Items:1:Export"] = mountPoint,
        });
        var health = bed.Worker.Services.GetRequiredService<HealthCheckService>();
        var onA = Guid.NewGuid();
        var onB = Guid.NewGuid();
        await bed.RunOkAsync(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = onA, SizeBytes = MiB, Share = bed.Share }, nameof(VolumeCreated));
        await bed.RunOkAsync(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = onB, SizeBytes = MiB, Share = mountPoint }, nameof(VolumeCreated));

        disk.Unmount();
        Assert.Empty(Directory.EnumerateFileSystemEntries(mountPoint));
        var report = await Eventually.WaitAsync(() => health.CheckHealthAsync(), r => r.Entries["shares"].Status == HealthStatus.Unhealthy, TimeSpan.FromSeconds(20));
        Assert.Equal(HealthStatus.Unhealthy, report.Entries["shares"].Status);
        output.WriteLine(report.Entries["shares"].Description);
        Assert.Contains(mountPoint, report.Entries["shares"].Description, StringComparison.Ordinal);

        var refused = await bed.RunAsync(new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = onB, SnapshotId = Guid.NewGuid(), Share = mountPoint }, TimeSpan.FromSeconds(20));
        Assert.Equal(nameof(CommandFailed), refused.Type);
        Assert.Equal("ShareUnavailable", refused.Text("errorCode"));
        Assert.True(refused.Message.GetProperty("isTransient").GetBoolean());
        // The other share goes on.
        await bed.RunOkAsync(new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = onA, SnapshotId = Guid.NewGuid(), Share = bed.Share }, nameof(SnapshotCreated), TimeSpan.FromSeconds(20));
        // Nothing was written on the local disk under the empty mount point (no inbox, no marker, no volume).
        Assert.Empty(Directory.EnumerateFileSystemEntries(mountPoint));
        await Eventually.WaitAsync(() => bed.Worker.Logs.Count(ShareUnavailableLog), n => n >= 1, TimeSpan.FromSeconds(10));

        disk.Remount();
        report = await Eventually.WaitAsync(() => health.CheckHealthAsync(), r => r.Entries["shares"].Status == HealthStatus.Healthy, TimeSpan.FromSeconds(20));
        Assert.Equal(HealthStatus.Healthy, report.Entries["shares"].Status);
        var snapshot = Guid.NewGuid();
        await bed.RunOkAsync(new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = onB, SnapshotId = snapshot, Share = mountPoint }, nameof(SnapshotCreated), TimeSpan.FromSeconds(20));
        Assert.True(File.Exists(Path.Combine(mountPoint, $"volume-{onB}.{snapshot}")));
        await Eventually.WaitAsync(() => bed.Worker.Logs.Count(ShareBackLog), n => n >= 1, TimeSpan.FromSeconds(10));
        // Said once when it went and once when it came back, not on every sweep.
        Assert.Equal(1, bed.Worker.Logs.Count(ShareUnavailableLog));
        Assert.Equal(1, bed.Worker.Logs.Count(ShareBackLog));
        await Tools.WaitForEmptyInboxAsync(bed.Share);
    }
}
