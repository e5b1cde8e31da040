using NfsVolumeWorker.Broker;
using System.Diagnostics;
using System.Text;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Configuration;
using NfsVolumeWorker.Messaging;
using NfsVolumeWorker.Telemetry;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;

namespace NfsVolumeWorker.Partitions;

/// <summary>
/// This instance's consumers of the N partition queues and of the ingress queue (the
/// <see cref="IngressRouter"/>), on a RabbitMQ connection of their own (named
/// <see cref="WorkerOptions.InstanceName"/>), one channel per queue. Owning the channels (rather than
/// leaving them to MassTransit) is what makes a hand-over touch exactly one partition: closing one
/// channel never recycles another, and nothing subscribes again behind our back.
/// </summary>
/// <remarks>
/// Lifecycle: <see cref="StartAsync"/> declares the topology and subscribes to the partitions, then to the
/// ingress queue, so the router never forwards into an unbound exchange. <see cref="StoppingAsync"/> runs
/// before any hosted service stops: the ingress queue and every partition are released in order, so
/// commands that arrive while running operations finish go to the other instances. A lost connection is re-established with
/// back-off by a supervisor loop, which also re-subscribes any partition whose channel the broker closed.
/// </remarks>
public sealed class PartitionSubscriptions : IHostedLifecycleService, IAsyncDisposable
{
    /// <summary>Where a partition message that is not a command goes, with the reason in its headers.</summary>
    public const string ErrorQueue = "nfsvol.partition_error";

    private readonly BrokerAddress _broker;
    private readonly WorkerOptions _worker;
    private readonly PartitionOptions _options;
    private readonly Status.StatusAddress _statusAddress;
    private readonly ILogger<PartitionSubscriptions> _logger;
    private readonly PartitionSubscription[] _partitions;
    private readonly PartitionSubscription _ingress;
    private readonly CancellationTokenSource _stopping = new();
    private IConnection? _connection;
    private Task _supervisor = Task.CompletedTask;
    private volatile bool _subscribing;

    public PartitionSubscriptions(IOptions<BrokerOptions> broker, IOptions<WorkerOptions> worker, IOptions<PartitionOptions> options,
        CommandAcceptor acceptor, IngressRouter router, Status.StatusAddress statusAddress, ILogger<PartitionSubscriptions> logger)
    {
        _statusAddress = statusAddress;
        _broker = BrokerAddress.Parse(broker.Value.Url, broker.Value.Hosts);
        _worker = worker.Value;
        _options = options.Value;
        _logger = logger;
        // Asked only once messages flow, long after the array below is built.
        var consumer = new PartitionConsumer(acceptor, _worker, p => _partitions![p], logger);
        _partitions = Enumerable.Range(0, _worker.PartitionCount)
            .Select(p => new PartitionSubscription(p, _worker.InstanceName, (ushort)_worker.PrefetchCount, consumer.HandleAsync)).ToArray();
        _ingress = PartitionSubscription.ForIngress(Topology.IngressQueue, _worker.InstanceName, (ushort)_worker.PrefetchCount, router.HandleAsync);
        router.Subscription = _ingress;
    }

    /// <summary>The ingress queue's subscription (the router; active on one instance at a time).</summary>
    public PartitionSubscription Ingress => _ingress;

    /// <summary>Every partition's subscription, by partition number.</summary>
    public IReadOnlyList<PartitionSubscription> All => _partitions;

    /// <summary>The connection, while it is open.</summary>
    public IConnection? Connection => Volatile.Read(ref _connection) is { IsOpen: true } c ? c : null;

    /// <summary>True once the stop began.</summary>
    public bool IsStopping => _stopping.IsCancellationRequested;

