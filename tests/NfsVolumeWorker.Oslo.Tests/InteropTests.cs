using System.Text.Json.Nodes;
using NfsVolumeWorker.Testing;
using RabbitMQ.Client;
using RabbitMQ.Client.Exceptions;
using Xunit.Abstractions;

namespace NfsVolumeWorker.Oslo.Tests;

/// <summary>The worker against the real client side: Cinder's cinder.volume.rpcapi.VolumeAPI and stock
/// oslo.messaging clients and notification listeners, on a real broker, with real qemu-img.</summary>
public sealed class InteropTests(ITestOutputHelper output)
{
    private const string SecretToken = "gAAAAAB-SECRET-AUTH-TOKEN-must-never-be-logged";

    private async Task<JsonObject> LifecycleAsync(string exchange, string? versionCap, IDictionary<string, string?>? extra = null)
    {
        var broker = await RabbitMqBroker.SharedAsync();
        await using var vhost = await broker.CreateVirtualHostAsync("oslo");
        var settings = new Dictionary<string, string?>(extra ?? new Dictionary<string, string?>()) { ["Oslo:ControlExchange"] = exchange };
        await using var worker = await OsloWorker.StartAsync(vhost, settings);
        var scratch = Directory.CreateTempSubdirectory("oslo-py-");
        try
        {
            var result = Path.Combine(scratch.FullName, "result.json");
            var args = new List<string>
            {
                "--url", Python.RabbitUrl(vhost), "--exchange", exchange, "--host", OsloWorker.Host, "--share", OsloWorker.Export,
                "--dir", worker.ShareDirectory, "--db", Path.Combine(scratch.FullName, "cinder.sqlite"), "--result", result,
            };
            if (versionCap is not null)
            {
                args.AddRange(["--version-cap", versionCap]);
            }
            await Python.RunAsync(output, "lifecycle.py", [.. args]);

            // On disk, checked again from here: nothing left of either volume, and the worker's own files stay in its dot-directory.
            Assert.DoesNotContain(Directory.EnumerateFileSystemEntries(worker.ShareDirectory), p => !Path.GetFileName(p).StartsWith('.'));
            Assert.DoesNotContain(SecretToken, worker.Logs.All, StringComparison.Ordinal);
            Assert.Contains("oslo adapter serving hostA@nfs on control exchange " + exchange, worker.Logs.All, StringComparison.Ordinal);
            return JsonNode.Parse(await File.ReadAllTextAsync(result))!.AsObject();
        }
        finally
        {
            scratch.Delete(recursive: true);
        }
    }

    [Fact]
    public async Task Cinder_rpcapi_runs_the_full_snapshot_lifecycle_on_current_routing_with_notifications_like_cinders()
    {
        var result = await LifecycleAsync("cinder", versionCap: null);
        Assert.False((bool)result["legacy"]!);
        var types = result["notifications"]!.AsArray().Select(n => (string)n!["event_type"]!).ToList();
        foreach (var expected in new[]
                 {
                     "volume.create.start", "volume.create.end", "snapshot.create.start", "snapshot.create.end", "snapshot.delete.start",
                     "snapshot.delete.end", "volume.resize.start", "volume.resize.end", "volume.revert.start", "volume.revert.end",
                     "volume.delete.start", "volume.delete.end",
                 })
        {
            Assert.Contains(expected, types);
        }
    }

    [Fact]
    public async Task Cinder_rpcapi_pinned_to_3_5_uses_the_legacy_routing_and_is_served_as_well()
    {
        var result = await LifecycleAsync("cinder", versionCap: "3.5");
        Assert.True((bool)result["legacy"]!);
    }

    [Fact]
    public async Task The_worker_serves_on_control_exchange_openstack_when_configured_so()
    {
        await LifecycleAsync("openstack", versionCap: null);
    }

    [Fact]
    public async Task A_volume_smaller_than_Cinder_declares_gets_overlays_of_the_declared_size_and_keeps_passing_the_size_check()
    {
        var broker = await RabbitMqBroker.SharedAsync();
        await using var vhost = await broker.CreateVirtualHostAsync("oslo-size");
        await using var worker = await OsloWorker.StartAsync(vhost);
        var scratch = Directory.CreateTempSubdirectory("oslo-py-");
        try
        {
            await Python.RunAsync(output, "declared_size.py",
                "--url", Python.RabbitUrl(vhost), "--host", OsloWorker.Host, "--dir", worker.ShareDirectory,
                "--db", Path.Combine(scratch.FullName, "cinder.sqlite"));
        }
        finally
        {
            scratch.Delete(recursive: true);
        }
    }

    [Fact]
    public async Task Publish_service_capabilities_reaches_a_real_oslo_scheduler_as_update_service_capabilities()
    {
        var broker = await RabbitMqBroker.SharedAsync();
        await using var vhost = await broker.CreateVirtualHostAsync("oslo-caps");
        await using var worker = await OsloWorker.StartAsync(vhost);
        var scratch = Directory.CreateTempSubdirectory("oslo-py-");
        try
        {
            await Python.RunAsync(output, "capabilities.py",
                "--url", Python.RabbitUrl(vhost), "--host", OsloWorker.Host, "--db", Path.Combine(scratch.FullName, "cinder.sqlite"));
        }
        finally
        {
            scratch.Delete(recursive: true);
        }
    }

