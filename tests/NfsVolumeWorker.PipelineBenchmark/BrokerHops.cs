using System.Diagnostics;
using NfsVolumeWorker.Broker;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;

namespace NfsVolumeWorker.PipelineBenchmark;

/// <summary>
/// The broker's part of a command's trip with no work in it: a persistent message published with a confirm into a
/// quorum queue, relayed (consume, publish confirmed, ack) by a consumer on a connection of its own into a second
/// quorum queue, relayed again into the client's own exclusive queue and read there. Those are the three hops every
/// native command makes (client → ingress, router → partition, worker → the subscriber's queue), with the worker's
/// queue types: a quorum queue hands a message to its consumer only once its log has it on disk (an fsync of the
/// broker's), a classic queue at once. So its median is the least any worker built on this topology can take, on the
/// same broker in the same run.
/// </summary>
internal sealed class BrokerHops : IAsyncDisposable
{
    private const string Prefix = "nfsvol.bench.hop-";
    private readonly List<IConnection> _connections = [];
    private readonly IChannel _publisher;
    private TaskCompletionSource<long>? _arrived;

    private BrokerHops(IChannel publisher) => _publisher = publisher;

    public static async Task<BrokerHops> OpenAsync(Uri vhost, CancellationToken ct)
    {
        var broker = BrokerAddress.Parse(vhost.ToString());
        var confirmed = new CreateChannelOptions(publisherConfirmationsEnabled: true, publisherConfirmationTrackingEnabled: true);
        var client = await broker.ConnectAsync("bench-hops-client", ConnectionRecovery.ByCaller, ct);
        var hops = new BrokerHops(await client.CreateChannelAsync(confirmed, ct));
        hops._connections.Add(client);
        // As the worker's ingress and partition queues (PartitionSubscriptions.DeclareTopologyAsync): quorum.
        var quorum = new Dictionary<string, object?> { ["x-queue-type"] = "quorum" };
        for (var i = 1; i <= 2; i++)
        {
            await hops._publisher.QueueDeclareAsync(Prefix + i, durable: true, exclusive: false, autoDelete: false, quorum, cancellationToken: ct);
            await hops._publisher.QueuePurgeAsync(Prefix + i, ct);
        }
        // As the benchmark's event subscription (EventSubscription.OpenAsync): server-named, exclusive, classic.
        var reader = await client.CreateChannelAsync(cancellationToken: ct);
        var last = (await reader.QueueDeclareAsync("", durable: false, exclusive: true, autoDelete: true, cancellationToken: ct)).QueueName;
        for (var i = 1; i <= 2; i++)
        {
            var connection = await broker.ConnectAsync($"bench-hops-relay-{i}", ConnectionRecovery.ByCaller, ct);
            hops._connections.Add(connection);
            var channel = await connection.CreateChannelAsync(confirmed, ct);
            var next = i == 1 ? Prefix + 2 : last;
            var consumer = new AsyncEventingBasicConsumer(channel);
            consumer.ReceivedAsync += async (_, delivery) =>
            {
                await channel.BasicPublishAsync("", next, mandatory: true, new BasicProperties { Persistent = true }, delivery.Body, CancellationToken.None);
                await channel.BasicAckAsync(delivery.DeliveryTag, false, CancellationToken.None);
            };
            await channel.BasicConsumeAsync(Prefix + i, autoAck: false, consumer, ct);
        }
        var end = new AsyncEventingBasicConsumer(reader);
        end.ReceivedAsync += async (_, delivery) =>
        {
            var at = Stopwatch.GetTimestamp();
            await reader.BasicAckAsync(delivery.DeliveryTag, false, CancellationToken.None);
            hops._arrived?.TrySetResult(at);
        };
        await reader.BasicConsumeAsync(last, autoAck: false, end, ct);
        return hops;
    }

    /// <summary>One message through the three hops: from the start of the client's publish to its arrival.</summary>
    public async Task<TimeSpan> RoundTripAsync(TimeSpan timeout, CancellationToken ct)
    {
        _arrived = new TaskCompletionSource<long>(TaskCreationOptions.RunContinuationsAsynchronously);
        var start = Stopwatch.GetTimestamp();
        await _publisher.BasicPublishAsync("", Prefix + 1, mandatory: true, new BasicProperties { Persistent = true }, new byte[600], ct);
        var at = await _arrived.Task.WaitAsync(timeout, ct);
        return Stopwatch.GetElapsedTime(start, at);
    }

    public async ValueTask DisposeAsync()
    {
        for (var i = 1; i <= 2; i++)
        {
            try
            {
                await _publisher.QueueDeleteAsync(Prefix + i);
            }
            catch (RabbitMQ.Client.Exceptions.RabbitMQClientException)
            {
                // the vhost goes with the session anyway
            }
        }
        foreach (var connection in _connections)
        {
            await connection.DisposeAsync();
        }
    }
}
