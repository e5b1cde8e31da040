using Microsoft.Extensions.DependencyInjection;
using NfsVolumeWorker.Oslo.Rpc;
using NfsVolumeWorker.OsloBridge;
using NfsVolumeWorker.Storage.Inbox;
using NfsVolumeWorker.Storage.Shares;
using NfsVolumeWorker.Testing;
using Xunit.Abstractions;

namespace NfsVolumeWorker.Oslo.Tests;

/// <summary>A cast accepted by a worker that stops before the command runs: a later worker on the same share
/// and broker finishes it, and Cinder's listener gets exactly one .end, built from the record on the share.</summary>
public sealed class RestartTests(ITestOutputHelper output)
{
    /// <param name="adapterWhileRunning">True: the worker that runs the command has the adapter on (the terminal
    /// event reaches it). False: it has the adapter off, the event reaches no adapter, and a third worker with the
    /// adapter sends the notification at start from the command's outcome record.</param>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task A_cast_finished_after_its_worker_stopped_gets_exactly_one_end_notification(bool adapterWhileRunning)
    {
        var broker = await RabbitMqBroker.SharedAsync();
        await using var vhost = await broker.CreateVirtualHostAsync("oslo-restart");
        var root = Directory.CreateTempSubdirectory("nfsvol-oslo-restart-");
        var scratch = Directory.CreateTempSubdirectory("oslo-py-");
        try
        {
            var shareDir = Directory.CreateDirectory(Path.Combine(root.FullName, "export")).FullName;
            var share = new Share(OsloWorker.Export, shareDir, null);
            var pendingDir = Path.Combine(shareDir, Share.WorkerDirectoryName, SharePendingNotificationStore.Folder);
            var volumeId = Guid.NewGuid();
            var common = new[] { "--url", Python.RabbitUrl(vhost), "--host", OsloWorker.Host, "--db", Path.Combine(scratch.FullName, "cinder.sqlite"), "--volume-id", volumeId.ToString() };
            Guid commandId;

            // Worker 1 accepts the cast but cannot run it: the test holds the volume's drain lock (as another
            // instance running the volume would). It is stopped after the ack, before any terminal event.
            using (var drain = VolumeInbox.TryTakeDrain(share, volumeId))
            {
                Assert.NotNull(drain);
                await using (var first = await OsloWorker.StartAsync(vhost, sharedRoot: root))
                {
                    await Python.RunAsync(output, "restart.py", [.. common, "--phase", "cast"]);
                    await Eventually(() => first.Logs.All.Contains($"for volume {volumeId} (accepted)", StringComparison.Ordinal), "worker 1 accepted the cast");
                    // The ack follows the log line. The management API's counts lag by up to 1 s
                    // (collect_statistics_interval), so wait that long before trusting a zero.
                    await Task.Delay(1000);
                    await EventuallyAsync(async () => (await vhost.ListQueuesAsync()).Where(q => q.Name.StartsWith("cinder-volume", StringComparison.Ordinal)).All(q => q.Messages == 0),
                        "worker 1 acked the cast");
                    Assert.Equal(1, first.Services.GetRequiredService<OsloRpcServer>().PendingCount);
                }
                var records = Directory.GetFiles(pendingDir);
                Assert.Single(records);
                commandId = Guid.ParseExact(Path.GetFileNameWithoutExtension(records[0]), "N");
                Assert.Null(CommandOutcomes.Read(share, commandId));
                Assert.Single(VolumeInbox.List(share, volumeId));
                Assert.DoesNotContain("SECRET-AUTH-TOKEN", await File.ReadAllTextAsync(records[0]), StringComparison.Ordinal);
            }
            foreach (var q in new[] { "cinder-volume", "cinder-volume.hostA@nfs", "cinder-volume.hostA@nfs.hostA" })
            {
                Assert.Equal(0, await vhost.MessageCountAsync(q)); // acked: nobody will deliver the cast again
            }
            // In-process, every worker gets the same event queue name; a real restart gets a new one (new pid).
            await using (var connection = await vhost.ConnectAsync())
            await using (var channel = await connection.CreateChannelAsync())
            {
                await channel.QueueDeleteAsync($"nfsvol.oslo-events.{OsloWorker.Host}.{Environment.MachineName}-{Environment.ProcessId}", ifUnused: false, ifEmpty: false);
            }

            if (!adapterWhileRunning)
            {
                await using var plain = await OsloWorker.StartAsync(vhost, new Dictionary<string, string?> { ["Oslo:Enabled"] = "false" }, root);
                await Eventually(() => CommandOutcomes.Read(share, commandId) is not null, "worker 2 (no adapter) ran the command");
                Assert.Single(Directory.GetFiles(pendingDir)); // no adapter heard the event: the record waits
            }

            await using var last = await OsloWorker.StartAsync(vhost, sharedRoot: root);
            await Python.RunAsync(output, "restart.py", [.. common, "--phase", "listen"]);
            // The record is deleted before the line is logged: wait for both.
            var sent = $"oslo notification for command {commandId} sent from its record on share {OsloWorker.Export} (";
            await Eventually(() => Directory.GetFiles(pendingDir).Length == 0 && last.Logs.All.Contains(sent, StringComparison.Ordinal),
                "the record is deleted once the notification is confirmed");
            Assert.True(File.Exists(Path.Combine(shareDir, $"volume-{volumeId}")));
            Assert.Contains(sent + (adapterWhileRunning ? "" : "at start"), last.Logs.All, StringComparison.Ordinal);
        }
        finally
        {
            scratch.Delete(recursive: true);
            root.Delete(recursive: true);
        }
    }

    private static Task Eventually(Func<bool> condition, string what) => EventuallyAsync(() => Task.FromResult(condition()), what);

    private static async Task EventuallyAsync(Func<Task<bool>> condition, string what)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (!await condition())
        {
            Assert.True(DateTime.UtcNow < deadline, $"timed out waiting until {what}");
            await Task.Delay(100);
        }
    }
}
