using System.Diagnostics;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Configuration;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Execution;
using NfsVolumeWorker.Messaging;
using NfsVolumeWorker.Telemetry;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;

namespace NfsVolumeWorker.Partitions;

/// <summary>
/// Assigns native commands to their partition. Runs on the ingress queue, which has a single active consumer
/// and is delivered one message at a time on a channel of <see cref="PartitionSubscriptions"/>: each is forwarded
/// unchanged to its partition's exchange and acknowledged once the broker confirmed the forward (the consumption itself
/// is <see cref="OrderedCommandConsumer"/>'s). Forwards to different partitions are in flight together, a forward to a
/// partition only once the one before it to that partition is confirmed: one volume's commands (one partition) leave
/// in the order they came, and the router's rate is not one confirm round trip per command (a quorum queue's confirm
/// waits for its log on disk). A router that stops closes its channel (it never sends <c>basic.cancel</c>): its
/// unacknowledged messages go back to the head of the queue before the next router is activated.
/// </summary>
/// <remarks>
/// A message that is not a command goes to <c>nfsvol.ingress_error</c> (unreadable) or
/// <c>nfsvol.ingress_skipped</c> (readable, but no command type), with MassTransit's fault headers: those are
/// the queues MassTransit's own router used, and what operators and tools already read.
/// </remarks>
public sealed class IngressRouter(IOptions<WorkerOptions> options, BrokerWaits waits, ILogger<IngressRouter> logger) : OrderedCommandConsumer
{
    /// <summary>Where messages that cannot be read as a command envelope go.</summary>
    public const string ErrorQueue = Topology.IngressQueue + "_error";

    /// <summary>Where readable envelopes of a type that is not a command go.</summary>
    public const string SkippedQueue = Topology.IngressQueue + "_skipped";

    /// <summary>Set by <see cref="PartitionSubscriptions"/>: the ingress subscription, for its retry mark.</summary>
    internal PartitionSubscription? Subscription { get; set; }

    /// <summary>The last forward started to each partition (deliveries come one at a time, so only the delivery in
    /// hand reads and writes this).</summary>
    private readonly Dictionary<int, Task> _lastForward = [];

    /// <summary>Starts the forward and returns, so that the next delivery can go to another partition meanwhile; a
    /// forward to a partition with a forward in flight starts only when that one ended (in order, even while it retries,
    /// and without holding up the deliveries for other partitions behind it).</summary>
    protected override Task DispatchAsync(IChannel channel, int partition, BasicDeliverEventArgs delivery, DecodedCommand decoded, CancellationToken stopped)
    {
        var target = PartitionKey.PartitionOf(decoded.Command.VolumeId, options.Value.PartitionCount);
        var previous = _lastForward.GetValueOrDefault(target) ?? Task.CompletedTask;
        // The body is the client library's buffer only until this handler returns: the forward keeps its own copy.
        var detached = new BasicDeliverEventArgs(delivery.ConsumerTag, delivery.DeliveryTag, delivery.Redelivered, delivery.Exchange, delivery.RoutingKey,
            new BasicProperties(delivery.BasicProperties), delivery.Body.ToArray(), CancellationToken.None);
        var forward = ForwardAfterAsync(previous, channel, partition, detached, decoded, target, stopped);
        _lastForward[target] = forward;
        Subscription?.Track(forward);
        return Task.CompletedTask;
    }

    /// <summary>One forward to its acknowledgement. What escapes the ordered step (an acknowledgement the closed channel
    /// refused, a defect) closes the channel, so that no later command of the partition passes this one: the broker
    /// returns every unacknowledged message to the head of the queue, in order, and the next subscription starts again.</summary>
    private async Task ForwardAfterAsync(Task previous, IChannel channel, int partition, BasicDeliverEventArgs delivery, DecodedCommand decoded, int target, CancellationToken stopped)
    {
        await previous.ConfigureAwait(false); // never throws: it is one of these
        try
        {
            await RunUntilAcknowledgedAsync(channel, partition, delivery, decoded, stopped).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            if (channel.IsOpen)
            {
                var command = decoded.Command;
                PartitionLog.ForwardFailed(logger, command.GetType().Name, command.CommandId, command.VolumeId, target, e.Message);
                await PartitionSubscription.CloseIfOpenAsync(channel, Constants.InternalError, "nfsvol: a forward failed; returning unacknowledged commands in order", abort: true).ConfigureAwait(false);
            }
        }
    }

    protected override string SpanName(int partition) => $"{Topology.IngressQueue} route";

    protected override PartitionSubscription? SubscriptionOf(int partition) => Subscription;

    protected override async Task OnUndecodableAsync(IChannel channel, int partition, BasicDeliverEventArgs delivery, Exception whyNot, CancellationToken stopped)
    {
        var skipped = whyNot is CommandDecodeException { NamesNoCommand: true };
        var queue = skipped ? SkippedQueue : ErrorQueue;
        var reason = CommandEnvelope.Reason(whyNot);
        PartitionLog.IngressUndecodable(logger, delivery.BasicProperties.MessageId ?? "(none)", queue, reason);
        await DeadLetters.MoveAsync(channel, queue, delivery, reason, skipped,
            [new("nfsvol-instance", options.Value.InstanceName)], stopped).ConfigureAwait(false);
    }

    /// <summary>Forwards the message unchanged (its trace continued, a redelivery marked) to the command's partition,
    /// publisher confirmed; unroutable (the partition is not bound yet) or refused throws, and the router waits.</summary>
    protected override Task RunAsync(IChannel channel, int partition, BasicDeliverEventArgs delivery, DecodedCommand decoded, Activity? activity, CancellationToken stopped)
    {
        var command = decoded.Command;
        var target = PartitionKey.PartitionOf(command.VolumeId, options.Value.PartitionCount);
        var exchange = PartitionKey.QueueName(target);
        activity?.SetTag("messaging.destination.name", exchange);
        activity?.SetTag("nfsvol.partition", target);
        var headers = delivery.BasicProperties.Headers is { } original ? new Dictionary<string, object?>(original) : [];
        if (activity is not null)
        {
            headers["traceparent"] = activity.Id; // the partition's receive continues this trace
        }
        if (delivery.Redelivered)
        {
            headers[Topology.RedeliveredHeader] = "true";
        }
        var properties = new BasicProperties(delivery.BasicProperties) { Persistent = true, Headers = headers };
        return waits.ConfirmedAsync($"forward of {command.GetType().Name} {command.CommandId} to partition {target}",
            ct => channel.BasicPublishAsync(exchange, "", mandatory: true, properties, delivery.Body, ct).AsTask(), stopped);
    }

    protected override void LogRetry(VolumeCommand command, int partition, int attempt, TimeSpan delay, Exception why) =>
        PartitionLog.RouteRetrying(logger, command.GetType().Name, command.CommandId, command.VolumeId,
            PartitionKey.PartitionOf(command.VolumeId, options.Value.PartitionCount), attempt, delay.TotalSeconds, why.Message);

    protected override void OnDone(int partition, DecodedCommand decoded)
    {
        var command = decoded.Command;
        WorkerLog.Routed(logger, command.GetType().Name, command.CommandId, command.VolumeId, PartitionKey.PartitionOf(command.VolumeId, options.Value.PartitionCount));
    }
}
