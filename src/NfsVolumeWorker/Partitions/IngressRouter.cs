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
/// confirmed, before it is acknowledged. A router that stops closes its channel (it never sends
/// <c>basic.cancel</c>): its unrouted messages go back to the head of the queue before the next router is
/// activated.
/// </summary>
/// <remarks>
/// A message that is not a command goes to <c>nfsvol.ingress_error</c> (unreadable) or
/// <c>nfsvol.ingress_skipped</c> (readable, but no command type), with MassTransit's fault headers: those are
/// the queues MassTransit's own router used, and what operators and tools already read.
/// </remarks>
public sealed class IngressRouter(IOptions<WorkerOptions> options, BrokerWaits waits, ILogger<IngressRouter> logger)
{
    /// <summary>Where messages that cannot be read as a command envelope go.</summary>
    public const string ErrorQueue = Topology.IngressQueue + "_error";

    /// <summary>Where readable envelopes of a type that is not a command go.</summary>
    public const string SkippedQueue = Topology.IngressQueue + "_skipped";

    /// <summary>Set by <see cref="PartitionSubscriptions"/>: the ingress subscription, for its retry mark.</summary>
    internal PartitionSubscription? Subscription { get; set; }

    /// <summary>One delivery: decode, forward to the partition (retried with back-off until confirmed), ack.</summary>
    internal async Task RouteAsync(IChannel channel, int _, BasicDeliverEventArgs delivery, CancellationToken stopped)
    {
        DecodedCommand decoded;
        try
        {
            decoded = CommandEnvelope.Decode(delivery.Body.Span, delivery.BasicProperties.Headers);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // A decoder defect must not leave the message unacknowledged (it would hold a prefetch slot forever):
            // whatever escapes decoding dead-letters the message like a bad one.
            var skipped = e is CommandDecodeException { NamesNoCommand: true };
            var queue = skipped ? SkippedQueue : ErrorQueue;
            var reason = CommandEnvelope.Reason(e);
            PartitionLog.IngressUndecodable(logger, delivery.BasicProperties.MessageId ?? "(none)", queue, reason);
            await DeadLetters.MoveAsync(channel, queue, delivery, reason, skipped,
                [new("nfsvol-instance", options.Value.InstanceName)], stopped).ConfigureAwait(false);
            return;
        }

        var command = decoded.Command;
        var partition = PartitionKey.PartitionOf(command.VolumeId, options.Value.PartitionCount);
        var exchange = PartitionKey.QueueName(partition);
        ActivityContext.TryParse(decoded.TraceParent, null, out var parent);
        using var activity = WorkerTelemetry.ActivitySource.StartActivity($"{Topology.IngressQueue} route", ActivityKind.Consumer, parent);
        activity?.SetTag("messaging.system", "rabbitmq");
        activity?.SetTag("messaging.destination.name", exchange);
        activity?.SetTag("nfsvol.command_id", command.CommandId);
        activity?.SetTag("nfsvol.volume_id", command.VolumeId);
        activity?.SetTag("nfsvol.partition", partition);

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
        try
        {
            for (var attempt = 1; ; attempt++)
            {
                try
                {
                    await waits.ConfirmedAsync($"forward of {command.GetType().Name} {command.CommandId} to partition {partition}",
                        ct => channel.BasicPublishAsync(exchange, "", mandatory: true, properties, delivery.Body, ct).AsTask(), stopped).ConfigureAwait(false);
                    break;
                }
                catch (Exception e) when (e is not OperationCanceledException && channel.IsOpen)
                {
                    // Unroutable (the partition is not bound yet) or refused by the broker: the router waits, in
                    // order, rather than drop a command or let a later one pass it.
                    Subscription?.MarkRetrying();
                    var delay = RetryBackoff.Delay(attempt);
                    PartitionLog.RouteRetrying(logger, command.GetType().Name, command.CommandId, command.VolumeId, partition, attempt, delay.TotalSeconds, e.Message);
                    await Task.Delay(delay, stopped).ConfigureAwait(false);
                }
            }
        }
        catch (OperationCanceledException) when (stopped.IsCancellationRequested)
        {
            return; // stopping: not acknowledged, the next router gets it first
        }
        catch (Exception) when (!channel.IsOpen)
        {
            return; // the channel is gone: the broker gives the message to the next router (or to us again) first
        }
        finally
        {
            Subscription?.ClearRetrying();
        }
        await channel.BasicAckAsync(delivery.DeliveryTag, multiple: false, CancellationToken.None).ConfigureAwait(false);
        WorkerLog.Routed(logger, command.GetType().Name, command.CommandId, command.VolumeId, partition);
    }
}
