using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;
using NfsVolumeWorker.Oslo.Wire;
using RabbitMQ.Client;

namespace NfsVolumeWorker.Oslo.Rpc;

/// <summary>
/// What the adapter sends, on one channel with publisher confirms (a publish returns once the broker has it): replies
/// to calls, Cinder's notifications, and the capabilities cast to the schedulers. One publish at a time: a channel is
/// not safe for concurrent publishes.
/// </summary>
internal sealed class OsloPublisher(OsloOptions options, OsloTopology topology, TimeProvider time, ILogger logger) : IDisposable
{
    private const string SchedulerFanout = "cinder-scheduler_fanout";

    private readonly SemaphoreSlim _lock = new(1, 1);
    private readonly HashSet<string> _declaredQueues = new(StringComparer.Ordinal);
    private IChannel? _channel;

    private IChannel Channel => _channel ?? throw new InvalidOperationException("The adapter's publish channel is not open yet.");

    public async Task OpenAsync(IConnection connection, CancellationToken ct)
    {
        _channel = await connection.CreateChannelAsync(new CreateChannelOptions(publisherConfirmationsEnabled: true, publisherConfirmationTrackingEnabled: true), ct).ConfigureAwait(false);
        _channel.BasicReturnAsync += (_, _) => Task.CompletedTask; // a reply to a caller that gave up: dropped, as oslo does
    }

    /// <summary>Answers a call; nothing for a cast.</summary>
    public Task ReplyIfCallAsync(OsloRequest request, JsonNode? result, RemoteFailure? failure, CancellationToken ct) =>
        request.IsCall
            ? PublishAsync("", request.ReplyQueue!, OsloEnvelope.Encode(OsloMessages.Reply(request, result, failure)), mandatory: true, persistent: false, ct)
            : Task.CompletedTask;

    public Task NotifyStartAsync(PendingNotification n, Guid commandId, CancellationToken ct) =>
        NotifyAsync(n.PublisherId, n.EventType("start"), "INFO", n.PayloadWith(n.StartStatus), n.Context, commandId, ct);

    public Task NotifyEndAsync(PendingNotification n, Guid commandId, CancellationToken ct) =>
        NotifyAsync(n.PublisherId, n.EventType("end"), "INFO", n.PayloadWith(n.EndStatus, n.EndExtra), n.Context, commandId, ct);

    /// <summary>The .error notification, with the error code in its payload.</summary>
    public Task NotifyErrorAsync(PendingNotification n, string errorCode, Guid commandId, CancellationToken ct) =>
        NotifyAsync(n.PublisherId, n.EventType("error"), "ERROR", n.PayloadWith(n.ErrorStatus, new JsonObject { [RemoteFailure.ErrorCodeKey] = errorCode }), n.Context, commandId, ct);

    /// <summary>A notification to the control exchange, routing key &lt;topic&gt;.&lt;priority&gt; for each configured
    /// topic, with a queue of that name declared first so that nothing is lost before a listener binds (as oslo's
    /// messagingv2 driver does). Nothing when notifications are off.</summary>
    public async Task NotifyAsync(string publisherId, string eventType, string priority, JsonObject payload, JsonObject context, Guid commandId, CancellationToken ct)
    {
        if (!options.Notifications)
        {
            return;
        }
        var body = OsloEnvelope.Encode(OsloMessages.Notification(publisherId, eventType, priority, payload, context, time.GetUtcNow()));
        foreach (var topic in options.NotificationTopics.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var key = $"{topic}.{priority.ToLowerInvariant()}";
            await DeclareNotificationQueueOnceAsync(key, ct).ConfigureAwait(false);
            await PublishAsync(topology.ControlExchange, key, body, mandatory: false, persistent: true, ct).ConfigureAwait(false);
        }
        OsloLog.Notified(logger, eventType, publisherId, commandId);
    }

    /// <summary>What a cinder-volume does on publish_service_capabilities: a fanout cast to the schedulers.</summary>
    public async Task PublishCapabilitiesAsync(OsloRequest request, JsonObject capabilities, CancellationToken ct)
    {
        var message = OsloMessages.CapabilitiesUpdate(options.Host, capabilities, request.PackedContext(), time.GetUtcNow());
        // Declared every time: it is auto-deleted when the last scheduler goes, and a publish to a missing exchange
        // would close the channel.
        await OnChannelAsync(c => c.ExchangeDeclareAsync(SchedulerFanout, ExchangeType.Fanout, durable: false, autoDelete: true, cancellationToken: ct), ct).ConfigureAwait(false);
        await PublishAsync(SchedulerFanout, "cinder-scheduler", OsloEnvelope.Encode(message), mandatory: false, persistent: false, ct).ConfigureAwait(false);
    }

    public void Dispose() => _lock.Dispose();

    private Task DeclareNotificationQueueOnceAsync(string key, CancellationToken ct) => OnChannelAsync(async c =>
    {
        if (!_declaredQueues.Contains(key))
        {
            await c.ExchangeDeclareAsync(topology.ControlExchange, ExchangeType.Topic, topology.Durable, topology.AutoDelete, cancellationToken: ct).ConfigureAwait(false);
            await c.QueueDeclareAsync(key, topology.Durable, false, topology.AutoDelete, topology.TopicQueueArguments(), cancellationToken: ct).ConfigureAwait(false);
            await c.QueueBindAsync(key, topology.ControlExchange, key, cancellationToken: ct).ConfigureAwait(false);
            _declaredQueues.Add(key);
        }
    }, ct);

    private Task PublishAsync(string exchange, string routingKey, byte[] body, bool mandatory, bool persistent, CancellationToken ct)
    {
        var props = new BasicProperties { ContentType = "application/json", ContentEncoding = "utf-8", Persistent = persistent, Priority = 0 };
        return OnChannelAsync(c => c.BasicPublishAsync(exchange, routingKey, mandatory, props, body, ct).AsTask(), ct);
    }

    /// <summary>Runs <paramref name="work"/> on the channel, one at a time.</summary>
    private async Task OnChannelAsync(Func<IChannel, Task> work, CancellationToken ct)
    {
        await _lock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            await work(Channel).ConfigureAwait(false);
        }
        finally
        {
            _lock.Release();
        }
    }
}
