using System.Diagnostics;
using NfsVolumeWorker.Configuration;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Messaging;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;

namespace NfsVolumeWorker.Partitions;

/// <summary>Accepts each command of a partition queue this instance owns into its volume's inbox (the acceptor
/// answers a bad or repeated command itself); a failing share or broker makes the partition wait, in order.</summary>
internal sealed class PartitionConsumer(CommandAcceptor acceptor, WorkerOptions worker, Func<int, PartitionSubscription> subscriptionOf, ILogger logger)
    : OrderedCommandConsumer
{
    protected override string SpanName(int partition) => $"{PartitionKey.QueueName(partition)} receive";

    protected override PartitionSubscription? SubscriptionOf(int partition) => subscriptionOf(partition);

    protected override async Task OnUndecodableAsync(IChannel channel, int partition, BasicDeliverEventArgs delivery, Exception whyNot, CancellationToken stopped)
    {
        var reason = CommandEnvelope.Reason(whyNot);
        PartitionLog.Undecodable(logger, partition, delivery.BasicProperties.MessageId ?? "(none)", reason);
        await DeadLetters.MoveAsync(channel, PartitionSubscriptions.ErrorQueue, delivery, reason, skipped: false,
            [new("nfsvol-partition", partition), new("nfsvol-instance", worker.InstanceName)], stopped).ConfigureAwait(false);
    }

    protected override Task RunAsync(IChannel channel, int partition, BasicDeliverEventArgs delivery, DecodedCommand decoded, Activity? activity, CancellationToken stopped)
    {
        activity?.SetTag("messaging.destination.name", PartitionKey.QueueName(partition));
        activity?.SetTag("messaging.operation.type", "receive");
        var redelivered = delivery.Redelivered || delivery.BasicProperties.Headers?.ContainsKey(Topology.RedeliveredHeader) == true;
        return acceptor.AcceptAsync(decoded.Command, partition, redelivered, stopped);
    }

    protected override void LogRetry(VolumeCommand command, int partition, int attempt, TimeSpan delay, Exception why) =>
        PartitionLog.AcceptRetrying(logger, command.GetType().Name, command.CommandId, command.VolumeId, partition, attempt, delay.TotalSeconds, why.Message);
}
