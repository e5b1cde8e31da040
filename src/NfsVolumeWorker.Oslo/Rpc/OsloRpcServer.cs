using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Broker;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Oslo.Wire;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;

namespace NfsVolumeWorker.Oslo.Rpc;

/// <summary>
/// The cinder-volume RPC server: declares the topology a real cinder-volume declares, consumes its queues
/// one message at a time, in order, turns requests into native commands (acknowledging each oslo message only after
/// the broker confirmed its command into the partition pipeline; until then the submit is retried in place with
/// back-off, so that no later message passes it: <see cref="OrderedConsumer{TQueue, TMessage}"/>), answers calls in
/// oslo's reply format, and publishes Cinder's notifications — .start when a command is accepted, .end/.error from
/// the native terminal event (a queue of this adapter bound to the event exchanges; correlated by command id).
/// What a .end/.error notification needs is written to the command's share before the command is published
/// (<see cref="IPendingNotificationStore"/>), so that after a restart, or when another instance finishes the
/// command, the instance that claims that record sends it — exactly one per command, unless a claimer dies
/// between sending and deleting the record (then the next start sends it again).
/// </summary>
public sealed class OsloRpcServer(
    IOptions<OsloOptions> optionsAccessor, CinderVolumeEndpoint endpoint, ICommandPipeline pipeline, IVolumeLocator locator,
    IPendingNotificationStore pendingStore, ICommandOutcomeSource outcomes, TimeProvider time, ILogger<OsloRpcServer> logger, IAdapterLease lease) : BackgroundService
{
    private static readonly JsonSerializerOptions EventJson = new(JsonSerializerDefaults.Web);

    /// <summary>A claim on a pending record older than this is taken to be abandoned (its claimer died before
    /// sending); the next start gives it back. Sending takes a publish and its confirm: seconds.</summary>
    public static readonly TimeSpan StaleClaimAge = TimeSpan.FromMinutes(5);

    private readonly OsloOptions _options = optionsAccessor.Value;
    private readonly OsloTopology _topology = new(optionsAccessor.Value);
    private readonly ConcurrentDictionary<Guid, PendingEntry> _pending = new();
    private readonly ConcurrentDictionary<string, DateTimeOffset> _seen = new(StringComparer.Ordinal);
    private readonly SemaphoreSlim _publishLock = new(1, 1);
    private readonly TaskCompletionSource _ready = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private IConnection? _connection;
    private IChannel? _publish;
    private IDisposable? _lease;
    private readonly HashSet<string> _declaredNotificationQueues = new(StringComparer.Ordinal);

    /// <summary>Completes when the topology is declared and the consumers run.</summary>
    public Task Ready => _ready.Task;

    /// <summary>True once the consumers run, while the connection is open (the status page's "serving").</summary>
    public bool IsServing => _ready.Task.IsCompletedSuccessfully && _connection is { IsOpen: true };

    /// <summary>Commands accepted by this instance and waiting for their terminal event (their records on the
    /// shares outlive a restart: see docs/cinder-interface.md).</summary>
    public int PendingCount => _pending.Count;

    /// <summary>Completes when the start-up look for records of commands that finished unobserved is done.</summary>
    public Task Recovered => _recovered.Task;

    private readonly TaskCompletionSource _recovered = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>A command this instance accepted: its notification, and whether its record is on the share
    /// (then it is sent only by whoever claims the record).</summary>
    private sealed record PendingEntry(PendingNotification Notification, string? Share, bool Persisted);

    private BrokerAddress Broker => string.IsNullOrWhiteSpace(_options.BrokerUrl)
        ? throw new InvalidOperationException("Oslo:BrokerUrl is not set.")
        : BrokerAddress.Parse(_options.BrokerUrl, _options.BrokerHosts, "Oslo:BrokerUrl", "Oslo:BrokerHosts");

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        // One adapter per backend at a time: a standby waits here until the active one dies or stops.
        _lease = await lease.AcquireAsync(_options.Host, stoppingToken).ConfigureAwait(false);
        var broker = Broker;
        var factory = BrokerConnections.CreateFactory(broker, $"nfsvolumeworker-oslo:{_options.Host}", ConnectionRecovery.ByClient);
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                _connection = await factory.ConnectAsync(broker, stoppingToken).ConfigureAwait(false);
                break;
            }
            catch (Exception e) when (e is RabbitMQ.Client.Exceptions.BrokerUnreachableException or IOException)
            {
                OsloLog.BrokerUnreachable(logger, e, broker.Redacted);
                await Task.Delay(TimeSpan.FromSeconds(2), time, stoppingToken).ConfigureAwait(false);
            }
        }
        stoppingToken.ThrowIfCancellationRequested();
        var connection = _connection!;
        _publish = await connection.CreateChannelAsync(new CreateChannelOptions(publisherConfirmationsEnabled: true, publisherConfirmationTrackingEnabled: true), stoppingToken).ConfigureAwait(false);
        _publish.BasicReturnAsync += (_, _) => Task.CompletedTask; // a reply to a caller that gave up: dropped, as oslo does

        await StartEventListenerAsync(connection, stoppingToken).ConfigureAwait(false);
        // Terminal events from now on reach the queue just bound; those published before (while no adapter
        // listened) are found through the outcome records of the commands whose notification records wait.
        _ = Task.Run(() => NotifyFinishedFromSharesAsync(stoppingToken), CancellationToken.None);

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
        var requests = new RequestConsumer(this, logger);
        foreach (var queue in queues)
        {
            var consumer = new AsyncEventingBasicConsumer(rpc);
            var q = queue;
            consumer.ReceivedAsync += (_, ea) => requests.HandleAsync(rpc, q, ea, stoppingToken);
            await rpc.BasicConsumeAsync(queue, autoAck: false, consumer, stoppingToken).ConfigureAwait(false);
        }
        OsloLog.Serving(logger, _options.Host, _topology.ControlExchange, string.Join(", ", _topology.TopicQueues), string.Join(", ", fanouts), broker.Redacted);
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
        // Given up only once this instance consumes nothing more: the standby that takes it over starts afresh.
        _lease?.Dispose();
    }

    public override void Dispose()
    {
        _publishLock.Dispose();
        base.Dispose();
    }

    /// <summary>One attempt at a request, the step <see cref="RequestConsumer"/> retries in place. Throws when the
    /// pipeline did not confirm the command (<see cref="NotConfirmedException"/>) or when stopping; any other failure is
    /// answered as oslo does (a failure reply to a call), and the message is then acknowledged (only an answer that
    /// fails itself, the broker failing, escapes, and is retried too).</summary>
    private async Task AnswerAsync(Received received, CancellationToken ct)
    {
        var request = received.Request;
        var described = received.Described;
        try
        {
            if (received.Plan is null)
            {
                if (logger.IsEnabled(LogLevel.Debug))
                {
                    OsloLog.Body(logger, Secrets.ToLogString(request.Args));
                }
                received.Plan = endpoint.Plan(request);
                if (received.Plan is SubmitPlan planned)
                {
                    await RegisterAsync(request, described, planned, ct).ConfigureAwait(false);
                }
            }
            switch (received.Plan)
            {
                case SubmitPlan submit:
                    await SubmitAsync(described, submit, ct).ConfigureAwait(false);
                    await ReplyIfCallAsync(request, null, null, ct).ConfigureAwait(false);
                    break;
                case ReplyPlan reply:
                    await ReplyIfCallAsync(request, reply.Result, null, ct).ConfigureAwait(false);
                    OsloLog.Answered(logger, described);
                    break;
                case FailPlan fail:
                    OsloLog.Refused(logger, described, $"{fail.Failure.Class} ({fail.Failure.Code.Name})", fail.Failure.Message);
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
        catch (Exception e) when (e is not OperationCanceledException and not NotConfirmedException)
        {
            OsloLog.Failed(logger, e, described);
            if (request.IsCall)
            {
                await ReplyIfCallAsync(request, null, RemoteFailure.Unexpected(e), ct).ConfigureAwait(false);
            }
        }
    }

    /// <summary>Registers the command's notification and publishes .start (once per _unique_id): once per delivery,
    /// before the command's first submit.</summary>
    private async Task RegisterAsync(OsloRequest request, string described, SubmitPlan submit, CancellationToken ct)
    {
        var command = submit.Command;
        var n = submit.Notification;
        // The record goes to the share before the command goes to the pipeline (and the message is acked after).
        _pending[command.CommandId] = new PendingEntry(n, command.Share, Persist(command, n, described));
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
    }

    /// <summary>Puts the command in the pipeline; throws <see cref="NotConfirmedException"/> when the pipeline did not
    /// confirm it.</summary>
    private async Task SubmitAsync(string described, SubmitPlan submit, CancellationToken ct)
    {
        var command = submit.Command;
        try
        {
            await pipeline.SubmitAsync(command, ct).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            throw new NotConfirmedException(e);
        }
        submit.OnAccepted?.Invoke();
        OsloLog.Accepted(logger, described, command.GetType().Name, command.CommandId, command.VolumeId);
    }

    /// <summary>A request in hand, decoded once. Planned on its first attempt only, so that a retried submit keeps the
    /// share its plan chose, and its notification is registered once.</summary>
    private sealed class Received(OsloRequest request)
    {
        public OsloRequest Request { get; } = request;

        public string Described { get; } = request.Describe();

        public Plan? Plan { get; set; }
    }

    /// <summary>The pipeline did not confirm a command: the one failure of a request that is retried (in place, so that
    /// no later message of its queue passes it).</summary>
    private sealed class NotConfirmedException(Exception inner) : Exception($"the pipeline did not confirm the command: {inner.Message}", inner);

    /// <summary>The adapter's consumer of Cinder's queues (<see cref="OrderedConsumer{TQueue, TMessage}"/>; a queue is
    /// told by its name): an unreadable message is dropped and said, as oslo does; a request's step is
    /// <see cref="AnswerAsync"/>.</summary>
    private sealed class RequestConsumer(OsloRpcServer server, ILogger logger) : OrderedConsumer<string, Received>
    {
        protected override Received Decode(string queue, BasicDeliverEventArgs delivery) =>
            new(OsloRequest.From(OsloEnvelope.Decode(delivery.Body.Span)));

        protected override async Task OnUndecodableAsync(IChannel channel, string queue, BasicDeliverEventArgs delivery, Exception whyNot, CancellationToken stopped)
        {
            // Unreadable, or a decoder defect: either way dropped and said, never left unacknowledged.
            OsloLog.Unreadable(logger, queue, whyNot is OsloFormatException ? whyNot.Message : $"unexpected {whyNot.GetType().Name} while decoding: {whyNot.Message}");
            await channel.BasicAckAsync(delivery.DeliveryTag, false, stopped).ConfigureAwait(false);
        }

        protected override Task RunAsync(IChannel channel, string queue, BasicDeliverEventArgs delivery, Received received, Activity? activity, CancellationToken stopped) =>
            server.AnswerAsync(received, stopped);

        /// <summary>One span per delivery, from its first attempt to its acknowledgement: the submit inside it carries
        /// the trace on to the partition consumer (MassTransit puts it in the command's headers).</summary>
        protected override Activity? StartSpan(string queue, Received received)
        {
            var activity = OsloTelemetry.ActivitySource.StartActivity($"{queue} receive", ActivityKind.Consumer);
            activity?.SetTag("messaging.system", "rabbitmq");
            activity?.SetTag("messaging.destination.name", queue);
            activity?.SetTag("rpc.system", "oslo.messaging");
            activity?.SetTag("rpc.method", received.Request.Method);
            activity?.SetTag("oslo.kind", received.Request.IsCall ? "call" : "cast");
            activity?.SetTag("oslo.unique_id", received.Request.UniqueId);
            activity?.SetTag("cinder.request_id", received.Request.RequestId);
            return activity;
        }

        protected override void OnRetrying(string queue, Received received, int attempt, TimeSpan delay, Exception why) =>
            OsloLog.Retrying(logger, received.Described, attempt, delay.TotalSeconds, why.Message);
    }

    /// <summary>Writes the command's pending record to its share. False when it could not (the notification then
    /// depends on this instance living until the terminal event, as it did before records existed) or when the
    /// command has finished already (a redelivery after its outcome was recorded: its record was handled then).</summary>
    private bool Persist(VolumeCommand command, PendingNotification n, string described)
    {
        if (!_options.Notifications || command.Share is not { } share)
        {
            return false;
        }
        try
        {
            if (outcomes.OutcomeOf(share, command.CommandId) is not null)
            {
                return true; // claimed (and sent) by whoever holds its record; nothing to add
            }
            pendingStore.Save(share, command.CommandId, PendingRecord.For(command.CommandId, command.VolumeId, share, time.GetUtcNow(), n).ToBytes());
            return true;
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            OsloLog.NotPersisted(logger, e, described, command.CommandId);
            return false;
        }
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
        foreach (var type in MessageCatalog.TerminalEvents)
        {
            var exchange = MassTransitEnvelope.ExchangeOf(type);
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
        if (!MassTransitEnvelope.TryRead(body.Span, out var envelope))
        {
            throw new InvalidOperationException($"not a MassTransit envelope of a contract type (from {exchange})");
        }
        var eventType = MessageCatalog.TerminalEventNamed(envelope.TypeName) ?? throw new InvalidOperationException($"not a terminal event: {envelope.TypeName}");
        var e = (ITerminalEvent)(envelope.Message.Deserialize(eventType, EventJson) ?? throw new InvalidOperationException($"empty {envelope.TypeName}"));
        switch (e)
        {
            case VolumeCreated c: locator.RememberVolume(c.VolumeId, c.Share); break;
            case VolumeCloned c: locator.RememberVolume(c.NewVolumeId, c.Share); break;
            case SnapshotCreated c: locator.RememberSnapshot(c.SnapshotId, c.VolumeId, c.Share); break;
        }
        if (_pending.TryRemove(e.CommandId, out var entry))
        {
            if (!entry.Persisted)
            {
                await SendFromMemoryAsync(entry, e, ct).ConfigureAwait(false);
                return;
            }
            using var mine = pendingStore.TryClaim(e.CommandId, entry.Share);
            if (mine is null)
            {
                return; // another instance claimed it and sends it
            }
            await SendClaimedAsync(mine, entry.Notification, e, ct).ConfigureAwait(false);
            return;
        }
        // Accepted by an instance that has since stopped (or by this one before a restart), or a native command:
        // one look per share for its record.
        await SendFromShareAsync(e, (e as VolumeEvent)?.Share, recovered: false, ct).ConfigureAwait(false);
    }

    private async Task SendFromMemoryAsync(PendingEntry entry, ITerminalEvent e, CancellationToken ct)
    {
        try
        {
            await SendTerminalAsync(entry.Notification, e, ct).ConfigureAwait(false);
        }
        catch
        {
            _pending.TryAdd(e.CommandId, entry); // for the redelivered event
            throw;
        }
    }

    /// <summary>Claims the command's record on the shares and sends its notification; nothing when no share
    /// holds one (a native command, or sent already) or another instance claimed it.</summary>
    private async Task<bool> SendFromShareAsync(ITerminalEvent e, string? share, bool recovered, CancellationToken ct)
    {
        using var claim = pendingStore.TryClaim(e.CommandId, share);
        if (claim is null)
        {
            return false;
        }
        PendingRecord record;
        try
        {
            record = PendingRecord.FromBytes(claim.Record);
        }
        catch (JsonException x)
        {
            OsloLog.UnreadablePending(logger, e.CommandId, claim.Share, x.Message);
            return false; // given back on dispose; left for people to look at
        }
        await SendClaimedAsync(claim, record.Notification, e, ct).ConfigureAwait(false);
        OsloLog.SentFromShare(logger, e.CommandId, claim.Share, recovered ? "at start, from the command's outcome record" : "from its terminal event");
        return true;
    }

    private async Task SendClaimedAsync(IPendingNotificationClaim claim, PendingNotification n, ITerminalEvent e, CancellationToken ct)
    {
        await SendTerminalAsync(n, e, ct).ConfigureAwait(false);
        // Confirmed by the broker (the publish channel waits for confirms): the record can go. A crash before
        // this line leaves the record claimed; the next start gives it back and sends again (a duplicate).
        claim.Complete();
    }

    private async Task SendTerminalAsync(PendingNotification n, ITerminalEvent e, CancellationToken ct)
    {
        if (e is CommandFailed failed)
        {
            var payload = n.PayloadWith(n.ErrorStatus, new JsonObject { [RemoteFailure.ErrorCodeKey] = failed.ErrorCode });
            await NotifyAsync($"{n.Resource}.{n.PublisherHost}", $"{n.Resource}.{n.Action}.error", "ERROR", payload, n.Context, e.CommandId, ct).ConfigureAwait(false);
            OsloLog.Refused(logger, $"command {e.CommandId}", failed.ErrorCode, failed.Message);
        }
        else
        {
            await NotifyAsync($"{n.Resource}.{n.PublisherHost}", $"{n.Resource}.{n.Action}.end", "INFO", n.PayloadWith(n.EndStatus, n.EndExtra), n.Context, e.CommandId, ct).ConfigureAwait(false);
        }
    }

    /// <summary>At start: the records of commands whose outcome is recorded already — their terminal event was
    /// published while no adapter listened — are claimed and their notification sent now. Records of commands
    /// still running wait for the terminal event.</summary>
    private async Task NotifyFinishedFromSharesAsync(CancellationToken ct)
    {
        try
        {
            IReadOnlyList<(string Share, Guid CommandId)> waiting;
            try
            {
                waiting = pendingStore.ListPending(StaleClaimAge);
            }
            catch (Exception x) when (x is not OperationCanceledException)
            {
                OsloLog.RecoveryFailed(logger, x);
                return;
            }
            var sent = 0;
            foreach (var (share, commandId) in waiting)
            {
                ct.ThrowIfCancellationRequested();
                try
                {
                    if (outcomes.OutcomeOf(share, commandId) is { } outcome && await SendFromShareAsync(outcome, share, recovered: true, ct).ConfigureAwait(false))
                    {
                        sent++;
                    }
                }
                catch (Exception x) when (x is not OperationCanceledException)
                {
                    OsloLog.RecoveryFailed(logger, x);
                }
            }
            OsloLog.Recovered(logger, waiting.Count, sent);
        }
        catch (OperationCanceledException)
        {
            // stopping
        }
        finally
        {
            _recovered.TrySetResult();
        }
    }
}
