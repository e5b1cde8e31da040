using System.Globalization;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;

namespace NfsVolumeWorker.Partitions;

/// <summary>
/// This instance's consumer of one partition queue (or of the ingress queue), on a channel of its own. Deliveries are handled one at a
/// time (consumer dispatch concurrency 1), in queue order. Everything that takes the partition away from this
/// channel (a hand-over, the stop) does it by closing the channel once no delivery is being handled: RabbitMQ
/// then returns the unacknowledged messages to the head of the quorum queue before it activates the next
/// waiting consumer, so the next owner receives them first and in order. (A <c>basic.cancel</c> would not:
/// on 3.10 the next consumer is activated at once and gets newer messages before the returned ones.)
/// </summary>
public sealed class PartitionSubscription : IDisposable
{
    private readonly Func<IChannel, int, BasicDeliverEventArgs, CancellationToken, Task> _handle;
    private readonly ushort _prefetch;
    private readonly Func<DateTimeOffset, string> _tag;
    private readonly SemaphoreSlim _control = new(1, 1);
    private readonly CancellationTokenSource _stopped = new();
    private IChannel? _channel;
    private int _inFlight;
    private int _paused;
    private long _retryingSinceTicks;

    internal PartitionSubscription(int partition, string instance, ushort prefetch, Func<IChannel, int, BasicDeliverEventArgs, CancellationToken, Task> handle)
        : this(partition, Contracts.PartitionKey.QueueName(partition), prefetch, handle, at => ConsumerTags.Create(partition, at, instance))
    {
    }

    private PartitionSubscription(int partition, string queue, ushort prefetch, Func<IChannel, int, BasicDeliverEventArgs, CancellationToken, Task> handle,
        Func<DateTimeOffset, string> tag)
    {
        Partition = partition;
        Queue = queue;
        _prefetch = prefetch;
        _handle = handle;
        _tag = tag;
    }

    /// <summary>The consumer of the ingress queue (<see cref="Partition"/> -1), released the same way: a router
    /// that stops closes its channel, so the next router gets the unrouted commands first and in order.</summary>
    internal static PartitionSubscription ForIngress(string queue, string instance, ushort prefetch, Func<IChannel, int, BasicDeliverEventArgs, CancellationToken, Task> handle) =>
        new(-1, queue, prefetch, handle, at => ConsumerTags.CreateIngress(at, instance));

    /// <summary>The partition number; -1 for the ingress queue.</summary>
    public int Partition { get; }

    /// <summary>The partition queue.</summary>
    public string Queue { get; }

    /// <summary>The consumer tag of the current subscription (see <see cref="ConsumerTags"/>), or null.</summary>
    public string? ConsumerTag { get; private set; }

    /// <summary>True while this instance is subscribed on an open channel (active or waiting).</summary>
    public bool IsSubscribed => Volatile.Read(ref _channel) is { IsOpen: true } && ConsumerTag is not null;

    /// <summary>True once <see cref="StopAsync"/> began: the partition is not subscribed again.</summary>
    public bool IsStopped => _stopped.IsCancellationRequested;

    /// <summary>Since when the delivery being handled has been failing and retried, or null.</summary>
    public DateTimeOffset? RetryingSince
    {
        get
        {
            var ticks = Interlocked.Read(ref _retryingSinceTicks);
            return ticks == 0 ? null : new DateTimeOffset(ticks, TimeSpan.Zero);
        }
    }

    /// <summary>Marks the delivery being handled as failing since now, unless it already was.</summary>
    internal void MarkRetrying() => Interlocked.CompareExchange(ref _retryingSinceTicks, DateTimeOffset.UtcNow.UtcTicks, 0);

    internal void ClearRetrying() => Interlocked.Exchange(ref _retryingSinceTicks, 0);