    [Fact]
    public async Task Bad_input_yields_failure_replies_and_error_notifications_touches_nothing_and_duplicates_run_once()
    {
        var broker = await RabbitMqBroker.SharedAsync();
        await using var vhost = await broker.CreateVirtualHostAsync("oslo-err");
        await using var worker = await OsloWorker.StartAsync(vhost);
        var scratch = Directory.CreateTempSubdirectory("oslo-py-");
        try
        {
            await Python.RunAsync(output, "errors.py",
                "--url", Python.RabbitUrl(vhost), "--host", OsloWorker.Host, "--dir", worker.ShareDirectory,
                "--db", Path.Combine(scratch.FullName, "cinder.sqlite"), "--result", Path.Combine(scratch.FullName, "result.json"));
            Assert.DoesNotContain(SecretToken, worker.Logs.All, StringComparison.Ordinal);
            Assert.DoesNotContain(Directory.EnumerateFileSystemEntries(worker.ShareDirectory), p => !Path.GetFileName(p).StartsWith('.'));
        }
        finally
        {
            scratch.Delete(recursive: true);
        }
    }

    [Fact]
    public async Task The_topology_is_declared_exactly_as_oslo_declares_it_so_another_client_declaring_it_gets_no_precondition_failed()
    {
        var broker = await RabbitMqBroker.SharedAsync();
        await using var vhost = await broker.CreateVirtualHostAsync("oslo-topo");
        await using var worker = await OsloWorker.StartAsync(vhost);
        await using var connection = await vhost.ConnectAsync();
        await using var channel = await connection.CreateChannelAsync();
        // What a real cinder-volume (oslo.messaging, default options) declares: identical flags, so these succeed.
        await channel.ExchangeDeclareAsync("cinder", ExchangeType.Topic, durable: false, autoDelete: false);
        foreach (var q in new[] { "cinder-volume", "cinder-volume.hostA@nfs", "cinder-volume.hostA@nfs.hostA" })
        {
            var ok = await channel.QueueDeclareAsync(q, durable: false, exclusive: false, autoDelete: false);
            Assert.Equal(1u, ok.ConsumerCount);
        }
        await channel.ExchangeDeclareAsync("cinder-volume_fanout", ExchangeType.Fanout, durable: false, autoDelete: true);
        await channel.ExchangeDeclareAsync("cinder-volume.hostA@nfs_fanout", ExchangeType.Fanout, durable: false, autoDelete: true);
        var queues = await vhost.ListQueuesAsync();
        var fanouts = queues.Where(q => q.Name.StartsWith("cinder-volume_fanout_", StringComparison.Ordinal) || q.Name.StartsWith("cinder-volume.hostA@nfs_fanout_", StringComparison.Ordinal)).ToList();
        Assert.Equal(2, fanouts.Count);
        Assert.All(fanouts, q => Assert.Equal(1_800_000L, Convert.ToInt64(q.Arguments["x-expires"], System.Globalization.CultureInfo.InvariantCulture)));

        // A durable declaration (another deployment's amqp_durable_queues=true) is refused: the flags matter.
        await using var other = await connection.CreateChannelAsync();
        var e = await Assert.ThrowsAsync<OperationInterruptedException>(() => other.QueueDeclareAsync("cinder-volume", durable: true, exclusive: false, autoDelete: false));
        Assert.Contains("PRECONDITION_FAILED", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task With_durable_and_quorum_options_the_worker_matches_a_deployment_that_sets_them()
    {
        var broker = await RabbitMqBroker.SharedAsync();
        await using var vhost = await broker.CreateVirtualHostAsync("oslo-quorum");
        await using var worker = await OsloWorker.StartAsync(vhost, new Dictionary<string, string?> { ["Oslo:QuorumQueues"] = "true", ["Oslo:TransientQueuesTtlSeconds"] = "600" });
        await using var connection = await vhost.ConnectAsync();
        await using var channel = await connection.CreateChannelAsync();
        await channel.ExchangeDeclareAsync("cinder", ExchangeType.Topic, durable: true, autoDelete: false);
        await channel.QueueDeclareAsync("cinder-volume.hostA@nfs.hostA", durable: true, exclusive: false, autoDelete: false,
            new Dictionary<string, object?> { ["x-queue-type"] = "quorum" });
        var queues = await vhost.ListQueuesAsync();
        Assert.Equal("quorum", queues.Single(q => q.Name == "cinder-volume").Type);
        Assert.All(queues.Where(q => q.Name.Contains("_fanout_", StringComparison.Ordinal)),
            q => Assert.Equal(600_000L, Convert.ToInt64(q.Arguments["x-expires"], System.Globalization.CultureInfo.InvariantCulture)));
    }

    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(true, true)]
    public async Task A_real_oslo_rpc_server_and_notifier_share_the_broker_with_the_worker_without_precondition_failed(bool durable, bool quorum)
    {
        var broker = await RabbitMqBroker.SharedAsync();
        await using var vhost = await broker.CreateVirtualHostAsync("oslo-coexist");
        await using var worker = await OsloWorker.StartAsync(vhost, new Dictionary<string, string?>
        {
            ["Oslo:AmqpDurableQueues"] = durable ? "true" : "false", ["Oslo:QuorumQueues"] = quorum ? "true" : "false",
        });
        var scratch = Directory.CreateTempSubdirectory("oslo-py-");
        try
        {
            var args = new List<string> { "--url", Python.RabbitUrl(vhost), "--host", OsloWorker.Host, "--db", Path.Combine(scratch.FullName, "cinder.sqlite") };
            if (durable)
            {
                args.Add("--durable");
            }
            if (quorum)
            {
                args.Add("--quorum");
            }
            await Python.RunAsync(output, "coexist.py", [.. args]);
        }
        finally
        {
            scratch.Delete(recursive: true);
        }
    }
}
