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
/// and is handled one message at a time on a channel of <see cref="PartitionSubscriptions"/>, so one volume's
/// commands leave in the order they came: each is forwarded unchanged to its partition's exchange, publisher
/// confirmed, before it is acknowledged (the consumption itself is <see cref="OrderedCommandConsumer"/>'s). A router that stops closes its channel (it never sends
/// <c>basic.cancel</c>): its unrouted messages go back to the head of the queue before the next router is
/// activated.
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

    protected override string SpanName(int partition) => $"{Topology.IngressQueue} route";

    protected override PartitionSubscription? SubscriptionOf(int partition) => Subscription;

    protected override async Task DeadLetterAsync(IChannel channel, int partition, BasicDeliverEventArgs delivery, Exception whyNot, CancellationToken stopped)
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
    protected override Task RunAsync(IChannel channel, int partition, BasicDeliverEventArgs delivery, VolumeCommand command, Activity? activity, CancellationToken stopped)
    {
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

    protected override void OnDone(VolumeCommand command, int partition) =>
        WorkerLog.Routed(logger, command.GetType().Name, command.CommandId, command.VolumeId, PartitionKey.PartitionOf(command.VolumeId, options.Value.PartitionCount));
}
