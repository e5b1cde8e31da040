using Microsoft.Extensions.DependencyInjection;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Storage.Locking;
using NfsVolumeWorker.Storage.Shares;
using NfsVolumeWorker.Tests.Support;

namespace NfsVolumeWorker.Tests;

/// <summary>A real transient fault: the volume's OFD lock on the share held by someone else (as another
/// operation or another host would), so the engine answers VolumeBusy after Engine:LockTimeout.</summary>
public sealed class TransientFaultTests(ITestOutputHelper output)
{
    private const long MiB = WorkerTestBed.MiB;

    private static List<string> RetriesOf(WorkerTestBed bed, Guid commandId) =>
        bed.Worker.Logs.Entries.Where(e => e.Id.Id == 3005 && e.Message.Contains(commandId.ToString(), StringComparison.Ordinal)).Select(e => e.Message).ToList();

    private static bool IsTransient(ReceivedEvent e) => e.Message.TryGetProperty("isTransient", out var t) && t.GetBoolean();

    [Fact]
    public async Task A_busy_volume_is_retried_with_back_off_and_the_command_succeeds_once_the_volume_is_free()
    {
        await using var bed = await WorkerTestBed.StartAsync(output, "transient", new Dictionary<string, string?>
        {
            ["Engine:LockTimeout"] = "00:00:00.500", ["Worker:TransientAttempts"] = "8", ["Worker:TransientBackoff"] = "00:00:00.300",
        });
        var share = bed.Worker.Services.GetRequiredService<ShareMap>().All.Single();
        var volume = Guid.NewGuid();
        await bed.RunOkAsync(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = volume, SizeBytes = MiB }, nameof(VolumeCreated));

        var snapshot = new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = volume, SnapshotId = Guid.NewGuid() };
        using (await VolumeLock.AcquireAsync(share, volume, TimeSpan.FromSeconds(5), CancellationToken.None))
        {
            await bed.Producer.PublishAsync(snapshot);
            await Eventually.WaitAsync(() => RetriesOf(bed, snapshot.CommandId).Count, n => n >= 2, TimeSpan.FromSeconds(30));
            Assert.Empty(bed.Events.TerminalOf(snapshot.CommandId));
        }
        var done = await bed.Events.WaitForAsync(snapshot.CommandId, TimeSpan.FromSeconds(30));
        Assert.Equal(nameof(SnapshotCreated), done.Type);
        var retries = RetriesOf(bed, snapshot.CommandId);
        output.WriteLine(string.Join(Environment.NewLine, retries));
        Assert.All(retries, r => Assert.Contains("VolumeBusy", r, StringComparison.Ordinal));
        Assert.Contains("retrying in 0.3 s", retries[0], StringComparison.Ordinal);
        Assert.Contains("retrying in 0.6 s", retries[1], StringComparison.Ordinal); // the back-off doubles
        Assert.True(File.Exists(bed.PathOf($"volume-{volume}.{snapshot.SnapshotId}")));
        Assert.Single(bed.Events.TerminalOf(snapshot.CommandId));
    }

    [Fact]
    public async Task A_volume_busy_past_every_attempt_fails_as_transient_while_a_permanent_error_fails_at_once()
    {
        await using var bed = await WorkerTestBed.StartAsync(output, "transient-fail", new Dictionary<string, string?>
        {
            ["Engine:LockTimeout"] = "00:00:00.300", ["Worker:TransientAttempts"] = "3", ["Worker:TransientBackoff"] = "00:00:00.200",
        });
        var share = bed.Worker.Services.GetRequiredService<ShareMap>().All.Single();
        var volume = Guid.NewGuid();
        await bed.RunOkAsync(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = volume, SizeBytes = 2 * MiB }, nameof(VolumeCreated));
        var before = Tools.Tree(bed.Share);

        var snapshot = new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = volume, SnapshotId = Guid.NewGuid() };
        ReceivedEvent busy;
        using (await VolumeLock.AcquireAsync(share, volume, TimeSpan.FromSeconds(5), CancellationToken.None))
        {
            busy = await bed.RunAsync(snapshot, TimeSpan.FromSeconds(30));
        }
        Assert.Equal(nameof(CommandFailed), busy.Type);
        Assert.Equal("VolumeBusy", busy.Text("errorCode"));
        Assert.True(IsTransient(busy));
        Assert.Equal(2, RetriesOf(bed, snapshot.CommandId).Count); // attempts 1 and 2 retried, the 3rd fails

        var shrink = new ExtendVolume { CommandId = Guid.NewGuid(), VolumeId = volume, NewSizeBytes = MiB };
        var refused = await bed.RunAsync(shrink);
        Assert.Equal(nameof(CommandFailed), refused.Type);
        Assert.Equal("ShrinkNotAllowed", refused.Text("errorCode"));
        Assert.False(IsTransient(refused));
        Assert.Empty(RetriesOf(bed, shrink.CommandId));

        await Tools.WaitForEmptyInboxAsync(bed.Share);
        var added = Tools.Tree(bed.Share).Except(before).Where(p => !p.StartsWith(".nfsvolumeworker", StringComparison.Ordinal)).ToList();
        Assert.True(added.Count == 0, "touched: " + string.Join(", ", added));
    }
}
