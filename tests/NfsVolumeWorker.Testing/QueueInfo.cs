namespace NfsVolumeWorker.Testing;

/// <summary>A queue as the management API reports it (counts lag the broker by up to its statistics interval).</summary>
/// <param name="Arguments">The queue's x-arguments (x-queue-type, x-single-active-consumer, ...).</param>
/// <param name="SingleActiveConsumerTag">The broker's own single-active-consumer tag, when it reports one.</param>
/// <param name="ConsumerDetails">The queue's consumers from <c>/api/consumers/&lt;vhost&gt;</c>.</param>
public sealed record QueueInfo(
    string Name,
    string Type,
    IReadOnlyDictionary<string, object?> Arguments,
    int Consumers,
    long Messages,
    long MessagesReady,
    long MessagesUnacknowledged,
    string? SingleActiveConsumerTag,
    IReadOnlyList<ConsumerInfo> ConsumerDetails)
{
    /// <summary>True when the queue was declared with x-single-active-consumer = true.</summary>
    public bool IsSingleActiveConsumer =>
        Arguments.TryGetValue("x-single-active-consumer", out var v) && v is true;

    /// <summary>The consumers the broker delivers to (all of them, unless single active consumer).</summary>
    public IReadOnlyList<ConsumerInfo> ActiveConsumers => ConsumerDetails.Where(c => c.Active).ToList();
}

/// <param name="ActivityStatus">"up", "single_active" or "waiting" (RabbitMQ 3.8+).</param>
/// <param name="ChannelName">The channel's name, "client-ip:port -> server-ip:port (channel number)".</param>
public sealed record ConsumerInfo(
    string Queue,
    string ConsumerTag,
    bool Active,
    string? ActivityStatus,
    int PrefetchCount,
    bool AckRequired,
    string? ChannelName,
    string? ConnectionName,
    IReadOnlyDictionary<string, object?> Arguments);
