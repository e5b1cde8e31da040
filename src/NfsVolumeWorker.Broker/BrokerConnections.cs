using RabbitMQ.Client;

namespace NfsVolumeWorker.Broker;

/// <summary>Who recovers a connection that drops.</summary>
public enum ConnectionRecovery
{
    /// <summary>The caller does (it reconnects and re-subscribes itself), or nobody needs to (a short CLI call).</summary>
    ByCaller,

    /// <summary>RabbitMQ.Client does, channels and topology included.</summary>
    ByClient,
}

/// <summary>
/// How every part of the project opens a connection to the broker: credentials, vhost and TLS from the
/// <see cref="BrokerAddress"/>, its nodes tried in order, a client name the management UI shows, one heartbeat.
/// </summary>
public static class BrokerConnections
{
    /// <summary>Heartbeat asked of the broker: a dead peer is noticed within about twice this.</summary>
    public static readonly TimeSpan Heartbeat = TimeSpan.FromSeconds(30);

    public static ConnectionFactory CreateFactory(BrokerAddress address, string clientName, ConnectionRecovery recovery)
    {
        ArgumentNullException.ThrowIfNull(address);
        return new ConnectionFactory
        {
            Uri = address.PrimaryUri,
            ClientProvidedName = clientName,
            AutomaticRecoveryEnabled = recovery == ConnectionRecovery.ByClient,
            TopologyRecoveryEnabled = recovery == ConnectionRecovery.ByClient,
            RequestedHeartbeat = Heartbeat,
        };
    }

    /// <summary>Opens a connection made by <paramref name="factory"/> (from <see cref="CreateFactory"/>, perhaps with
    /// client properties added) to the first of <paramref name="address"/>'s nodes that answers.</summary>
    public static Task<IConnection> ConnectAsync(this ConnectionFactory factory, BrokerAddress address, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(factory);
        ArgumentNullException.ThrowIfNull(address);
        return factory.CreateConnectionAsync(address.InOrder(), factory.ClientProvidedName, cancellationToken);
    }

    /// <summary>Opens a connection with the defaults.</summary>
    public static Task<IConnection> ConnectAsync(this BrokerAddress address, string clientName, ConnectionRecovery recovery, CancellationToken cancellationToken) =>
        CreateFactory(address, clientName, recovery).ConnectAsync(address, cancellationToken);
}
