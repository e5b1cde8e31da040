using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Messaging;
using NfsVolumeWorker.Storage.Inbox;
using NfsVolumeWorker.Tests.Support;

namespace NfsVolumeWorker.Tests;

/// <summary>The worker and the command store's format on its shares: a share a format-1 worker left (nothing
/// recorded) is finished and recorded as format 2; a share a newer worker upgraded is refused whole (health says
/// why, said once in the log, its commands fail transient), and nothing on it is touched, while the other share goes on.</summary>
public sealed class CommandStoreFormatTests(ITestOutputHelper output)
{
    private const long MiB = WorkerTestBed.MiB;
    private const int ShareUnavailableLog = 3018;

    [Fact]
    public async Task A_share_of_a_newer_format_is_refused_untouched_while_a_format_1_share_is_finished_and_recorded_as_2()
    {
        using var newer = new TempDirectory("nfsvol-newer-");
        var newerWorkerDir = Directory.CreateDirectory(Path.Combine(newer.Path, ".nfsvolumeworker")).FullName;
        await File.WriteAllTextAsync(Path.Combine(newerWorkerDir, CommandStoreFormat.FileName), "3\n");
        var waitingThere = Path.Combine(newerWorkerDir, "inbox", $"volume-{Guid.NewGuid()}", $"{1:D12}-{Guid.NewGuid():N}.cmd");
        Directory.CreateDirectory(Path.GetDirectoryName(waitingThere)!);
        await File.WriteAllTextAsync(waitingThere, "an entry of format 3, which this worker must not read");
        var before = Tools.Tree(newer.Path);
        var contents = before.Select(p => Path.Combine(newer.Path, p)).Where(File.Exists).ToDictionary(p => p, File.ReadAllText);

        await using var bed = await WorkerTestBed.StartAsync(output, "format", new Dictionary<string, string?> { ["Shares:Items:1:Export"] = newer.Path });

        // A format-1 inbox entry on the first share, written as a worker of the release before format 2 left it.
        var volume = Guid.NewGuid();
        var create = new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = volume, SizeBytes = MiB };
        // Built aside and renamed into place whole: the running sweep removes an inbox directory it finds empty.
        var seed = Directory.CreateDirectory(Path.Combine(bed.Share, ".nfsvolumeworker", "inbox", ".seed")).FullName;
        await File.WriteAllBytesAsync(Path.Combine(seed, ".drain.lock"), []);
        await File.WriteAllBytesAsync(Path.Combine(seed, $"{1:D12}-{create.CommandId:N}.cmd"), InboxRecord.For(create, 0, null).ToBytes());
        Directory.Move(seed, Path.Combine(bed.Share, ".nfsvolumeworker", "inbox", $"volume-{volume}"));
        Assert.Equal(nameof(VolumeCreated), (await bed.Events.WaitForAsync(create.CommandId, TimeSpan.FromSeconds(30))).Type);
        Assert.True(File.Exists(bed.PathOf($"volume-{volume}")));
        Assert.Equal("2\n", await File.ReadAllTextAsync(Path.Combine(bed.Share, ".nfsvolumeworker", CommandStoreFormat.FileName)));
        await Eventually.WaitAsync(() => Directory.EnumerateFileSystemEntries(Path.Combine(bed.Share, ".nfsvolumeworker", "inbox")).Count(), n => n == 0, TimeSpan.FromSeconds(40));
        Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(bed.Share, ".nfsvolumeworker", "inbox")));

        // The newer share: health says why, its commands fail (transient), and the log says it once.
        var health = bed.Worker.Services.GetRequiredService<HealthCheckService>();
        var report = await Eventually.WaitAsync(() => health.CheckHealthAsync(), r => r.Entries["shares"].Status == HealthStatus.Unhealthy, TimeSpan.FromSeconds(20));
        Assert.Equal(HealthStatus.Unhealthy, report.Entries["shares"].Status);
        output.WriteLine(report.Entries["shares"].Description);
        Assert.Contains("command store format 3", report.Entries["shares"].Description, StringComparison.Ordinal);
        var refused = await bed.RunAsync(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = Guid.NewGuid(), SizeBytes = MiB, Share = newer.Path }, TimeSpan.FromSeconds(20));
        Assert.Equal(nameof(CommandFailed), refused.Type);
        Assert.Equal("ShareUnavailable", refused.Text("errorCode"));
        Assert.True(refused.Message.GetProperty("isTransient").GetBoolean());
        Assert.Contains("format 3", refused.Text("message"), StringComparison.Ordinal);
        await Eventually.WaitAsync(() => bed.Worker.Logs.Count(ShareUnavailableLog), n => n >= 1, TimeSpan.FromSeconds(10));

        // The first share goes on; the newer one is exactly as it was.
        await bed.RunOkAsync(new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = volume, SnapshotId = Guid.NewGuid(), Share = bed.Share }, nameof(SnapshotCreated), TimeSpan.FromSeconds(20));
        Assert.Equal(1, bed.Worker.Logs.Count(ShareUnavailableLog));
        Assert.Equal(before, Tools.Tree(newer.Path));
        Assert.All(contents, c => Assert.Equal(c.Value, File.ReadAllText(c.Key)));
    }
}
