using NfsVolumeWorker.Contracts;
using System.Collections.Concurrent;
using System.Text;
using System.Text.Json;
using NfsVolumeWorker.Testing;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;

namespace NfsVolumeWorker.Tests.Support;

/// <summary>One event as a subscriber saw it: the envelope's message id and type, and the message itself.</summary>
public sealed record ReceivedEvent(Guid MessageId, string Type, Guid CommandId, Guid VolumeId, string MessageJson, long Order, DateTimeOffset ReceivedAt)
{
    public JsonElement Message => JsonDocument.Parse(MessageJson).RootElement;

    public string? Text(string property) => Message.TryGetProperty(property, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    public bool AlreadyDone => Message.TryGetProperty("alreadyDone", out var v) && v.ValueKind == JsonValueKind.True;

    public override string ToString() => $"{Type} {CommandId} (message {MessageId}): {MessageJson}";
}

/// <summary>
/// A subscriber to the worker's events: a temporary queue bound to the <c>ITerminalEvent</c> exchange
/// (every terminal event type's exchange is bound to it by MassTransit's publish topology) and to the
/// <c>OperationProgressed</c> exchange. Counts terminal events by message id.
/// </summary>
public sealed class EventCollector : IAsyncDisposable
{
    public static readonly string TerminalExchange = MassTransitEnvelope.ExchangeOf(typeof(ITerminalEvent));
    public static readonly string ProgressExchange = MassTransitEnvelope.ExchangeOf(typeof(OperationProgressed));

    private readonly IConnection _connection;
    private readonly IChannel _channel;
    private readonly ConcurrentQueue<ReceivedEvent> _terminal = new();
    private readonly ConcurrentQueue<ReceivedEvent> _progress = new();
    private long _order;

    private EventCollector(IConnection connection, IChannel channel)
    {
        _connection = connection;
        _channel = channel;
    }

    public static async Task<EventCollector> StartAsync(Uri vhostUri)
    {
        var connection = await new ConnectionFactory { Uri = vhostUri }.CreateConnectionAsync("test-event-collector");
        var channel = await connection.CreateChannelAsync();
        var collector = new EventCollector(connection, channel);
        // Declared as MassTransit declares them (fanout, durable), so whoever comes first wins without a conflict.
        await channel.ExchangeDeclareAsync(TerminalExchange, ExchangeType.Fanout, durable: true, autoDelete: false);
        await channel.ExchangeDeclareAsync(ProgressExchange, ExchangeType.Fanout, durable: true, autoDelete: false);
        var terminalQueue = (await channel.QueueDeclareAsync("", durable: false, exclusive: true, autoDelete: true)).QueueName;
        var progressQueue = (await channel.QueueDeclareAsync("", durable: false, exclusive: true, autoDelete: true)).QueueName;
        await channel.QueueBindAsync(terminalQueue, TerminalExchange, "");
        await channel.QueueBindAsync(progressQueue, ProgressExchange, "");
        await channel.BasicConsumeAsync(terminalQueue, autoAck: true, collector.Consumer(collector._terminal));
        await channel.BasicConsumeAsync(progressQueue, autoAck: true, collector.Consumer(collector._progress));
        return collector;
    }

    /// <summary>
    /// A collector that outlives broker faults: a durable quorum queue of its own (on a cluster, replicated on
    /// every node) bound to the terminal events' exchange, consumed with acknowledgements on a connection that
    /// recovers by itself, to any of <paramref name="nodes"/> (<c>host:port</c>; none: the URL's node only).
    /// A redelivery of an event it already holds (its ack was lost with the connection) is not counted twice.
    /// </summary>
    public static async Task<EventCollector> StartDurableAsync(Uri vhostUri, IReadOnlyList<string>? nodes = null)
    {
        var factory = new ConnectionFactory
        {
            Uri = vhostUri,
            AutomaticRecoveryEnabled = true,
            TopologyRecoveryEnabled = true,
            NetworkRecoveryInterval = TimeSpan.FromMilliseconds(500),
            RequestedHeartbeat = TimeSpan.FromSeconds(5),
        };
        var endpoints = (nodes is { Count: > 0 } ? nodes : [$"{vhostUri.Host}:{vhostUri.Port}"])
            .Select(n => new AmqpTcpEndpoint(n[..n.LastIndexOf(':')], int.Parse(n[(n.LastIndexOf(':') + 1)..], System.Globalization.CultureInfo.InvariantCulture)))
            .ToList();
        var connection = await factory.CreateConnectionAsync(endpoints, "test-event-collector-durable");
        var channel = await connection.CreateChannelAsync();
        var collector = new EventCollector(connection, channel);
        await channel.ExchangeDeclareAsync(TerminalExchange, ExchangeType.Fanout, durable: true, autoDelete: false);
        var queue = $"test-events-{Guid.NewGuid():N}";
        await channel.QueueDeclareAsync(queue, durable: true, exclusive: false, autoDelete: false,
            new Dictionary<string, object?> { ["x-queue-type"] = "quorum" });
        await channel.QueueBindAsync(queue, TerminalExchange, "");
        await channel.BasicQosAsync(0, 200, false);
        var consumer = new AsyncEventingBasicConsumer(channel);
        consumer.ReceivedAsync += async (_, ea) =>
        {
            var e = Parse(ea.Body.ToArray(), Interlocked.Increment(ref collector._order));
            if (!(ea.Redelivered && collector._terminal.Any(x => x.MessageId == e.MessageId && x.MessageJson == e.MessageJson)))
            {
                collector._terminal.Enqueue(e);
            }
            try
            {
                await channel.BasicAckAsync(ea.DeliveryTag, multiple: false);
            }
            catch (Exception x) when (x is RabbitMQ.Client.Exceptions.AlreadyClosedException or OperationCanceledException or IOException)
            {
                // The connection went; the broker delivers it again, and the check above drops the repeat.
            }
        };
        await channel.BasicConsumeAsync(queue, autoAck: false, consumer);
        return collector;
    }

