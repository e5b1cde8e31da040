using System.Collections.Concurrent;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Oslo.Wire;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;

namespace NfsVolumeWorker.Oslo.Rpc;

/// <summary>
/// The cinder-volume RPC server: declares the topology a real cinder-volume declares, consumes its queues
/// one message at a time, turns requests into native commands (acknowledging each oslo message only after
/// the broker confirmed its command into the partition pipeline), answers calls in oslo's reply format, and
/// publishes Cinder's notifications — .start when a command is accepted, .end/.error from the native terminal
/// event (a queue of this adapter bound to the event exchanges; correlated by command id).
/// </summary>
public sealed class OsloRpcServer(
    IOptions<OsloOptions> optionsAccessor, CinderVolumeEndpoint endpoint, ICommandPipeline pipeline, IVolumeLocator locator,
    TimeProvider time, ILogger<OsloRpcServer> logger) : BackgroundService
{
    /// <summary>The native terminal events this adapter listens to (MassTransit exchanges "NfsVolumeWorker.Contracts:&lt;type&gt;").</summary>
    public static readonly string[] TerminalEventTypes =
        [nameof(VolumeCreated), nameof(VolumeDeleted), nameof(SnapshotCreated), nameof(SnapshotDeleted), nameof(VolumeCloned), nameof(VolumeReverted), nameof(VolumeExtended), nameof(CommandFailed)];

    private static readonly JsonSerializerOptions EventJson = new(JsonSerializerDefaults.Web);

    private readonly OsloOptions _options = optionsAccessor.Value;
    private readonly OsloTopology _topology = new(optionsAccessor.Value);
    private readonly ConcurrentDictionary<Guid, PendingNotification> _pending = new();
    private readonly ConcurrentDictionary<string, DateTimeOffset> _seen = new(StringComparer.Ordinal);
    private readonly SemaphoreSlim _publishLock = new(1, 1);
    private readonly TaskCompletionSource _ready = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private IConnection? _connection;
    private IChannel? _publish;
    private readonly HashSet<string> _declaredNotificationQueues = new(StringComparer.Ordinal);

    /// <summary>Completes when the topology is declared and the consumers run.</summary>
    public Task Ready => _ready.Task;

    /// <summary>Commands waiting for their terminal event (lost on restart: see the README, "Cinder (oslo.messaging) interface").</summary>
    public int PendingCount => _pending.Count;

    private string BrokerUrl => string.IsNullOrWhiteSpace(_options.BrokerUrl) ? throw new InvalidOperationException("Oslo:BrokerUrl is not set.") : _options.BrokerUrl;

    internal static Uri AmqpUri(string url)
    {
        var u = url.Trim();
        if (u.StartsWith("rabbit://", StringComparison.OrdinalIgnoreCase))
        {
            u = "amqp://" + u["rabbit://".Length..];
        }
        return new Uri(u);
    }

    internal static string Redact(string url) =>
        Uri.TryCreate(url, UriKind.Absolute, out var uri) && uri.UserInfo.Contains(':', StringComparison.Ordinal)
            ? url.Replace(uri.UserInfo, uri.UserInfo.Split(':')[0] + ":***", StringComparison.Ordinal)
            : url;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var factory = new ConnectionFactory
        {
            Uri = AmqpUri(BrokerUrl),
            AutomaticRecoveryEnabled = true,
            TopologyRecoveryEnabled = true,
            ClientProvidedName = $"nfsvolumeworker-oslo:{_options.Host}",
        };
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                _connection = await factory.CreateConnectionAsync(stoppingToken).ConfigureAwait(false);
                break;
            }
            catch (Exception e) when (e is RabbitMQ.Client.Exceptions.BrokerUnreachableException or IOException)
            {
                OsloLog.BrokerUnreachable(logger, e, Redact(BrokerUrl));
                await Task.Delay(TimeSpan.FromSeconds(2), time, stoppingToken).ConfigureAwait(false);
            }
        }
        stoppingToken.ThrowIfCancellationRequested();
        var connection = _connection!;
        _publish = await connection.CreateChannelAsync(new CreateChannelOptions(publisherConfirmationsEnabled: true, publisherConfirmationTrackingEnabled: true), stoppingToken).ConfigureAwait(false);
        _publish.BasicReturnAsync += (_, _) => Task.CompletedTask; // a reply to a caller that gave up: dropped, as oslo does

        await StartEventListenerAsync(connection, stoppingToken).ConfigureAwait(false);

        var rpc = await connection.CreateChannelAsync(cancellationToken: stoppingToken).ConfigureAwait(false);
        await rpc.BasicQosAsync(0, _options.PrefetchCount, false, stoppingToken).ConfigureAwait(false);
        await rpc.ExchangeDeclareAsync(_topology.ControlExchange, ExchangeType.Topic, _topology.Durable, _topology.AutoDelete, cancellationToken: stoppingToken).ConfigureAwait(false);
        var queues = new List<string>();
        foreach (var name in _topology.TopicQueues)
        {
            await rpc.QueueDeclareAsync(name, _topology.Durable, false, _topology.AutoDelete, _topology.TopicQueueArguments(), cancellationToken: stoppingToken).ConfigureAwait(false);
            await rpc.QueueBindAsync(name, _topology.ControlExchange, name, cancellationToken: stoppingToken).ConfigureAwait(false);
            queues.Add(name);
        }
        var fanouts = new List<string>();
        foreach (var exchange in _topology.FanoutExchanges)
        {
            await rpc.ExchangeDeclareAsync(exchange, ExchangeType.Fanout, durable: false, autoDelete: true, cancellationToken: stoppingToken).ConfigureAwait(false);
            var queue = OsloTopology.FanoutQueueName(exchange);
            await rpc.QueueDeclareAsync(queue, durable: false, exclusive: false, autoDelete: false, _topology.FanoutQueueArguments(), cancellationToken: stoppingToken).ConfigureAwait(false);
            await rpc.QueueBindAsync(queue, exchange, exchange[..^"_fanout".Length], cancellationToken: stoppingToken).ConfigureAwait(false);
            queues.Add(queue);
            fanouts.Add(queue);
        }
        foreach (var queue in queues)
        {
            var consumer = new AsyncEventingBasicConsumer(rpc);
            var q = queue;
            consumer.ReceivedAsync += (_, ea) => OnRequestAsync(rpc, q, ea, stoppingToken);
            await rpc.BasicConsumeAsync(queue, autoAck: false, consumer, stoppingToken).ConfigureAwait(false);
        }
        OsloLog.Serving(logger, _options.Host, _topology.ControlExchange, string.Join(", ", _topology.TopicQueues), string.Join(", ", fanouts), Redact(BrokerUrl));
        _ready.TrySetResult();

        try
        {
            await Task.Delay(Timeout.Infinite, stoppingToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // stopping
        }
        await rpc.CloseAsync(CancellationToken.None).ConfigureAwait(false);
    }

    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        await base.StopAsync(cancellationToken).ConfigureAwait(false);
        if (_connection is not null)
        {
            await _connection.CloseAsync(cancellationToken).ConfigureAwait(false);
            _connection.Dispose();
        }
    }

    public override void Dispose()
    {
        _publishLock.Dispose();
        base.Dispose();
    }

    private async Task OnRequestAsync(IChannel channel, string queue, BasicDeliverEventArgs ea, CancellationToken ct)
    {
        OsloRequest request;
        try
        {
            request = OsloRequest.From(OsloEnvelope.Decode(ea.Body.Span));
        }
        catch (OsloFormatException e)
        {
            OsloLog.Unreadable(logger, queue, e.Message);
            await channel.BasicAckAsync(ea.DeliveryTag, false, ct).ConfigureAwait(false);
            return;
        }
        var described = request.Describe();
        if (logger.IsEnabled(LogLevel.Debug))
        {
            OsloLog.Body(logger, Secrets.ToLogString(request.Args));
        }
        try
        {
            var plan = endpoint.Plan(request);
            switch (plan)
            {
                case SubmitPlan submit:
                    if (!await SubmitAsync(request, described, submit, ct).ConfigureAwait(false))
                    {
                        await Task.Delay(TimeSpan.FromSeconds(1), time, ct).ConfigureAwait(false);
                        await channel.BasicNackAsync(ea.DeliveryTag, false, requeue: true, ct).ConfigureAwait(false);
                        return;
                    }
                    await ReplyIfCallAsync(request, null, null, ct).ConfigureAwait(false);
                    break;
                case ReplyPlan reply:
                    await ReplyIfCallAsync(request, reply.Result, null, ct).ConfigureAwait(false);
                    OsloLog.Answered(logger, described);
                    break;
                case FailPlan fail:
                    OsloLog.Refused(logger, described, fail.Failure.Class, fail.Failure.Message);
                    if (request.IsCall)
                    {
                        await ReplyIfCallAsync(request, null, fail.Failure, ct).ConfigureAwait(false);
                    }
                    else
                    {
                        await NotifyAsync(fail.PublisherId, fail.EventType, "ERROR", fail.Payload, request.PackedContext(), Guid.Empty, ct).ConfigureAwait(false);
                    }
                    break;
                case NothingToDoPlan nothing:
                    var n = nothing.Notification;
                    await NotifyAsync($"{n.Resource}.{n.PublisherHost}", $"{n.Resource}.{n.Action}.start", "INFO", n.PayloadWith(n.StartStatus), n.Context, Guid.Empty, ct).ConfigureAwait(false);
                    await NotifyAsync($"{n.Resource}.{n.PublisherHost}", $"{n.Resource}.{n.Action}.end", "INFO", n.PayloadWith(n.EndStatus, n.EndExtra), n.Context, Guid.Empty, ct).ConfigureAwait(false);
                    await ReplyIfCallAsync(request, null, null, ct).ConfigureAwait(false);
                    break;
                case PublishCapabilitiesPlan caps:
                    await PublishCapabilitiesAsync(request, caps.Capabilities, ct).ConfigureAwait(false);
                    break;
            }
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            OsloLog.Failed(logger, e, described);
            if (request.IsCall)
            {
                await ReplyIfCallAsync(request, null, new RemoteFailure(e.GetType().Name, "builtins", e.Message), ct).ConfigureAwait(false);
            }
        }
        await channel.BasicAckAsync(ea.DeliveryTag, false, ct).ConfigureAwait(false);
    }

    /// <summary>Registers the notification, publishes .start (once per _unique_id), and puts the command in the
    /// pipeline. False when the pipeline did not confirm (the message is then requeued).</summary>
    private async Task<bool> SubmitAsync(OsloRequest request, string described, SubmitPlan submit, CancellationToken ct)
    {
        var command = submit.Command;
        var n = submit.Notification;
        _pending.TryAdd(command.CommandId, n);
        var first = _seen.TryAdd(request.UniqueId!, time.GetUtcNow());
        TrimSeen();
        if (first)
        {
            await NotifyAsync($"{n.Resource}.{n.PublisherHost}", $"{n.Resource}.{n.Action}.start", "INFO", n.PayloadWith(n.StartStatus), n.Context, command.CommandId, ct).ConfigureAwait(false);
        }
        else
        {
            OsloLog.Duplicate(logger, described, command.CommandId);
        }
        try
        {
            await pipeline.SubmitAsync(command, ct).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            OsloLog.NotConfirmed(logger, e, described);
            return false;
        }
        submit.OnAccepted?.Invoke();
        OsloLog.Accepted(logger, described, command.GetType().Name, command.CommandId, command.VolumeId);
        return true;
    }

    private void TrimSeen()
    {
        if (_seen.Count <= 100_000)
        {
            return;
        }
        var cutoff = time.GetUtcNow() - TimeSpan.FromHours(1);
        foreach (var (k, at) in _seen)
        {
            if (at < cutoff)
            {
                _seen.TryRemove(k, out _);
            }
        }
    }

    private async Task ReplyIfCallAsync(OsloRequest request, JsonNode? result, RemoteFailure? failure, CancellationToken ct)
    {
        if (!request.IsCall)
        {
            return;
        }
        var message = new JsonObject
        {
            ["result"] = result?.DeepClone(),
            ["failure"] = failure?.ToJsonString(),
            ["ending"] = true,
            ["_msg_id"] = request.MsgId,
            ["_unique_id"] = Guid.NewGuid().ToString("N"),
        };
        await PublishAsync("", request.ReplyQueue!, OsloEnvelope.Encode(message), mandatory: true, persistent: false, ct).ConfigureAwait(false);
    }

    private async Task PublishAsync(string exchange, string routingKey, byte[] body, bool mandatory, bool persistent, CancellationToken ct)
    {
        var props = new BasicProperties { ContentType = "application/json", ContentEncoding = "utf-8", Persistent = persistent, Priority = 0 };
        await _publishLock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            await _publish!.BasicPublishAsync(exchange, routingKey, mandatory, props, body, ct).ConfigureAwait(false);
        }
        finally
        {
            _publishLock.Release();
        }
    }

    /// <summary>A notification as oslo's messagingv2 driver sends it: control exchange, routing key
    /// &lt;topic&gt;.&lt;priority&gt;, a queue of that name declared so that nothing is lost before a listener binds.</summary>
    private async Task NotifyAsync(string publisherId, string eventType, string priority, JsonObject payload, JsonObject context, Guid commandId, CancellationToken ct)
    {
        if (!_options.Notifications)
        {
            return;
        }
        var message = new JsonObject
        {
            ["message_id"] = Guid.NewGuid().ToString(),
            ["publisher_id"] = publisherId,
            ["event_type"] = eventType,
            ["priority"] = priority,
            ["payload"] = payload.DeepClone(),
            ["timestamp"] = OsloTime.Notification(time.GetUtcNow()),
            ["_unique_id"] = Guid.NewGuid().ToString("N"),
        };
        foreach (var (k, v) in context)
        {
            message[k] = v?.DeepClone();
        }
        var body = OsloEnvelope.Encode(message);
        foreach (var topic in _options.NotificationTopics.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var key = $"{topic}.{priority.ToLowerInvariant()}";
            await EnsureNotificationQueueAsync(key, ct).ConfigureAwait(false);
            await PublishAsync(_topology.ControlExchange, key, body, mandatory: false, persistent: true, ct).ConfigureAwait(false);
        }
        OsloLog.Notified(logger, eventType, publisherId, commandId);
    }

    private async Task EnsureNotificationQueueAsync(string key, CancellationToken ct)
    {
        await _publishLock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            if (_declaredNotificationQueues.Add(key))
            {
                await _publish!.ExchangeDeclareAsync(_topology.ControlExchange, ExchangeType.Topic, _topology.Durable, _topology.AutoDelete, cancellationToken: ct).ConfigureAwait(false);
                await _publish.QueueDeclareAsync(key, _topology.Durable, false, _topology.AutoDelete, _topology.TopicQueueArguments(), cancellationToken: ct).ConfigureAwait(false);
                await _publish.QueueBindAsync(key, _topology.ControlExchange, key, cancellationToken: ct).ConfigureAwait(false);
            }
        }
        finally
        {
            _publishLock.Release();
        }
    }

    /// <summary>What a cinder-volume does on publish_service_capabilities: a fanout cast of
    /// update_service_capabilities to the schedulers (cinder/scheduler/rpcapi.py, version 3.3).</summary>
    private async Task PublishCapabilitiesAsync(OsloRequest request, JsonObject capabilities, CancellationToken ct)
    {
        var message = new JsonObject
        {
            ["method"] = "update_service_capabilities",
            ["args"] = new JsonObject
            {
                ["service_name"] = "volume",
                ["host"] = _options.Host,
                ["capabilities"] = capabilities,
                ["cluster_name"] = null,
                ["timestamp"] = OsloTime.Iso(time.GetUtcNow()),
            },
            ["version"] = "3.3",
            ["_unique_id"] = Guid.NewGuid().ToString("N"),
        };
        foreach (var (k, v) in request.PackedContext())
        {
            message[k] = v?.DeepClone();
        }
        const string exchange = "cinder-scheduler_fanout";
        await _publishLock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            await _publish!.ExchangeDeclareAsync(exchange, ExchangeType.Fanout, durable: false, autoDelete: true, cancellationToken: ct).ConfigureAwait(false);
        }
        finally
        {
            _publishLock.Release();
        }
        await PublishAsync(exchange, "cinder-scheduler", OsloEnvelope.Encode(message), mandatory: false, persistent: false, ct).ConfigureAwait(false);
    }

    private async Task StartEventListenerAsync(IConnection connection, CancellationToken ct)
    {
        var channel = await connection.CreateChannelAsync(cancellationToken: ct).ConfigureAwait(false);
        await channel.BasicQosAsync(0, 64, false, ct).ConfigureAwait(false);
        // One queue per adapter instance, not exclusive, so that terminal events published while the connection
        // is being recovered wait for it; it expires an hour after its instance is gone.
        var queue = $"nfsvol.oslo-events.{_options.Host}.{Environment.MachineName}-{Environment.ProcessId}";
        await channel.QueueDeclareAsync(queue, durable: true, exclusive: false, autoDelete: false,
            new Dictionary<string, object?> { ["x-expires"] = 3_600_000 }, cancellationToken: ct).ConfigureAwait(false);
        foreach (var type in TerminalEventTypes)
        {
            var exchange = $"NfsVolumeWorker.Contracts:{type}";
            // As MassTransit declares its publish exchanges: fanout, durable.
            await channel.ExchangeDeclareAsync(exchange, ExchangeType.Fanout, durable: true, autoDelete: false, cancellationToken: ct).ConfigureAwait(false);
            await channel.QueueBindAsync(queue, exchange, "", cancellationToken: ct).ConfigureAwait(false);
        }
        var consumer = new AsyncEventingBasicConsumer(channel);
        consumer.ReceivedAsync += async (_, ea) =>
        {
            try
            {
                await OnEventAsync(ea.Exchange, ea.Body, ct).ConfigureAwait(false);
            }
            catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException or KeyNotFoundException)
            {
                OsloLog.UnreadableEvent(logger, ea.Exchange, e.Message);
            }
            await channel.BasicAckAsync(ea.DeliveryTag, false, ct).ConfigureAwait(false);
        };
        await channel.BasicConsumeAsync(queue, autoAck: false, consumer, ct).ConfigureAwait(false);
    }

    private async Task OnEventAsync(string exchange, ReadOnlyMemory<byte> body, CancellationToken ct)
    {
        using var doc = JsonDocument.Parse(body);
        var message = doc.RootElement.GetProperty("message");
        var type = exchange[(exchange.IndexOf(':', StringComparison.Ordinal) + 1)..];
        ITerminalEvent e = type switch
        {
            nameof(VolumeCreated) => message.Deserialize<VolumeCreated>(EventJson)!,
            nameof(VolumeDeleted) => message.Deserialize<VolumeDeleted>(EventJson)!,
            nameof(SnapshotCreated) => message.Deserialize<SnapshotCreated>(EventJson)!,
            nameof(SnapshotDeleted) => message.Deserialize<SnapshotDeleted>(EventJson)!,
            nameof(VolumeCloned) => message.Deserialize<VolumeCloned>(EventJson)!,
            nameof(VolumeReverted) => message.Deserialize<VolumeReverted>(EventJson)!,
            nameof(VolumeExtended) => message.Deserialize<VolumeExtended>(EventJson)!,
            nameof(CommandFailed) => message.Deserialize<CommandFailed>(EventJson)!,
            _ => throw new InvalidOperationException($"not a terminal event: {type}"),
        };
        switch (e)
        {
            case VolumeCreated c: locator.RememberVolume(c.VolumeId, c.Share); break;
            case VolumeCloned c: locator.RememberVolume(c.NewVolumeId, c.Share); break;
            case SnapshotCreated c: locator.RememberSnapshot(c.SnapshotId, c.VolumeId, c.Share); break;
        }
        if (!_pending.TryRemove(e.CommandId, out var n))
        {
            return; // a native command, or one accepted before a restart of this instance
        }
        if (e is CommandFailed failed)
        {
            var payload = n.PayloadWith(n.ErrorStatus);
            await NotifyAsync($"{n.Resource}.{n.PublisherHost}", $"{n.Resource}.{n.Action}.error", "ERROR", payload, n.Context, e.CommandId, ct).ConfigureAwait(false);
            OsloLog.Refused(logger, $"command {e.CommandId}", failed.ErrorCode, failed.Message);
        }
        else
        {
            await NotifyAsync($"{n.Resource}.{n.PublisherHost}", $"{n.Resource}.{n.Action}.end", "INFO", n.PayloadWith(n.EndStatus, n.EndExtra), n.Context, e.CommandId, ct).ConfigureAwait(false);
        }
    }
}