    /// <summary>Declares the topology and subscribes to every partition; waits (with back-off) for the broker.</summary>
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        var attempt = 0;
        while (true)
        {
            try
            {
                var connection = await ConnectAsync(cancellationToken).ConfigureAwait(false);
                await DeclareTopologyAsync(connection, _worker.PartitionCount, cancellationToken).ConfigureAwait(false);
                _subscribing = true;
                await SubscribeAllAsync(connection, cancellationToken).ConfigureAwait(false);
                break;
            }
            catch (Exception e) when (IsBrokerFault(e) && !cancellationToken.IsCancellationRequested)
            {
                var delay = RetryBackoff.Delay(++attempt);
                PartitionLog.BrokerUnreachable(_logger, _broker.Redacted, delay.TotalSeconds, e.Message);
                await Task.Delay(delay, cancellationToken).ConfigureAwait(false);
            }
        }
        PartitionLog.Subscribed(_logger, _partitions.Length, _worker.InstanceName);
        _supervisor = SuperviseAsync(_stopping.Token);
    }

    /// <summary>Releases every partition (in order: see <see cref="PartitionSubscription"/>) before anything
    /// else stops.</summary>
    public async Task StoppingAsync(CancellationToken cancellationToken)
    {
        await _stopping.CancelAsync().ConfigureAwait(false);
        var sw = Stopwatch.StartNew();
        await Task.WhenAll(_partitions.Append(_ingress).Select(p => p.StopAsync(_options.HandOverTimeout))).ConfigureAwait(false);
        await _supervisor.ConfigureAwait(false);
        if (_subscribing)
        {
            // Not said by a worker that stopped before it subscribed (qemu-img missing, stopped while connecting):
            // it held nothing, and the log must not say it handed partitions over.
            PartitionLog.Released(_logger, _partitions.Length, sw.ElapsedMilliseconds);
        }
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public async Task StoppedAsync(CancellationToken cancellationToken)
    {
        if (Interlocked.Exchange(ref _connection, null) is { } connection)
        {
            try
            {
                await connection.CloseAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (Exception e) when (IsBrokerFault(e))
            {
                // Already gone.
            }
            connection.Dispose();
        }
    }

    public Task StartingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StartedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>
    /// Declares the topology of <c>ops/rabbitmq/definitions.json</c>: the N partition exchanges (fanout) and quorum
    /// queues with a single active consumer, bound one to one; the ingress exchange and queue (the same), with each
    /// command type's exchange (<c>NfsVolumeWorker.Contracts:CreateVolume</c>, …, where MassTransit producers
    /// publish) bound to it; and the error queues. Idempotent; the names and arguments MassTransit uses, so a
    /// broker set up by an earlier version is left as it is.
    /// </summary>
    public static async Task DeclareTopologyAsync(IConnection connection, int partitionCount, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(connection);
        var channel = await connection.CreateChannelAsync(cancellationToken: cancellationToken).ConfigureAwait(false);
        await using (channel.ConfigureAwait(false))
        {
            async Task SingleActiveAsync(string name)
            {
                await channel.ExchangeDeclareAsync(name, ExchangeType.Fanout, durable: true, autoDelete: false, cancellationToken: cancellationToken).ConfigureAwait(false);
                await channel.QueueDeclareAsync(name, durable: true, exclusive: false, autoDelete: false, new Dictionary<string, object?>
                {
                    ["x-queue-type"] = "quorum", ["x-single-active-consumer"] = true,
                }, cancellationToken: cancellationToken).ConfigureAwait(false);
                await channel.QueueBindAsync(name, name, "", cancellationToken: cancellationToken).ConfigureAwait(false);
            }
            for (var p = 0; p < partitionCount; p++)
            {
                await SingleActiveAsync(Contracts.PartitionKey.QueueName(p)).ConfigureAwait(false);
            }
            await SingleActiveAsync(Topology.IngressQueue).ConfigureAwait(false);
            foreach (var type in CommandCatalog.ByName.Values)
            {
                var exchange = Topology.ExchangeOf(type);
                await channel.ExchangeDeclareAsync(exchange, ExchangeType.Fanout, durable: true, autoDelete: false, cancellationToken: cancellationToken).ConfigureAwait(false);
                await channel.ExchangeBindAsync(Topology.IngressQueue, exchange, "", cancellationToken: cancellationToken).ConfigureAwait(false);
            }
            // Read with basic.get by operators, so no single active consumer on these.
            foreach (var queue in new[] { ErrorQueue, IngressRouter.ErrorQueue, IngressRouter.SkippedQueue })
            {
                await channel.QueueDeclareAsync(queue, durable: true, exclusive: false, autoDelete: false,
                    new Dictionary<string, object?> { ["x-queue-type"] = "quorum" }, cancellationToken: cancellationToken).ConfigureAwait(false);
            }
        }
    }

    /// <summary>Makes sure the connection is open, reconnecting if needed. Called by the start and then only by
    /// the supervisor loop, one after the other.</summary>
    private async Task<IConnection> ConnectAsync(CancellationToken cancellationToken)
    {
        if (Connection is { } open)
        {
            return open;
        }
        Volatile.Read(ref _connection)?.Dispose();
        // Recovery is ours (SuperviseAsync): the library's would re-subscribe channels we closed on purpose.
        var factory = BrokerConnections.CreateFactory(_broker, _worker.InstanceName, ConnectionRecovery.ByCaller);
        if (_statusAddress.Url is { } statusUrl)
        {
            // nfsvol status finds this instance's /status.json here (the management API lists client properties).
            factory.ClientProperties[Balancing.ConsumerSnapshot.StatusUrlProperty] = statusUrl;
        }
        // Every node of Broker:Url and Broker:Hosts, in order: the first that answers.
        var connection = await factory.ConnectAsync(_broker, cancellationToken).ConfigureAwait(false);
        Volatile.Write(ref _connection, connection);
        return connection;
    }

    /// <summary>The partitions first: the router forwards only once this instance's partitions are bound.</summary>
    private async Task SubscribeAllAsync(IConnection connection, CancellationToken cancellationToken)
    {
        foreach (var p in _partitions.Append(_ingress))
        {
            await p.EnsureSubscribedAsync(connection, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>Every <see cref="PartitionOptions.SuperviseInterval"/>: reconnect when the connection is gone, and
    /// subscribe every partition whose channel is closed.</summary>
    private async Task SuperviseAsync(CancellationToken stopping)
    {
        var attempt = 0;
        while (!stopping.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(attempt == 0 ? _options.SuperviseInterval : RetryBackoff.Delay(attempt), stopping).ConfigureAwait(false);
                var wasOpen = Connection is not null;
                var connection = await ConnectAsync(stopping).ConfigureAwait(false);
                var missing = _partitions.Append(_ingress).Count(p => !p.IsSubscribed && !p.IsStopped);
                if (missing > 0)
                {
                    await SubscribeAllAsync(connection, stopping).ConfigureAwait(false);
                    PartitionLog.Resubscribed(_logger, missing, wasOpen ? "their channels were closed" : $"the connection was re-established (to {connection.Endpoint.HostName}:{connection.Endpoint.Port})");
                }
                attempt = 0;
            }
            catch (OperationCanceledException) when (stopping.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e) when (IsBrokerFault(e))
            {
                attempt++;
                PartitionLog.BrokerUnreachable(_logger, _broker.Redacted, RetryBackoff.Delay(attempt).TotalSeconds, e.Message);
            }
        }
    }

    private static bool IsBrokerFault(Exception e) =>
        e is RabbitMQ.Client.Exceptions.BrokerUnreachableException or RabbitMQ.Client.Exceptions.AlreadyClosedException
            or RabbitMQ.Client.Exceptions.OperationInterruptedException or RabbitMQ.Client.Exceptions.ConnectFailureException
            or IOException or System.Net.Sockets.SocketException or TimeoutException or ObjectDisposedException;

    /// <summary>Releases the partitions first if no stop did (a host that failed to start is disposed without one):
    /// closing the connection under a delivery that still retries would wait for that delivery forever.</summary>
    public async ValueTask DisposeAsync()
    {
        if (!_stopping.IsCancellationRequested)
        {
            await StoppingAsync(CancellationToken.None).ConfigureAwait(false);
        }
        await StoppedAsync(CancellationToken.None).ConfigureAwait(false);
        foreach (var p in _partitions.Append(_ingress))
        {
            p.Dispose();
        }
        _stopping.Dispose();
    }
}

/// <summary>How the worker consumes its partition queues. Section <c>Partitions</c>.</summary>
public sealed class PartitionOptions
{
    public const string SectionName = "Partitions";

    /// <summary>At a hand-over or the stop, how long to wait for the message being accepted (a few
    /// milliseconds normally; longer only while the share is failing). Default 30 seconds.</summary>
    public TimeSpan HandOverTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>How often the connection and every partition's subscription are checked and restored.
    /// Default 2 seconds.</summary>
    public TimeSpan SuperviseInterval { get; set; } = TimeSpan.FromSeconds(2);
}

/// <summary>Log messages of the partition consumers (event ids 3120-3139).</summary>
internal static partial class PartitionLog
{
    [LoggerMessage(3120, LogLevel.Information, "Subscribed to {Partitions} partition queues as {Instance}")]
    public static partial void Subscribed(ILogger logger, int partitions, string instance);

    [LoggerMessage(3121, LogLevel.Warning, "Broker {Broker} unreachable for the partition consumers; retrying in {Seconds} s: {Reason}")]
    public static partial void BrokerUnreachable(ILogger logger, string broker, double seconds, string reason);

    [LoggerMessage(3122, LogLevel.Warning, "Subscribed again to {Count} partition(s): {Why}")]
    public static partial void Resubscribed(ILogger logger, int count, string why);

    [LoggerMessage(3123, LogLevel.Warning, "Accepting {CommandType} {CommandId} of volume {VolumeId} on partition {Partition} failed (attempt {Attempt}); the partition waits {Seconds} s and tries again: {Reason}")]
    public static partial void AcceptRetrying(ILogger logger, string commandType, Guid commandId, Guid volumeId, int partition, int attempt, double seconds, string reason);

    [LoggerMessage(3124, LogLevel.Error, "Message {MessageId} on partition {Partition} is not a command; moved to " + PartitionSubscriptions.ErrorQueue + ": {Reason}")]
    public static partial void Undecodable(ILogger logger, int partition, string messageId, string reason);

    [LoggerMessage(3125, LogLevel.Information, "Released {Partitions} partitions and the ingress queue in {ElapsedMs} ms; the other instances take them over in order")]
    public static partial void Released(ILogger logger, int partitions, long elapsedMs);

    [LoggerMessage(3126, LogLevel.Warning, "Routing {CommandType} {CommandId} of volume {VolumeId} to partition {Partition} failed (attempt {Attempt}); the router waits {Seconds} s and tries again: {Reason}")]
    public static partial void RouteRetrying(ILogger logger, string commandType, Guid commandId, Guid volumeId, int partition, int attempt, double seconds, string reason);

    [LoggerMessage(3127, LogLevel.Error, "Message {MessageId} on the ingress queue is not a command; moved to {Queue}: {Reason}")]
    public static partial void IngressUndecodable(ILogger logger, string messageId, string queue, string reason);

    [LoggerMessage(3128, LogLevel.Error, "Forwarding {CommandType} {CommandId} of volume {VolumeId} to partition {Partition} failed unexpectedly; the ingress channel is closed so that the broker returns every unacknowledged command, in order: {Reason}")]
    public static partial void ForwardFailed(ILogger logger, string commandType, Guid commandId, Guid volumeId, int partition, string reason);
}

/// <summary>Validates <see cref="PartitionOptions"/>.</summary>
public sealed class PartitionOptionsValidator : IValidateOptions<PartitionOptions>
{
    public ValidateOptionsResult Validate(string? name, PartitionOptions options)
    {
        var failures = new List<string>();
        if (options.HandOverTimeout <= TimeSpan.Zero)
        {
            failures.Add($"Partitions:HandOverTimeout must be positive (got {options.HandOverTimeout}).");
        }
        if (options.SuperviseInterval < TimeSpan.FromMilliseconds(100))
        {
            failures.Add($"Partitions:SuperviseInterval must be at least 00:00:00.100 (got {options.SuperviseInterval}).");
        }
        return failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);
    }
}
