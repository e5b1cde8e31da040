using System.Collections.Concurrent;
using System.Diagnostics;
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
/// back-off, so that no later message passes it: <see cref="OrderedConsumer{TQueue, TMessage}"/>), and answers calls
/// in oslo's reply format. What it sends goes through <see cref="OsloPublisher"/>: .start when a command is accepted;
/// .end/.error come from the command's terminal event (<see cref="CommandNotifications"/>).
/// </summary>
public sealed class OsloRpcServer : BackgroundService
{
    private readonly OsloOptions _options;
    private readonly OsloTopology _topology;
    private readonly CinderVolumeEndpoint _endpoint;
    private readonly ICommandPipeline _pipeline;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly IAdapterLease _lease;
    private readonly OsloPublisher _publisher;
    private readonly CommandNotifications _notifications;
    private readonly ConcurrentDictionary<string, DateTimeOffset> _seen = new(StringComparer.Ordinal);
    private readonly TaskCompletionSource _ready = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private IConnection? _connection;
    private IDisposable? _held;

    public OsloRpcServer(
        IOptions<OsloOptions> optionsAccessor, CinderVolumeEndpoint endpoint, ICommandPipeline pipeline, IVolumeLocator locator,
        IPendingNotificationStore pendingStore, ICommandOutcomeSource outcomes, TimeProvider time, ILogger<OsloRpcServer> logger, IAdapterLease lease)
    {
        ArgumentNullException.ThrowIfNull(optionsAccessor);
        _options = optionsAccessor.Value;
        _topology = new OsloTopology(_options);
        _endpoint = endpoint;
        _pipeline = pipeline;
        _time = time;
        _logger = logger;
        _lease = lease;
        _publisher = new OsloPublisher(_options, _topology, time, logger);
        _notifications = new CommandNotifications(_options, _publisher, locator, pendingStore, outcomes, time, logger);
    }

    /// <summary>Completes when the topology is declared and the consumers run.</summary>
    public Task Ready => _ready.Task;

    /// <summary>True once the consumers run, while the connection is open (the status page's "serving").</summary>
    public bool IsServing => _ready.Task.IsCompletedSuccessfully && _connection is { IsOpen: true };

    /// <summary>Commands accepted by this instance and waiting for their terminal event (their records on the
    /// shares outlive a restart: see docs/cinder-interface.md).</summary>
    public int PendingCount => _notifications.Count;

    /// <summary>Completes when the start-up look for records of commands that finished unobserved is done.</summary>
    public Task Recovered => _notifications.Recovered;

