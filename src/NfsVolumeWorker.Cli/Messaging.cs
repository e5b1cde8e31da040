using NfsVolumeWorker.Broker;
using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using NfsVolumeWorker.Contracts;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;

namespace NfsVolumeWorker.Cli;

/// <summary>Native commands and events on the wire: MassTransit's JSON envelope (<see cref="MassTransitEnvelope"/>), over RabbitMQ.Client.</summary>
internal static class Wire
{
    public const string BrokerVariable = "NFSVOL_BROKER_URL";

    public static IReadOnlyList<Type> CommandTypes => MessageCatalog.Commands;

    public static IReadOnlyList<Type> TerminalEventTypes => MessageCatalog.TerminalEvents;

    /// <summary>Reading: as MassTransit writes (camelCase), tolerant of case and of enum names.</summary>
    public static readonly JsonSerializerOptions Read = new()
    {
        PropertyNameCaseInsensitive = true,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        AllowTrailingCommas = true,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.CamelCase) },
    };

    /// <summary>Writing: as MassTransit's System.Text.Json serializer does (camelCase, enums as numbers).</summary>
    public static JsonSerializerOptions Write => MassTransitEnvelope.Write;

    public static string ExchangeOf(Type type) => MassTransitEnvelope.ExchangeOf(type);

    /// <summary>A command type by name: <c>CreateSnapshot</c>, <c>createsnapshot</c> or <c>create-snapshot</c>.</summary>
    public static Type? CommandType(string name)
    {
        var key = name.Replace("-", "", StringComparison.Ordinal).Replace("_", "", StringComparison.Ordinal);
        return CommandTypes.FirstOrDefault(t => string.Equals(t.Name, key, StringComparison.OrdinalIgnoreCase));
    }

    /// <summary>The broker: --broker, then NFSVOL_BROKER_URL, then .local/broker/broker.env above the working directory (ops/run-worker's broker).</summary>
    public static BrokerAddress ResolveBroker(string? option, CliEnvironment environment)
    {
        var url = option;
        if (string.IsNullOrWhiteSpace(url))
        {
            url = environment.GetEnvironmentVariable(BrokerVariable);
        }
        if (string.IsNullOrWhiteSpace(url))
        {
            for (var dir = new DirectoryInfo(Directory.GetCurrentDirectory()); dir is not null && string.IsNullOrWhiteSpace(url); dir = dir.Parent)
            {
                var env = Path.Combine(dir.FullName, ".local", "broker", "broker.env");
                if (File.Exists(env))
                {
                    url = File.ReadLines(env).Where(l => l.StartsWith("RABBITMQ_URL=", StringComparison.Ordinal))
                        .Select(l => l["RABBITMQ_URL=".Length..].Trim('"', '\'')).FirstOrDefault();
                }
            }
        }
        if (string.IsNullOrWhiteSpace(url))
        {
            throw new CliUsageException($"No broker given. Use --broker amqp://user:password@host:5672/vhost or set {BrokerVariable}.");
        }
        return BrokerAddress.TryParse(url, null, out var address, out var error, urlSetting: "The broker URL")
            ? address
            : throw new CliUsageException(error);
    }

    public static Task<IConnection> ConnectAsync(BrokerAddress broker, string name, CancellationToken cancellationToken) =>
        broker.ConnectAsync(name, ConnectionRecovery.ByCaller, cancellationToken);

    /// <summary>Declares a type's exchange as MassTransit does (fanout, durable), so publishing and binding work before any worker ran.</summary>
    /// <summary>The exchanges each channel has declared already: a publisher declares each once, as MassTransit's
    /// does, not before every message (a loopback round trip each, a network one on a real broker).</summary>
    private static readonly ConditionalWeakTable<IChannel, ConcurrentDictionary<string, bool>> Declared = new();

    public static Task DeclareExchangeAsync(IChannel channel, Type type, CancellationToken cancellationToken) =>
        channel.ExchangeDeclareAsync(ExchangeOf(type), ExchangeType.Fanout, durable: true, autoDelete: false, cancellationToken: cancellationToken);

    private static async Task DeclareOnceAsync(IChannel channel, Type type, CancellationToken cancellationToken)
    {
        var declared = Declared.GetOrCreateValue(channel);
        if (!declared.ContainsKey(ExchangeOf(type)))
        {
            await DeclareExchangeAsync(channel, type, cancellationToken).ConfigureAwait(false);
            declared[ExchangeOf(type)] = true;
        }
    }

    /// <summary>Publishes a command in MassTransit's envelope, waiting for the broker's confirmation. Mandatory: with
    /// no queue bound (no worker ever ran on the vhost, no definitions imported) it fails instead of vanishing.</summary>
    public static async Task PublishAsync(IChannel channel, VolumeCommand command, Guid messageId, CancellationToken cancellationToken)
    {
        var type = command.GetType();
        await DeclareOnceAsync(channel, type, cancellationToken).ConfigureAwait(false);
        var body = MassTransitEnvelope.Encode(command, messageId, "nfsvol");
        var properties = new BasicProperties
        {
            ContentType = MassTransitEnvelope.ContentType,
            MessageId = messageId.ToString(),
            DeliveryMode = DeliveryModes.Persistent,
            Headers = new Dictionary<string, object?> { ["Content-Type"] = MassTransitEnvelope.ContentType },
        };
        await channel.BasicPublishAsync(ExchangeOf(type), "", mandatory: true, properties, body, cancellationToken).ConfigureAwait(false);
    }
}

