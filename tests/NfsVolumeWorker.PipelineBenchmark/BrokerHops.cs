using System.Diagnostics;
using NfsVolumeWorker.Broker;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;

namespace NfsVolumeWorker.PipelineBenchmark;

/// <summary>
/// The broker's part of a command's trip with no work in it: a persistent message published with a confirm into a
/// durable queue, relayed (consume, publish confirmed, ack) by a consumer on a connection of its own into a second
/// durable queue, relayed again into a third, and read there by the client. Those are the three hops every native
/// command makes (client → ingress, router → partition, worker → event exchange), so its median is the least any
/// worker built on this topology can take, on the same broker in the same run.
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
        for (var i = 1; i <= 3; i++)
        {
            await hops._publisher.QueueDeclareAsync(Prefix + i, durable: true, exclusive: false, autoDelete: false, cancellationToken: ct);
            await hops._publisher.QueuePurgeAsync(Prefix + i, ct);
        }
        for (var i = 1; i <= 2; i++)
        {
            var connection = await broker.ConnectAsync($"bench-hops-relay-{i}", ConnectionRecovery.ByCaller, ct);
            hops._connections.Add(connection);
            var channel = await connection.CreateChannelAsync(confirmed, ct);
            var next = Prefix + (i + 1);
            var consumer = new AsyncEventingBasicConsumer(channel);
            consumer.ReceivedAsync += async (_, delivery) =>
            {
                await channel.BasicPublishAsync("", next, mandatory: true, new BasicProperties { Persistent = true }, delivery.Body, CancellationToken.None);
                await channel.BasicAckAsync(delivery.DeliveryTag, false, CancellationToken.None);
            };
            await channel.BasicConsumeAsync(Prefix + i, autoAck: false, consumer, ct);
        }
        var reader = await client.CreateChannelAsync(cancellationToken: ct);
        var end = new AsyncEventingBasicConsumer(reader);
        end.ReceivedAsync += async (_, delivery) =>
        {
            var at = Stopwatch.GetTimestamp();
            await reader.BasicAckAsync(delivery.DeliveryTag, false, CancellationToken.None);
            hops._arrived?.TrySetResult(at);
        };
        await reader.BasicConsumeAsync(Prefix + 3, autoAck: false, end, ct);
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
        for (var i = 1; i <= 3; i++)
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
