using System.ComponentModel.DataAnnotations;

namespace NfsVolumeWorker.Oslo;

/// <summary>The oslo.messaging (Cinder RPC) adapter. Section <c>Oslo</c>. The flags that change the broker
/// topology mirror oslo.messaging's options of the same meaning: they must match what the other OpenStack
/// services on the broker use, or the broker refuses the declarations (PRECONDITION_FAILED).</summary>
public sealed class OsloOptions
{
    public const string SectionName = "Oslo";

    /// <summary>Serve Cinder's volume RPC API (topic cinder-volume) and publish Cinder notifications.</summary>
    public bool Enabled { get; set; }

    /// <summary>AMQP URL of the OpenStack broker; empty to use Broker:Url. (oslo: transport_url, rabbit:// accepted.)</summary>
    public string? BrokerUrl { get; set; }

    /// <summary>Further nodes of the same cluster, <c>host[:port]</c> separated by commas (as Broker:Hosts, which is
    /// used with Broker:Url when BrokerUrl is empty); oslo's own form, several nodes in the URL, works too.</summary>
    public string? BrokerHosts { get; set; }

    /// <summary>The backend host name as Cinder knows it, host@backend (cinder.conf: host + enabled_backends), e.g. hostA@nfs.</summary>
    public string Host { get; set; } = "";

    /// <summary>The pool name appended to volume hosts (host@backend#pool); default: the backend name.</summary>
    public string? PoolName { get; set; }

    /// <summary>oslo control_exchange (Cinder sets cinder).</summary>
    [Required]
    public string ControlExchange { get; set; } = "cinder";

    /// <summary>The RPC topic (Cinder: cinder-volume).</summary>
    [Required]
    public string Topic { get; set; } = "cinder-volume";

    /// <summary>oslo amqp_durable_queues.</summary>
    public bool AmqpDurableQueues { get; set; }

    /// <summary>oslo amqp_auto_delete.</summary>
    public bool AmqpAutoDelete { get; set; }

    /// <summary>oslo rabbit_quorum_queue (x-queue-type quorum; implies durable).</summary>
    public bool QuorumQueues { get; set; }

    /// <summary>oslo rabbit_ha_queues (x-ha-policy all).</summary>
    public bool HaQueues { get; set; }

    /// <summary>oslo rabbit_transient_queues_ttl, seconds (x-expires of fanout queues); 0 for none.</summary>
    [Range(0, int.MaxValue)]
    public int TransientQueuesTtlSeconds { get; set; } = 1800;

    /// <summary>Notification topics (oslo_messaging_notifications topics); routing key &lt;topic&gt;.&lt;priority&gt;.</summary>
    public string NotificationTopics { get; set; } = "notifications";

    /// <summary>Publish Cinder notifications (driver messagingv2); false is driver noop.</summary>
    public bool Notifications { get; set; } = true;

    /// <summary>Highest RPC API version served (Cinder's volume API 3.18).</summary>
    public string MaxVersion { get; set; } = "3.18";

    /// <summary>Availability zone reported in payloads when a request carries none.</summary>
    public string AvailabilityZone { get; set; } = "nova";

    /// <summary>Unacknowledged oslo messages held at once.</summary>
    [Range(1, 1000)]
    public ushort PrefetchCount { get; set; } = 16;

    /// <summary>The part of <see cref="Host"/> before '@' (the server of the current target).</summary>
    public string HostOnly => Host.Split('@', 2)[0];

    /// <summary>The backend name (after '@'); the whole host when there is none.</summary>
    public string BackendName => Host.Contains('@', StringComparison.Ordinal) ? Host.Split('@', 2)[1].Split('#')[0] : Host;

    public bool Durable => AmqpDurableQueues || QuorumQueues;
}
