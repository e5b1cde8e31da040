using System.Diagnostics;
using NfsVolumeWorker.Broker;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Telemetry;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;

namespace NfsVolumeWorker.Partitions;

/// <summary>
/// How a queue of commands is consumed in order, written once for the ingress router and the partition consumers:
/// the envelope is decoded once (the typed command travels from there); what is not a command is dead-lettered,
/// so no delivery stays unacknowledged; the consumer span continues the producer's trace; the queue's step
/// (forward to a partition, accept into an inbox) is run until it succeeds, backing off while the subscription
/// shows it is retrying, because a later command must not pass this one; then the message is acknowledged. A
/// partition consumer runs it before it takes the next delivery; the router keeps forwards to different partitions
/// in flight together (<see cref="IngressRouter"/>).
/// Stopping, or a channel that closed, leaves it unacknowledged: the broker gives it to the next consumer first.
/// </summary>
public abstract class OrderedCommandConsumer
{
    /// <summary>One delivery of <paramref name="partition"/>'s queue (the ingress router ignores the number).</summary>
    internal async Task HandleAsync(IChannel channel, int partition, BasicDeliverEventArgs delivery, CancellationToken stopped)
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
            await DeadLetterAsync(channel, partition, delivery, e, stopped).ConfigureAwait(false);
            return;
        }

        await DispatchAsync(channel, partition, delivery, decoded.Command, decoded.TraceParent, stopped).ConfigureAwait(false);
    }

    /// <summary>Runs the queue's step for a decoded command, and acknowledges it once the step succeeded. By default
    /// here and now: the next delivery waits for this one. The router overrides it to keep several forwards in flight.</summary>
    protected virtual Task DispatchAsync(IChannel channel, int partition, BasicDeliverEventArgs delivery, VolumeCommand command, string? traceParent, CancellationToken stopped) =>
        RunUntilAcknowledgedAsync(channel, partition, delivery, command, traceParent, stopped);

    /// <summary>The step, retried in place until it succeeds, then the acknowledgement; returns without one when stopping
    /// or when the channel closed (the broker then gives the message to the next consumer first).</summary>
    protected async Task RunUntilAcknowledgedAsync(IChannel channel, int partition, BasicDeliverEventArgs delivery, VolumeCommand command, string? traceParent, CancellationToken stopped)
    {
        ArgumentNullException.ThrowIfNull(channel);
        ArgumentNullException.ThrowIfNull(delivery);
        ArgumentNullException.ThrowIfNull(command);
        ActivityContext.TryParse(traceParent, null, out var parent);
        using var activity = WorkerTelemetry.ActivitySource.StartActivity(SpanName(partition), ActivityKind.Consumer, parent);
        activity?.SetTag("messaging.system", "rabbitmq");
        activity?.SetTag("nfsvol.command_id", command.CommandId);
        activity?.SetTag("nfsvol.volume_id", command.VolumeId);

        var subscription = SubscriptionOf(partition);
        try
        {
            for (var attempt = 1; ; attempt++)
            {
                try
                {
                    await RunAsync(channel, partition, delivery, command, activity, stopped).ConfigureAwait(false);
                    break;
                }
                catch (Exception e) when (e is not OperationCanceledException && channel.IsOpen)
                {
                    // Nothing here is the command's fault (that ends as CommandFailed inside the step): the share or
                    // the broker is failing. Wait, in order, rather than drop a command or let a later one pass it.
                    subscription?.MarkRetrying();
                    var delay = RetryBackoff.Delay(attempt);
                    LogRetry(command, partition, attempt, delay, e);
                    await Task.Delay(delay, stopped).ConfigureAwait(false);
                }
            }
        }
        catch (OperationCanceledException) when (stopped.IsCancellationRequested)
        {
            return; // stopping: not acknowledged, the next consumer gets it first
        }
        catch (Exception) when (!channel.IsOpen)
        {
            return; // the channel is gone: the broker gives the message to the next consumer (or to us again) first
        }
        finally
        {
            subscription?.ClearRetrying();
        }
        await channel.BasicAckAsync(delivery.DeliveryTag, multiple: false, CancellationToken.None).ConfigureAwait(false);
        OnDone(command, partition);
    }

    /// <summary>The consumer span's name (<c>nfsvol.partition.3 receive</c>).</summary>
    protected abstract string SpanName(int partition);

    /// <summary>Moves a message that is not a command to its dead-letter queue and logs why.</summary>
    protected abstract Task DeadLetterAsync(IChannel channel, int partition, BasicDeliverEventArgs delivery, Exception whyNot, CancellationToken stopped);

    /// <summary>One attempt of the queue's step; throws when it must be retried.</summary>
    protected abstract Task RunAsync(IChannel channel, int partition, BasicDeliverEventArgs delivery, VolumeCommand command, Activity? activity, CancellationToken stopped);

    /// <summary>The subscription whose retry mark health and balancing read.</summary>
    protected abstract PartitionSubscription? SubscriptionOf(int partition);

    protected abstract void LogRetry(VolumeCommand command, int partition, int attempt, TimeSpan delay, Exception why);

    /// <summary>After the acknowledgement.</summary>
    protected virtual void OnDone(VolumeCommand command, int partition)
    {
    }
}
