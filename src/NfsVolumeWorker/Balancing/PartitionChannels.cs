using MassTransit;
using MassTransit.RabbitMqTransport;

namespace NfsVolumeWorker.Balancing;

/// <summary>
/// What this instance knows of each of its partition endpoints: the AMQP channel its consumer is on, and a
/// gate that lets a hand-over wait until no message of the partition is being accepted.
/// </summary>
public sealed class PartitionChannels
{
    private readonly PartitionSlot[] _slots;

    public PartitionChannels(int partitionCount)
    {
        _slots = Enumerable.Range(0, partitionCount).Select(p => new PartitionSlot(p)).ToArray();
    }

    public int Count => _slots.Length;

    public PartitionSlot this[int partition] => _slots[partition];

    public IReadOnlyList<PartitionSlot> All => _slots;

    /// <summary>Adds the channel tracker and the gate to partition <paramref name="partition"/>'s receive endpoint.
    /// Call first in the endpoint's configuration: the gate must sit outside the retry filter.</summary>
    public void Configure(IRabbitMqReceiveEndpointConfigurator endpoint, int partition)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        var slot = _slots[partition];
        endpoint.ConfigureChannel(c => c.UseFilter(new PartitionChannelFilter(slot)));
        endpoint.UseFilter(new PartitionGateFilter(slot));
    }
}

/// <summary>One partition endpoint: its current channel, messages being accepted, and the hand-over gate.</summary>
public sealed class PartitionSlot(int partition)
{
    private readonly Lock _lock = new();
    private TaskCompletionSource _open = Completed();
    private ChannelContext? _channel;
    private int _inFlight;
    private volatile bool _stopping;

    public int Partition { get; } = partition;

    /// <summary>The channel the partition's consumer is subscribed on, while it is subscribed.</summary>
    public ChannelContext? Channel => Volatile.Read(ref _channel);

    /// <summary>True while a channel is attached and open.</summary>
    public bool IsSubscribed => Channel?.Channel.IsOpen == true;

    public int InFlight => Volatile.Read(ref _inFlight);

    /// <summary>Set at shutdown: the endpoint must not subscribe again.</summary>
    public bool IsStopping => _stopping;

    internal void Attach(ChannelContext channel) => Volatile.Write(ref _channel, channel);

    internal void Detach(ChannelContext channel) => Interlocked.CompareExchange(ref _channel, null, channel);

    /// <summary>Waits while the gate is closed, then counts the caller as in flight (pair with <see cref="Exit"/>).</summary>
    internal async Task EnterAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            Task open;
            lock (_lock)
            {
                if (_open.Task.IsCompleted)
                {
                    _inFlight++;
                    return;
                }
                open = _open.Task;
            }
            await open.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    internal void Exit()
    {
        lock (_lock)
        {
            _inFlight--;
        }
    }

    /// <summary>Stops new messages from being accepted (they wait at the gate).</summary>
    internal void CloseGate()
    {
        lock (_lock)
        {
            if (_open.Task.IsCompleted)
            {
                _open = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            }
        }
    }

    internal void OpenGate()
    {
        TaskCompletionSource open;
        lock (_lock)
        {
            open = _open;
        }
        open.TrySetResult();
    }

    internal void MarkStopping() => _stopping = true;

    /// <summary>
    /// Gives the partition to the next waiting consumer, without reordering: closes the gate, waits until no
    /// message is being accepted, then closes the consumer's channel. Closing the channel (not basic.cancel)
    /// matters: RabbitMQ 3.10 returns a closed channel's unacknowledged messages to the head of the quorum
    /// queue before it activates the next consumer, whereas after a basic.cancel it activates the next
    /// consumer at once and hands it newer messages before the returned ones. MassTransit then opens a new
    /// channel for the endpoint and subscribes again, behind the other instances.
    /// </summary>
    /// <returns>False when there was nothing to hand over or the partition did not become idle in time.</returns>
    public async Task<bool> HandOverAsync(TimeSpan idleTimeout, bool reopen, CancellationToken cancellationToken)
    {
        CloseGate();
        try
        {
            var deadline = DateTime.UtcNow + idleTimeout;
            while (InFlight > 0)
            {
                if (DateTime.UtcNow > deadline)
                {
                    return false;
                }
                await Task.Delay(20, cancellationToken).ConfigureAwait(false);
            }
            var channel = Channel;
            if (channel is null || !channel.Channel.IsOpen)
            {
                return false;
            }
            try
            {
                await channel.Channel.CloseAsync(200, "nfsvol: partition handed over", abort: false, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception e) when (e is ObjectDisposedException or RabbitMQ.Client.Exceptions.AlreadyClosedException)
            {
                // MassTransit reacts to the channel's shutdown while the close completes, and disposes it.
            }
            return !channel.Channel.IsOpen;
        }
        finally
        {
            if (reopen)
            {
                OpenGate();
            }
        }
    }

    private static TaskCompletionSource Completed()
    {
        var tcs = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        tcs.SetResult();
        return tcs;
    }
}

/// <summary>Records the channel of a partition endpoint; at shutdown, keeps a new channel from subscribing.</summary>
internal sealed class PartitionChannelFilter(PartitionSlot slot) : IFilter<ChannelContext>
{
    public async Task Send(ChannelContext context, IPipe<ChannelContext> next)
    {
        if (slot.IsStopping)
        {
            // Shutting down after the partition was handed over: do not take it back. Wait for the bus to stop.
            try
            {
                await Task.Delay(Timeout.Infinite, context.CancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
            }
            return;
        }
        slot.Attach(context);
        try
        {
            await next.Send(context).ConfigureAwait(false);
        }
        finally
        {
            slot.Detach(context);
        }
    }

    public void Probe(ProbeContext context) => context.CreateFilterScope("nfsvolPartitionChannel");
}

/// <summary>Holds a partition's messages while it is being handed over; a message whose channel was closed
/// meanwhile is not accepted here (the broker already gave it back to the queue for the next owner).</summary>
internal sealed class PartitionGateFilter(PartitionSlot slot) : IFilter<ConsumeContext>
{
    public async Task Send(ConsumeContext context, IPipe<ConsumeContext> next)
    {
        await slot.EnterAsync(context.CancellationToken).ConfigureAwait(false);
        try
        {
            if (context.ReceiveContext.TryGetPayload<ChannelContext>(out var channel) && !channel.Channel.IsOpen)
            {
                // MassTransit ignores OperationCanceledException here (no error queue); the ack cannot happen anyway.
                throw new OperationCanceledException($"partition {slot.Partition} was handed over; its next owner receives this message");
            }
            await next.Send(context).ConfigureAwait(false);
        }
        finally
        {
            slot.Exit();
        }
    }

    public void Probe(ProbeContext context) => context.CreateFilterScope("nfsvolPartitionGate");
}