    private BrokerAddress Broker => string.IsNullOrWhiteSpace(_options.BrokerUrl)
        ? throw new InvalidOperationException("Oslo:BrokerUrl is not set.")
        : BrokerAddress.Parse(_options.BrokerUrl, _options.BrokerHosts, "Oslo:BrokerUrl", "Oslo:BrokerHosts");

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        // One adapter per backend at a time: a standby waits here until the active one dies or stops.
        _held = await _lease.AcquireAsync(_options.Host, stoppingToken).ConfigureAwait(false);
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
                OsloLog.BrokerUnreachable(_logger, e, broker.Redacted);
                await Task.Delay(TimeSpan.FromSeconds(2), _time, stoppingToken).ConfigureAwait(false);
            }
        }
        stoppingToken.ThrowIfCancellationRequested();
        var connection = _connection!;
        await _publisher.OpenAsync(connection, stoppingToken).ConfigureAwait(false);
        await _notifications.StartAsync(connection, stoppingToken).ConfigureAwait(false);

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
        var requests = new RequestConsumer(this, _logger);
        foreach (var queue in queues)
        {
            var consumer = new AsyncEventingBasicConsumer(rpc);
            var q = queue;
            consumer.ReceivedAsync += (_, ea) => requests.HandleAsync(rpc, q, ea, stoppingToken);
            await rpc.BasicConsumeAsync(queue, autoAck: false, consumer, stoppingToken).ConfigureAwait(false);
        }
        OsloLog.Serving(_logger, _options.Host, _topology.ControlExchange, string.Join(", ", _topology.TopicQueues), string.Join(", ", fanouts), broker.Redacted);
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
        _held?.Dispose();
    }

    public override void Dispose()
    {
        _publisher.Dispose();
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
                if (_logger.IsEnabled(LogLevel.Debug))
                {
                    OsloLog.Body(_logger, Secrets.ToLogString(request.Args));
                }
                received.Plan = _endpoint.Plan(request);
                if (received.Plan is SubmitPlan planned)
                {
                    await RegisterAsync(request, described, planned, ct).ConfigureAwait(false);
                }
            }
            switch (received.Plan)
            {
                case SubmitPlan submit:
                    await SubmitAsync(described, submit, ct).ConfigureAwait(false);
                    await _publisher.ReplyIfCallAsync(request, null, null, ct).ConfigureAwait(false);
                    break;
                case ReplyPlan reply:
                    await _publisher.ReplyIfCallAsync(request, reply.Result, null, ct).ConfigureAwait(false);
                    OsloLog.Answered(_logger, described);
                    break;
                case FailPlan fail:
                    OsloLog.Refused(_logger, described, $"{fail.Failure.Class} ({fail.Failure.Code.Name})", fail.Failure.Message);
                    if (request.IsCall)
                    {
                        await _publisher.ReplyIfCallAsync(request, null, fail.Failure, ct).ConfigureAwait(false);
                    }
                    else
                    {
                        await _publisher.NotifyAsync(fail.PublisherId, fail.EventType, "ERROR", fail.Payload, request.PackedContext(), Guid.Empty, ct).ConfigureAwait(false);
                    }
                    break;
                case NothingToDoPlan nothing:
                    var n = nothing.Notification;
                    await _publisher.NotifyStartAsync(n, Guid.Empty, ct).ConfigureAwait(false);
                    await _publisher.NotifyEndAsync(n, Guid.Empty, ct).ConfigureAwait(false);
                    await _publisher.ReplyIfCallAsync(request, null, null, ct).ConfigureAwait(false);
                    break;
                case PublishCapabilitiesPlan caps:
                    await _publisher.PublishCapabilitiesAsync(request, caps.Capabilities, ct).ConfigureAwait(false);
                    break;
            }
        }
        catch (Exception e) when (e is not OperationCanceledException and not NotConfirmedException)
        {
            OsloLog.Failed(_logger, e, described);
            if (request.IsCall)
            {
                await _publisher.ReplyIfCallAsync(request, null, RemoteFailure.Unexpected(e), ct).ConfigureAwait(false);
            }
        }
    }

    /// <summary>Registers the command's notification and publishes .start (once per _unique_id): once per delivery,
    /// before the command's first submit.</summary>
    private async Task RegisterAsync(OsloRequest request, string described, SubmitPlan submit, CancellationToken ct)
    {
        var command = submit.Command;
        var n = submit.Notification;
        _notifications.Register(command, n, described);
        var first = _seen.TryAdd(request.UniqueId!, _time.GetUtcNow());
        TrimSeen();
        if (first)
        {
            await _publisher.NotifyStartAsync(n, command.CommandId, ct).ConfigureAwait(false);
        }
        else
        {
            OsloLog.Duplicate(_logger, described, command.CommandId);
        }
    }

    /// <summary>Puts the command in the pipeline; throws <see cref="NotConfirmedException"/> when the pipeline did not
    /// confirm it.</summary>
    private async Task SubmitAsync(string described, SubmitPlan submit, CancellationToken ct)
    {
        var command = submit.Command;
        try
        {
            await _pipeline.SubmitAsync(command, ct).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            throw new NotConfirmedException(e);
        }
        submit.OnAccepted?.Invoke();
        OsloLog.Accepted(_logger, described, command.GetType().Name, command.CommandId, command.VolumeId);
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

    private void TrimSeen()
    {
        if (_seen.Count <= 100_000)
        {
            return;
        }
        var cutoff = _time.GetUtcNow() - TimeSpan.FromHours(1);
        foreach (var (k, at) in _seen)
        {
            if (at < cutoff)
            {
                _seen.TryRemove(k, out _);
            }
        }
    }

}