    /// <summary>Subscribes on a new channel of <paramref name="connection"/> unless already subscribed or stopped.
    /// A new subscription waits behind every consumer already on the queue.</summary>
    internal async Task EnsureSubscribedAsync(IConnection connection, CancellationToken cancellationToken)
    {
        await _control.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (!IsStopped && !IsSubscribed)
            {
                await SubscribeLockedAsync(connection, cancellationToken).ConfigureAwait(false);
            }
        }
        finally
        {
            _control.Release();
        }
    }

    /// <summary>
    /// Gives the partition up and subscribes again behind the other instances: when this instance is the
    /// active consumer, the next waiting one becomes active (a hand-over); when it is waiting, it moves to the
    /// back of the line. Waits up to <paramref name="idleTimeout"/> for the delivery being handled.
    /// </summary>
    /// <returns>False when not subscribed, stopped, or still busy after <paramref name="idleTimeout"/>.</returns>
    public async Task<bool> ResubscribeAsync(IConnection connection, TimeSpan idleTimeout, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(connection);
        await _control.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (IsStopped || !IsSubscribed || !await ReleaseLockedAsync(idleTimeout, cancellationToken).ConfigureAwait(false))
            {
                return false;
            }
            await SubscribeLockedAsync(connection, cancellationToken).ConfigureAwait(false);
            return true;
        }
        finally
        {
            _control.Release();
        }
    }

    /// <summary>Stops consuming for good: waits up to <paramref name="idleTimeout"/> for the delivery being
    /// handled (then interrupts it; it is not acknowledged and goes back to the queue), and closes the channel.</summary>
    internal async Task StopAsync(TimeSpan idleTimeout)
    {
        await _control.WaitAsync(CancellationToken.None).ConfigureAwait(false);
        try
        {
            if (IsStopped)
            {
                return;
            }
            if (!await ReleaseLockedAsync(idleTimeout, CancellationToken.None).ConfigureAwait(false))
            {
                await _stopped.CancelAsync().ConfigureAwait(false); // interrupts a retrying delivery
                await ReleaseLockedAsync(TimeSpan.FromSeconds(10), CancellationToken.None).ConfigureAwait(false);
            }
            await _stopped.CancelAsync().ConfigureAwait(false);
        }
        finally
        {
            _control.Release();
        }
    }

    /// <summary>Pauses deliveries, waits until none is being handled, closes the channel. False (and resumed)
    /// on timeout.</summary>
    private async Task<bool> ReleaseLockedAsync(TimeSpan idleTimeout, CancellationToken cancellationToken)
    {
        // A full fence on both sides (Interlocked): either the delivery sees the pause and leaves its message
        // unacknowledged, or this sees the delivery in flight and waits for it.
        Interlocked.Exchange(ref _paused, 1);
        var deadline = DateTime.UtcNow + idleTimeout;
        while (Volatile.Read(ref _inFlight) > 0)
        {
            if (DateTime.UtcNow > deadline)
            {
                Interlocked.Exchange(ref _paused, 0);
                return false;
            }
            await Task.Delay(10, cancellationToken).ConfigureAwait(false);
        }
        var channel = Interlocked.Exchange(ref _channel, null);
        ConsumerTag = null;
        if (channel is not null)
        {
            await CloseQuietlyAsync(channel).ConfigureAwait(false);
        }
        return true;
    }

    private async Task SubscribeLockedAsync(IConnection connection, CancellationToken cancellationToken)
    {
        var old = Interlocked.Exchange(ref _channel, null);
        if (old is not null)
        {
            await CloseQuietlyAsync(old).ConfigureAwait(false); // closed by the broker or the connection: nothing to hand back
        }
        var channel = await connection.CreateChannelAsync(
            new CreateChannelOptions(publisherConfirmationsEnabled: true, publisherConfirmationTrackingEnabled: true, consumerDispatchConcurrency: 1),
            cancellationToken).ConfigureAwait(false);
        try
        {
            await channel.BasicQosAsync(0, _prefetch, global: false, cancellationToken).ConfigureAwait(false);
            var consumer = new AsyncEventingBasicConsumer(channel);
            consumer.ReceivedAsync += (_, delivery) => OnDeliveryAsync(channel, delivery);
            var tag = _tag(DateTimeOffset.UtcNow);
            Volatile.Write(ref _channel, channel);
            Interlocked.Exchange(ref _paused, 0);
            ConsumerTag = await channel.BasicConsumeAsync(Queue, autoAck: false, consumerTag: tag, noLocal: false, exclusive: false,
                arguments: null, consumer, cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            Interlocked.CompareExchange(ref _channel, null, channel);
            ConsumerTag = null;
            await CloseQuietlyAsync(channel).ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Counts work that a handler started and left running (the router's forwards, which end in their
    /// acknowledgement) as in flight until it ends: a hand-over or a stop waits for it like for a delivery.</summary>
    internal void Track(Task work)
    {
        ArgumentNullException.ThrowIfNull(work);
        Interlocked.Increment(ref _inFlight);
        work.ContinueWith(_ => Interlocked.Decrement(ref _inFlight), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    private async Task OnDeliveryAsync(IChannel channel, BasicDeliverEventArgs delivery)
    {
        Interlocked.Increment(ref _inFlight);
        try
        {
            if (Volatile.Read(ref _paused) != 0 || !ReferenceEquals(Volatile.Read(ref _channel), channel) || !channel.IsOpen)
            {
                return; // being handed over: left unacknowledged, the broker gives it to the next owner first
            }
            await _handle(channel, Partition, delivery, _stopped.Token).ConfigureAwait(false);
        }
        finally
        {
            Interlocked.Decrement(ref _inFlight);
        }
    }

    public void Dispose()
    {
        Volatile.Read(ref _channel)?.Dispose();
        _control.Dispose();
        _stopped.Dispose();
    }

    private static async Task CloseQuietlyAsync(IChannel channel)
    {
        try
        {
            await CloseIfOpenAsync(channel, 200, "nfsvol: partition released", abort: false).ConfigureAwait(false);
        }
        finally
        {
            channel.Dispose();
        }
    }

    /// <summary>Closes the channel unless it is closed already (or closes meanwhile): either way the broker returns
    /// its unacknowledged messages, in order. The channel object stays usable for those still holding it.</summary>
    internal static async Task CloseIfOpenAsync(IChannel channel, ushort replyCode, string reason, bool abort)
    {
        try
        {
            if (channel.IsOpen)
            {
                await channel.CloseAsync(replyCode, reason, abort, CancellationToken.None).ConfigureAwait(false);
            }
        }
        catch (Exception e) when (e is RabbitMQ.Client.Exceptions.AlreadyClosedException or ObjectDisposedException or OperationCanceledException
            or RabbitMQ.Client.Exceptions.OperationInterruptedException or IOException)
        {
            // The channel or its connection is already gone: the broker has returned its messages.
        }
    }
}

/// <summary>
/// Consumer tags of partition subscriptions: <c>nfsvol-p&lt;NN&gt;-&lt;unix ms&gt;-&lt;instance&gt;</c>. The time
/// is when the subscription was made: RabbitMQ activates waiting consumers of a single-active-consumer queue
/// in the order they subscribed, so the balancer reads from the tags who is next in line.
/// </summary>
public static class ConsumerTags
{
    public static string Create(int partition, DateTimeOffset subscribedAt, string instance) =>
        string.Create(CultureInfo.InvariantCulture, $"nfsvol-p{partition:D2}-{subscribedAt.ToUnixTimeMilliseconds()}-{instance}");

    /// <summary>The ingress router's tag: <c>nfsvol-ingress-&lt;unix ms&gt;-&lt;instance&gt;</c> (not balanced).</summary>
    public static string CreateIngress(DateTimeOffset subscribedAt, string instance) =>
        string.Create(CultureInfo.InvariantCulture, $"nfsvol-ingress-{subscribedAt.ToUnixTimeMilliseconds()}-{instance}");

    /// <summary>When the tag's subscription was made, or null for a tag of another form.</summary>
    public static DateTimeOffset? SubscribedAt(string? tag)
    {
        var parts = tag?.Split('-', 4);
        return parts is { Length: >= 3 } && parts[0] == "nfsvol" && parts[1].StartsWith('p')
            && long.TryParse(parts[2], NumberStyles.None, CultureInfo.InvariantCulture, out var ms)
            ? DateTimeOffset.FromUnixTimeMilliseconds(ms) : null;
    }
}