    private AsyncEventingBasicConsumer Consumer(ConcurrentQueue<ReceivedEvent> into)
    {
        var consumer = new AsyncEventingBasicConsumer(_channel);
        consumer.ReceivedAsync += (_, ea) =>
        {
            into.Enqueue(Parse(ea.Body.ToArray(), Interlocked.Increment(ref _order)));
            return Task.CompletedTask;
        };
        return consumer;
    }

    internal static ReceivedEvent Parse(byte[] body, long order)
    {
        Assert.True(MassTransitEnvelope.TryRead(body, out var envelope), "an event that is not a MassTransit envelope: " + Encoding.UTF8.GetString(body));
        var message = envelope.Message;
        return new ReceivedEvent(envelope.MessageId ?? throw new InvalidOperationException("an event without a message id"), envelope.TypeName,
            message["commandId"] is { } c ? c.GetValue<Guid>() : Guid.Empty,
            message["volumeId"] is { } v ? v.GetValue<Guid>() : Guid.Empty,
            message.ToJsonString(), order, DateTimeOffset.UtcNow);
    }

    public IReadOnlyList<ReceivedEvent> Terminal => [.. _terminal];

    public IReadOnlyList<ReceivedEvent> Progress => [.. _progress];

    public IReadOnlyList<ReceivedEvent> TerminalOf(Guid commandId) => _terminal.Where(e => e.CommandId == commandId).ToList();

    /// <summary>Waits for the terminal event of <paramref name="commandId"/>.</summary>
    public async Task<ReceivedEvent> WaitForAsync(Guid commandId, TimeSpan? timeout = null)
    {
        var events = await Eventually.WaitAsync(() => TerminalOf(commandId), l => l.Count > 0, timeout ?? TimeSpan.FromSeconds(60), 20);
        Assert.True(events.Count > 0, $"no terminal event for command {commandId} within {(timeout ?? TimeSpan.FromSeconds(60)).TotalSeconds} s; received: {Describe()}");
        return events[0];
    }

    /// <summary>Waits until every command has a terminal event.</summary>
    public async Task WaitForAllAsync(IReadOnlyCollection<Guid> commandIds, TimeSpan timeout)
    {
        var wanted = commandIds.ToHashSet();
        var missing = await Eventually.WaitAsync(() => wanted.Except(_terminal.Select(e => e.CommandId)).ToList(), m => m.Count == 0, timeout, 100);
        Assert.True(missing.Count == 0, $"{missing.Count} of {wanted.Count} commands have no terminal event after {timeout.TotalSeconds} s, e.g. {string.Join(", ", missing.Take(5))}");
    }

    /// <summary>Each command has exactly one terminal event, counted by message id; a repeat is allowed only
    /// with the same message id and content (a crash between publishing and acking). Returns how many repeats.</summary>
    public int AssertOneTerminalEventEach(IEnumerable<Guid> commandIds)
    {
        var repeats = 0;
        foreach (var id in commandIds)
        {
            var events = TerminalOf(id);
            Assert.True(events.Count >= 1, $"command {id} has no terminal event");
            var ids = events.Select(e => e.MessageId).Distinct().ToList();
            Assert.True(ids.Count == 1, $"command {id} has {ids.Count} distinct terminal events: {string.Join(" | ", events)}");
            Assert.Equal(NfsVolumeWorker.Contracts.EventIds.TerminalEventId(id), ids[0]);
            Assert.All(events, e => Assert.Equal(events[0].MessageJson, e.MessageJson));
            repeats += events.Count - 1;
        }
        return repeats;
    }

    /// <summary>How many scripts (each one volume's commands, in the order sent) finished in another order.</summary>
    public int OrderingViolations(IEnumerable<IReadOnlyList<NfsVolumeWorker.Contracts.VolumeCommand>> scripts) =>
        scripts.Count(commands => !_terminal.Where(e => e.VolumeId == commands[0].VolumeId).OrderBy(e => e.Order)
            .Select(e => e.CommandId).Distinct().SequenceEqual(commands.Select(c => c.CommandId)));

    public string Describe() => string.Join(Environment.NewLine, _terminal.Select(e => e.ToString()));

    public async ValueTask DisposeAsync()
    {
        try
        {
            await _channel.CloseAsync();
            await _connection.CloseAsync();
        }
        catch (Exception e) when (e is RabbitMQ.Client.Exceptions.AlreadyClosedException or OperationCanceledException or IOException)
        {
        }
        _channel.Dispose();
        _connection.Dispose();
    }
}