/// <summary>One received event, decoded from MassTransit's envelope.</summary>
internal sealed record ReceivedEvent(string Type, Guid? MessageId, JsonObject Message)
{
    public Guid CommandId => Guid.TryParse(Message["commandId"]?.GetValue<string>(), out var g) ? g : Guid.Empty;

    public Guid VolumeId => Guid.TryParse(Message["volumeId"]?.GetValue<string>(), out var g) ? g : Guid.Empty;

    public bool IsTerminal => Wire.TerminalEventTypes.Any(t => t.Name == Type);

    public bool IsFailure => Type == nameof(CommandFailed);

    public static ReceivedEvent? Decode(BasicDeliverEventArgs delivery) =>
        MassTransitEnvelope.TryRead(delivery.Body.Span, out var e) ? new ReceivedEvent(e.TypeName, e.MessageId, e.Message) : null;
}

/// <summary>A temporary exclusive, auto-delete queue bound to every event type's exchange.</summary>
internal sealed class EventSubscription : IAsyncDisposable
{
    private readonly IConnection _connection;
    private readonly IChannel _channel;
    private readonly System.Threading.Channels.Channel<ReceivedEvent> _events = System.Threading.Channels.Channel.CreateUnbounded<ReceivedEvent>();
    private readonly HashSet<Guid> _seen = [];

    private EventSubscription(IConnection connection, IChannel channel)
    {
        _connection = connection;
        _channel = channel;
    }

    public System.Threading.Channels.ChannelReader<ReceivedEvent> Events => _events.Reader;

    public static async Task<EventSubscription> OpenAsync(BrokerAddress broker, bool progress, CancellationToken cancellationToken)
    {
        var connection = await Wire.ConnectAsync(broker, $"nfsvol-watch-{Environment.ProcessId}", cancellationToken).ConfigureAwait(false);
        try
        {
            var channel = await connection.CreateChannelAsync(cancellationToken: cancellationToken).ConfigureAwait(false);
            var subscription = new EventSubscription(connection, channel);
            var queue = await channel.QueueDeclareAsync("", durable: false, exclusive: true, autoDelete: true, cancellationToken: cancellationToken).ConfigureAwait(false);
            foreach (var type in Wire.TerminalEventTypes.Append(typeof(OperationProgressed)))
            {
                await Wire.DeclareExchangeAsync(channel, type, cancellationToken).ConfigureAwait(false);
                if (progress || type != typeof(OperationProgressed))
                {
                    await channel.QueueBindAsync(queue.QueueName, Wire.ExchangeOf(type), "", cancellationToken: cancellationToken).ConfigureAwait(false);
                }
            }
            var consumer = new AsyncEventingBasicConsumer(channel);
            consumer.ReceivedAsync += (_, delivery) =>
            {
                if (ReceivedEvent.Decode(delivery) is { } e && subscription.IsNew(e))
                {
                    subscription._events.Writer.TryWrite(e);
                }
                return Task.CompletedTask;
            };
            await channel.BasicConsumeAsync(queue.QueueName, autoAck: true, consumer, cancellationToken).ConfigureAwait(false);
            return subscription;
        }
        catch
        {
            await connection.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>A terminal event published twice (a crash between publish and ack) carries the same message id: shown once.</summary>
    private bool IsNew(ReceivedEvent e)
    {
        if (!e.IsTerminal || e.MessageId is not { } id)
        {
            return true;
        }
        lock (_seen)
        {
            return _seen.Add(id);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _channel.DisposeAsync().ConfigureAwait(false);
        await _connection.DisposeAsync().ConfigureAwait(false);
    }
}
