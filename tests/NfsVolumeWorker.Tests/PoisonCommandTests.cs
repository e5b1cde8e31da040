using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Execution;
using NfsVolumeWorker.Messaging;
using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Inbox;
using NfsVolumeWorker.Storage.Locking;
using NfsVolumeWorker.Storage.Shares;
using NfsVolumeWorker.Tests.Support;

namespace NfsVolumeWorker.Tests;

/// <summary>No command can wedge a volume: every command ends with exactly one terminal event, whatever it
/// holds and whatever the engine throws; a fault outside any command backs off instead of spinning.</summary>
public sealed class PoisonCommandTests(ITestOutputHelper output)
{
    private const long MiB = WorkerTestBed.MiB;
    private const int DrainFailedLog = 3006;
    private const int UnexpectedLog = 3015;

    private static bool IsTransient(ReceivedEvent e) => e.Message.TryGetProperty("isTransient", out var t) && t.GetBoolean();

    private static List<string> VolumeFiles(WorkerTestBed bed) =>
        Tools.Tree(bed.Share).Where(p => !p.StartsWith(".nfsvolumeworker", StringComparison.Ordinal)).ToList();

    [Fact]
    public async Task Sizes_and_formats_the_share_cannot_hold_are_refused_at_once_and_the_volume_goes_on()
    {
        await using var bed = await WorkerTestBed.StartAsync(output, "poison-size");
        var share = bed.Worker.Services.GetRequiredService<ShareMap>().All.Single();
        var maxFile = VolumeSizeLimit.MaxFileSize(share);
        output.WriteLine($"largest file on the test share: {maxFile} bytes");
        Assert.NotNull(maxFile);
        var vol = Guid.NewGuid();

        var huge = await bed.RunAsync(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = vol, SizeBytes = long.MaxValue }, TimeSpan.FromSeconds(20));
        var pastFileSystem = await bed.RunAsync(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = vol, SizeBytes = maxFile!.Value + 1, Format = VolumeFormat.Raw }, TimeSpan.FromSeconds(20));
        var pastQcow2 = await bed.RunAsync(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = vol, SizeBytes = VolumeSizeLimit.Qcow2MaxVirtualSize + 1, Format = VolumeFormat.Qcow2 }, TimeSpan.FromSeconds(20));
        // A number where an enum belongs decodes without complaint; it must not become a raw volume.
        var badFormatId = Guid.NewGuid();
        await RawSend.ToQueueAsync(bed.VirtualHost.AmqpUri, Topology.IngressQueue, RawSend.Envelope(
            $$"""{"commandId":"{{badFormatId}}","volumeId":"{{vol}}","sizeBytes":{{MiB}},"format":7}""", nameof(CreateVolume)));
        var badFormat = await bed.Events.WaitForAsync(badFormatId, TimeSpan.FromSeconds(20));

        foreach (var e in new[] { huge, pastFileSystem, pastQcow2, badFormat })
        {
            output.WriteLine(e.ToString());
            Assert.Equal(nameof(CommandFailed), e.Type);
            Assert.Equal("InvalidRequest", e.Text("errorCode"));
            Assert.False(IsTransient(e));
        }
        Assert.Contains("largest file", pastFileSystem.Text("message"), StringComparison.Ordinal);
        Assert.Contains("qcow2", pastQcow2.Text("message"), StringComparison.Ordinal);
        Assert.Contains("format 7", badFormat.Text("message"), StringComparison.Ordinal);
        Assert.Empty(VolumeFiles(bed));

        // The volume is not stalled: the commands behind them run.
        await bed.RunOkAsync(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = vol, SizeBytes = MiB }, nameof(VolumeCreated), TimeSpan.FromSeconds(20));
        await bed.RunOkAsync(new DeleteVolume { CommandId = Guid.NewGuid(), VolumeId = vol }, nameof(VolumeDeleted), TimeSpan.FromSeconds(20));
        Assert.Empty(VolumeFiles(bed));
        Assert.Equal(0, bed.Worker.Logs.Count(DrainFailedLog));
        Assert.Equal(0, bed.Worker.Logs.Count(UnexpectedLog));
    }

    [Fact]
    public async Task Poison_commands_an_older_worker_left_in_the_inbox_end_with_CommandFailed_and_the_commands_behind_them_run()
    {
        await using var bed = await WorkerTestBed.StartAsync(output, "poison-inbox");
        var share = bed.Worker.Services.GetRequiredService<ShareMap>().All.Single();
        var vol = Guid.NewGuid();
        // What a worker without the size and enum checks accepted: the entries survive restarts.
        var tooBig = Guid.NewGuid();
        var numericFormat = Guid.NewGuid();
        await AppendRawAsync(share, vol, tooBig, nameof(CreateVolume), $$"""{"commandId":"{{tooBig}}","volumeId":"{{vol}}","sizeBytes":{{long.MaxValue}},"format":"Raw"}""");
        await AppendRawAsync(share, vol, numericFormat, nameof(CreateVolume), $$"""{"commandId":"{{numericFormat}}","volumeId":"{{vol}}","sizeBytes":{{MiB}},"format":7}""");
        var create = new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = vol, SizeBytes = MiB };
        var delete = new DeleteVolume { CommandId = Guid.NewGuid(), VolumeId = vol };
        await bed.Producer.PublishAsync(create);
        await bed.Producer.PublishAsync(delete);

        await bed.Events.WaitForAllAsync([tooBig, numericFormat, create.CommandId, delete.CommandId], TimeSpan.FromSeconds(30));
        Assert.Equal("InvalidRequest", bed.Events.TerminalOf(tooBig)[0].Text("errorCode"));
        Assert.Equal("InvalidRequest", bed.Events.TerminalOf(numericFormat)[0].Text("errorCode"));
        Assert.Equal(nameof(VolumeCreated), bed.Events.TerminalOf(create.CommandId)[0].Type);
        Assert.Equal(nameof(VolumeDeleted), bed.Events.TerminalOf(delete.CommandId)[0].Type);
        await Tools.WaitForEmptyInboxAsync(bed.Share);
        Assert.Empty(VolumeFiles(bed));
        Assert.Equal(0, bed.Worker.Logs.Count(DrainFailedLog));
    }

    [Fact]
    public async Task An_unexpected_exception_in_an_operation_ends_the_command_as_InternalError_once_and_touches_nothing()
    {
        var vol = Guid.NewGuid();
        var fault = new ThrowOnceAt(OperationSteps.CreateVolumeTempWritten, vol);
        await using var bed = await WorkerTestBed.StartAsync(output, "poison-internal", services: s => s.AddSingleton<IStepObserver>(fault));

        var failed = await bed.RunAsync(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = vol, SizeBytes = MiB }, TimeSpan.FromSeconds(20));
        output.WriteLine(failed.ToString());
        Assert.Equal(nameof(CommandFailed), failed.Type);
        Assert.Equal("InternalError", failed.Text("errorCode"));
        Assert.False(IsTransient(failed));
        Assert.Contains(ThrowOnceAt.Message, failed.Text("message"), StringComparison.Ordinal);
        Assert.Equal(1, bed.Worker.Logs.Count(UnexpectedLog));
        Assert.Empty(VolumeFiles(bed)); // the temp file of the failed create is gone, no volume was named

        // Not retried in a loop, and the volume is not stalled.
        await bed.RunOkAsync(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = vol, SizeBytes = MiB }, nameof(VolumeCreated), TimeSpan.FromSeconds(20));
        Assert.Single(bed.Events.TerminalOf(failed.CommandId));
        Assert.Equal(1, bed.Worker.Logs.Count(UnexpectedLog));
        Assert.Equal(0, bed.Worker.Logs.Count(DrainFailedLog));
    }

    [Fact]
    public async Task A_share_fault_outside_any_command_backs_off_shows_in_health_and_the_command_finishes_once_it_passes()
    {
        await using var bed = await WorkerTestBed.StartAsync(output, "poison-backoff");
        var share = bed.Worker.Services.GetRequiredService<ShareMap>().All.Single();
        var vol = Guid.NewGuid();
        await bed.RunOkAsync(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = vol, SizeBytes = MiB }, nameof(VolumeCreated));

        var outcomes = Path.Combine(share.WorkerDirectory, "outcomes");
        var snapshot = new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = vol, SnapshotId = Guid.NewGuid() };
        using (await VolumeLock.AcquireAsync(share, vol, TimeSpan.FromSeconds(5), CancellationToken.None))
        {
            await bed.Producer.PublishAsync(snapshot);
            await Eventually.WaitAsync(() => Tools.InboxEntries(bed.Share).Count, n => n == 1, TimeSpan.FromSeconds(20));
            // The outcome of the command cannot be recorded: the folder is a file now (a share gone wrong).
            Directory.Move(outcomes, outcomes + ".aside");
            await File.WriteAllTextAsync(outcomes, "not a directory");
        }

        var failures = await Eventually.WaitAsync(() => bed.Worker.Logs.Count(DrainFailedLog), n => n >= 4, TimeSpan.FromSeconds(30));
        Assert.True(failures >= 4, $"{failures} drain failures logged");
        var executor = bed.Worker.Services.GetRequiredService<VolumeExecutor>();
        var failing = Assert.Single(executor.FailingVolumes);
        Assert.Equal(vol, failing.VolumeId);
        var health = await bed.Worker.Services.GetRequiredService<HealthCheckService>().CheckHealthAsync();
        Assert.Equal(HealthStatus.Degraded, health.Entries["volumes"].Status);
        output.WriteLine(health.Entries["volumes"].Description);

        // Backing off, not spinning: the waits double (0.1, 0.2, 0.4 s ...), so a few seconds hold a handful of attempts.
        var messages = bed.Worker.Logs.Entries.Where(e => e.Id.Id == DrainFailedLog).Select(e => e.Message).ToList();
        Assert.Contains("trying again in 0.1 s", messages[0], StringComparison.Ordinal);
        Assert.Contains("trying again in 0.2 s", messages[1], StringComparison.Ordinal);
        Assert.Contains("trying again in 0.4 s", messages[2], StringComparison.Ordinal);
        Assert.Empty(bed.Events.TerminalOf(snapshot.CommandId));

        File.Delete(outcomes);
        Directory.Move(outcomes + ".aside", outcomes);
        var done = await bed.Events.WaitForAsync(snapshot.CommandId, TimeSpan.FromSeconds(60));
        Assert.Equal(nameof(SnapshotCreated), done.Type);
        Assert.Single(bed.Events.TerminalOf(snapshot.CommandId));
        await Eventually.WaitAsync(() => executor.FailingVolumes.Count, n => n == 0, TimeSpan.FromSeconds(10));
        Assert.Empty(executor.FailingVolumes);
        health = await bed.Worker.Services.GetRequiredService<HealthCheckService>().CheckHealthAsync();
        Assert.Equal(HealthStatus.Healthy, health.Entries["volumes"].Status);
        var attempts = bed.Worker.Logs.Count(DrainFailedLog);
        output.WriteLine($"{attempts} drain attempts failed before the share recovered");
        Assert.True(attempts < 30, $"{attempts} failed attempts: not backing off");
    }

    private static async Task AppendRawAsync(Share share, Guid volumeId, Guid commandId, string type, string json)
    {
        using var doc = JsonDocument.Parse(json);
        var record = new InboxRecord(type, doc.RootElement.Clone(), 0, DateTimeOffset.UtcNow, null);
        Assert.True(await VolumeInbox.AppendAsync(share, volumeId, commandId, record.ToBytes(), UnixFileMode.UserRead | UnixFileMode.UserWrite, CancellationToken.None));
    }

    /// <summary>Throws an exception the engine does not expect, once, at one step of one volume.</summary>
    private sealed class ThrowOnceAt(string step, Guid volumeId) : IStepObserver
    {
        public const string Message = "injected fault nobody foresaw";
        private int _thrown;

        public void OnStep(string stepName, Guid volume)
        {
            if (stepName == step && volume == volumeId && Interlocked.Exchange(ref _thrown, 1) == 0)
            {
                throw new InvalidOperationException(Message);
            }
        }
    }
}
