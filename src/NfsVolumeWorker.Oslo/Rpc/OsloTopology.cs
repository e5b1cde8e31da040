namespace NfsVolumeWorker.Oslo.Rpc;

/// <summary>The names and flags a cinder-volume RPC server for backend host@backend declares
/// (cinder/service.py: Target(topic, server=host@backend) and, for the volume topic,
/// Target(topic.host@backend, server=host); oslo impl_rabbit declare_topic_consumer/declare_fanout_consumer).</summary>
public sealed class OsloTopology(OsloOptions options)
{
    public string ControlExchange => options.ControlExchange;

    /// <summary>Queues bound to the control exchange with their own name as key: topic, topic.host@backend
    /// (legacy server queue and the current target's topic queue) and topic.host@backend.host (Cinder &gt;= 3.6).</summary>
    public IReadOnlyList<string> TopicQueues =>
    [
        options.Topic,
        $"{options.Topic}.{options.Host}",
        $"{options.Topic}.{options.Host}.{options.HostOnly}",
    ];

    /// <summary>The fanout exchanges of both targets.</summary>
    public IReadOnlyList<string> FanoutExchanges => [$"{options.Topic}_fanout", $"{options.Topic}.{options.Host}_fanout"];

    public static string FanoutQueueName(string fanoutExchange) =>
        $"{fanoutExchange}_{Guid.NewGuid():N}"; // <topic>_fanout_<uuid hex>

    public bool Durable => options.Durable;

    public bool AutoDelete => options.AmqpAutoDelete;

    /// <summary>Arguments of topic (and notification) queues: no TTL.</summary>
    public Dictionary<string, object?> TopicQueueArguments()
    {
        var args = new Dictionary<string, object?>();
        if (options.HaQueues)
        {
            args["x-ha-policy"] = "all";
        }
        if (options.QuorumQueues)
        {
            args["x-queue-type"] = "quorum";
        }
        return args;
    }

    /// <summary>Arguments of fanout queues: x-expires from the transient TTL, never quorum.</summary>
    public Dictionary<string, object?> FanoutQueueArguments()
    {
        var args = new Dictionary<string, object?>();
        if (options.HaQueues)
        {
            args["x-ha-policy"] = "all";
        }
        if (options.TransientQueuesTtlSeconds > 0)
        {
            args["x-expires"] = options.TransientQueuesTtlSeconds * 1000;
        }
        return args;
    }
}
