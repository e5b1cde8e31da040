using System.Text;
using MassTransit;
using NfsVolumeWorker.Contracts;
using RabbitMQ.Client;

namespace NfsVolumeWorker.Tests.Support;

/// <summary>A native producer: a MassTransit bus of its own (its own connection) that publishes commands.
/// Each publish waits for the broker's confirmation, so one producer's commands reach the ingress queue
/// in the order it sent them.</summary>
public sealed class CommandBus : IAsyncDisposable
{
    private readonly IBusControl _bus;

    private CommandBus(IBusControl bus) => _bus = bus;

    /// <param name="nodes">The nodes of a cluster (<c>host:port</c>), the URL's first: the bus moves to the next
    /// one when its node goes away. None: the URL's node only.</param>
    public static async Task<CommandBus> StartAsync(Uri vhostUri, string name = "test-producer", IReadOnlyList<string>? nodes = null)
    {
        var bus = MassTransit.Bus.Factory.CreateUsingRabbitMq(cfg =>
        {
            var vhost = Uri.UnescapeDataString(vhostUri.AbsolutePath.TrimStart('/'));
            cfg.Host(vhostUri.Host, (ushort)vhostUri.Port, vhost, h =>
            {
                var user = vhostUri.UserInfo.Split(':', 2);
                h.Username(Uri.UnescapeDataString(user[0]));
                h.Password(Uri.UnescapeDataString(user[1]));
                h.PublisherConfirmation = true;
                h.ConnectionName(name);
                if (nodes is { Count: > 0 })
                {
                    h.UseCluster(c =>
                    {
                        foreach (var node in nodes)
                        {
                            c.Node(node);
                        }
                    });
                }
            });
        });
        await bus.StartAsync();
        return new CommandBus(bus);
    }

    public IBus Instance => _bus;

    /// <summary>Publishes mandatory and waits for the confirm: a command that no queue would receive (the worker's
    /// topology not declared yet) fails the publish instead of vanishing, so a test can never lose one unnoticed.</summary>
    public Task PublishAsync<T>(T command)
        where T : VolumeCommand =>
        _bus.Publish(command, ctx =>
        {
            if (ctx.TryGetPayload<RabbitMqSendContext>(out var rabbit))
            {
                rabbit.Mandatory = true;
            }
        });

    /// <summary>Publishes until the broker confirms, as a producer that must not lose a command does: a publish that
    /// fails or gets no confirm within <paramref name="attemptTimeout"/> (the broker or its node is going away) is
    /// sent again, same command id, after a short pause. The worker runs a command sent twice once. Returns how many
    /// attempts failed.</summary>
    public async Task<int> PublishUntilConfirmedAsync(VolumeCommand command, TimeSpan giveUpAfter, TimeSpan? attemptTimeout = null)
    {
        var deadline = DateTime.UtcNow + giveUpAfter;
        for (var failed = 0; ; failed++)
        {
            var timeout = attemptTimeout ?? TimeSpan.FromSeconds(10);
            using var cts = new CancellationTokenSource(timeout);
            try
            {
                // WaitAsync as well as the token: while its connection recovers from a node that died, MassTransit's
                // publish was seen to outlast its cancellation for good (a cluster test hung 20 minutes in here).
                await (command switch
                {
                    CreateVolume x => Publish(x, cts.Token),
                    CreateSnapshot x => Publish(x, cts.Token),
                    DeleteSnapshot x => Publish(x, cts.Token),
                    ExtendVolume x => Publish(x, cts.Token),
                    DeleteVolume x => Publish(x, cts.Token),
                    _ => throw new ArgumentException(command.GetType().Name, nameof(command)),
                }).WaitAsync(timeout + TimeSpan.FromSeconds(5));
                return failed;
            }
            catch (Exception e) when (e is not ArgumentException && DateTime.UtcNow < deadline)
            {
                await Task.Delay(250);
            }
        }
    }

    private Task Publish<T>(T command, CancellationToken cancellationToken)
        where T : VolumeCommand =>
        _bus.Publish(command, ctx =>
        {
            if (ctx.TryGetPayload<RabbitMqSendContext>(out var rabbit))
            {
                rabbit.Mandatory = true;
            }
        }, cancellationToken);

    public async ValueTask DisposeAsync() => await _bus.StopAsync();
}

/// <summary>Raw AMQP publishing straight into a queue, for messages MassTransit would never produce.</summary>
public static class RawSend
{
    public static async Task ToQueueAsync(Uri vhostUri, string queue, string body, string? messageType = null, string contentType = MassTransitEnvelope.ContentType,
        IDictionary<string, object?>? headers = null)
    {
        await using var connection = await new ConnectionFactory { Uri = vhostUri }.CreateConnectionAsync("test-raw-sender");
        await using var channel = await connection.CreateChannelAsync(new CreateChannelOptions(publisherConfirmationsEnabled: true, publisherConfirmationTrackingEnabled: true));
        var props = new BasicProperties { Persistent = true, ContentType = contentType, MessageId = Guid.NewGuid().ToString(), Headers = headers };
        await channel.BasicPublishAsync("", queue, mandatory: true, props, Encoding.UTF8.GetBytes(body));
    }

    /// <summary>A MassTransit envelope around <paramref name="messageJson"/> with the given message type name.</summary>
    public static string Envelope(string messageJson, string typeName) =>
        $$"""
        {"messageId":"{{Guid.NewGuid()}}","messageType":["{{MassTransitEnvelope.UrnPrefix}}{{typeName}}"],"sentTime":"{{DateTimeOffset.UtcNow:O}}","headers":{},"message":{{messageJson}}}
        """;

    /// <summary>Reads (and acks) the messages waiting in <paramref name="queue"/> (with a consumer: the error
    /// queues are quorum queues with a single active consumer, which refuse basic.get): body and headers as strings.</summary>
    public static async Task<List<(string Body, Dictionary<string, string> Headers)>> DrainAsync(Uri vhostUri, string queue, TimeSpan? quiet = null)
    {
        var result = new List<(string, Dictionary<string, string>)>();
        await using var connection = await new ConnectionFactory { Uri = vhostUri }.CreateConnectionAsync("test-raw-reader");
        await using var channel = await connection.CreateChannelAsync();
        var consumer = new RabbitMQ.Client.Events.AsyncEventingBasicConsumer(channel);
        var last = DateTime.UtcNow;
        consumer.ReceivedAsync += (_, got) =>
        {
            var headers = (got.BasicProperties.Headers ?? new Dictionary<string, object?>()).ToDictionary(
                h => h.Key, h => h.Value switch { byte[] b => Encoding.UTF8.GetString(b), null => "", var o => o.ToString() ?? "" }, StringComparer.Ordinal);
            lock (result)
            {
                result.Add((Encoding.UTF8.GetString(got.Body.Span), headers));
                last = DateTime.UtcNow;
            }
            return Task.CompletedTask;
        };
        await channel.BasicConsumeAsync(queue, autoAck: true, consumer);
        var wait = quiet ?? TimeSpan.FromSeconds(1);
        while (true)
        {
            await Task.Delay(100);
            lock (result)
            {
                if (DateTime.UtcNow - last > wait)
                {
                    return [.. result];
                }
            }
        }
    }
}
