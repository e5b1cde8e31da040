using System.Diagnostics;
using NfsVolumeWorker.Broker;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Telemetry;
using RabbitMQ.Client.Events;

namespace NfsVolumeWorker.Partitions;

/// <summary>
/// The ordered consumer (<see cref="OrderedConsumer{TQueue, TMessage}"/>) of the ingress router and the partition
/// consumers: a delivery is a MassTransit command envelope (<see cref="CommandEnvelope"/>); what is not a command is
/// dead-lettered; the consumer span continues the producer's trace; while the queue's step (forward to a partition,
/// accept into an inbox) is being retried, the subscription shows it, for health and balancing. A partition consumer
/// runs the step before it takes the next delivery; the router keeps forwards to different partitions in flight
/// together (<see cref="IngressRouter"/>).
/// </summary>
public abstract class OrderedCommandConsumer : OrderedConsumer<int, DecodedCommand>
{
    protected sealed override DecodedCommand Decode(int partition, BasicDeliverEventArgs delivery) =>
        CommandEnvelope.Decode(delivery.Body.Span, delivery.BasicProperties.Headers);

    protected sealed override Activity? StartSpan(int partition, DecodedCommand decoded)
    {
        ActivityContext.TryParse(decoded.TraceParent, null, out var parent);
        var activity = WorkerTelemetry.ActivitySource.StartActivity(SpanName(partition), ActivityKind.Consumer, parent);
        activity?.SetTag("messaging.system", "rabbitmq");
        activity?.SetTag("nfsvol.command_id", decoded.Command.CommandId);
        activity?.SetTag("nfsvol.volume_id", decoded.Command.VolumeId);
        return activity;
    }

    protected sealed override void OnRetrying(int partition, DecodedCommand decoded, int attempt, TimeSpan delay, Exception why)
    {
        SubscriptionOf(partition)?.MarkRetrying();
        LogRetry(decoded.Command, partition, attempt, delay, why);
    }

    protected sealed override void AfterAttempts(int partition) => SubscriptionOf(partition)?.ClearRetrying();

    /// <summary>The consumer span's name (<c>nfsvol.partition.3 receive</c>).</summary>
    protected abstract string SpanName(int partition);

    /// <summary>The subscription whose retry mark health and balancing read.</summary>
    protected abstract PartitionSubscription? SubscriptionOf(int partition);

    protected abstract void LogRetry(VolumeCommand command, int partition, int attempt, TimeSpan delay, Exception why);
}
