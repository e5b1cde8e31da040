using System.Diagnostics;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;

namespace NfsVolumeWorker.Broker;

/// <summary>
/// How a queue is consumed in order, written once for the worker's ingress router and partition consumers and for the
/// oslo adapter: the delivery is decoded once (the decoded message travels from there); what cannot be decoded goes to
/// <see cref="OnUndecodableAsync"/>, which settles it, so no delivery stays unacknowledged; the queue's step is run until
/// it succeeds, backing off (<see cref="RetryBackoff"/>) between attempts, because a later message must not pass this
/// one (a requeue would let it, with more than one message prefetched); then the message is acknowledged.
/// Stopping, or a channel that closed, leaves it unacknowledged: the broker gives it to the next consumer first.
/// </summary>
/// <typeparam name="TQueue">What tells the consumer's queues apart (a partition number, a queue name).</typeparam>
/// <typeparam name="TMessage">A delivery as decoded.</typeparam>
public abstract class OrderedConsumer<TQueue, TMessage> where TMessage : notnull
{
    /// <summary>One delivery of <paramref name="queue"/>.</summary>
    public async Task HandleAsync(IChannel channel, TQueue queue, BasicDeliverEventArgs delivery, CancellationToken stopped)
    {
        TMessage message;
        try
        {
            message = Decode(queue, delivery);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // A decoder defect must not leave the message unacknowledged (it would hold a prefetch slot forever):
            // whatever escapes decoding is handled like a bad message.
            await OnUndecodableAsync(channel, queue, delivery, e, stopped).ConfigureAwait(false);
            return;
        }

        await DispatchAsync(channel, queue, delivery, message, stopped).ConfigureAwait(false);
    }

    /// <summary>Runs the queue's step for a decoded message, and acknowledges it once the step succeeded. By default
    /// here and now: the next delivery waits for this one. The worker's ingress router overrides it to keep several forwards
    /// in flight.</summary>
    protected virtual Task DispatchAsync(IChannel channel, TQueue queue, BasicDeliverEventArgs delivery, TMessage message, CancellationToken stopped) =>
        RunUntilAcknowledgedAsync(channel, queue, delivery, message, stopped);

    /// <summary>The step, retried in place until it succeeds, then the acknowledgement; returns without one when stopping
    /// or when the channel closed (the broker then gives the message to the next consumer first).</summary>
    protected async Task RunUntilAcknowledgedAsync(IChannel channel, TQueue queue, BasicDeliverEventArgs delivery, TMessage message, CancellationToken stopped)
    {
        ArgumentNullException.ThrowIfNull(channel);
        ArgumentNullException.ThrowIfNull(delivery);
        ArgumentNullException.ThrowIfNull(message);
        using var activity = StartSpan(queue, message);
        try
        {
            for (var attempt = 1; ; attempt++)
            {
                try
                {
                    await RunAsync(channel, queue, delivery, message, activity, stopped).ConfigureAwait(false);
                    break;
                }
                catch (Exception e) when (e is not OperationCanceledException && channel.IsOpen)
                {
                    // What is the message's own fault the step settles itself (CommandFailed, a failure reply); what
                    // escapes it is a failing share or broker. Wait, in order, rather than drop it or let a later one pass it.
                    var delay = RetryBackoff.Delay(attempt);
                    OnRetrying(queue, message, attempt, delay, e);
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
            AfterAttempts(queue);
        }
        await channel.BasicAckAsync(delivery.DeliveryTag, multiple: false, CancellationToken.None).ConfigureAwait(false);
        OnDone(queue, message);
    }

    /// <summary>The message, once; throws when it is not one (then <see cref="OnUndecodableAsync"/> gets the exception).</summary>
    protected abstract TMessage Decode(TQueue queue, BasicDeliverEventArgs delivery);

    /// <summary>Settles a delivery that is not a message (dead-letters it, or acknowledges it and drops it) and says why.</summary>
    protected abstract Task OnUndecodableAsync(IChannel channel, TQueue queue, BasicDeliverEventArgs delivery, Exception whyNot, CancellationToken stopped);

    /// <summary>One attempt of the queue's step; throws when it must be retried.</summary>
    protected abstract Task RunAsync(IChannel channel, TQueue queue, BasicDeliverEventArgs delivery, TMessage message, Activity? activity, CancellationToken stopped);

    /// <summary>Before the wait for the next attempt: says so (a log line with its event id).</summary>
    protected abstract void OnRetrying(TQueue queue, TMessage message, int attempt, TimeSpan delay, Exception why);

    /// <summary>The consumer span from the first attempt to the acknowledgement; none by default.</summary>
    protected virtual Activity? StartSpan(TQueue queue, TMessage message) => null;

    /// <summary>Once the step succeeded or was given up (stopping, the channel closed), retried or not.</summary>
    protected virtual void AfterAttempts(TQueue queue)
    {
    }

    /// <summary>After the acknowledgement.</summary>
    protected virtual void OnDone(TQueue queue, TMessage message)
    {
    }
}
