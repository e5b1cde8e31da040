using RabbitMQ.Client;

namespace NfsVolumeWorker.Testing;

/// <summary>A fresh vhost on a test broker, with full permissions for the broker's user. Disposing deletes it.</summary>
public sealed class VirtualHost : IAsyncDisposable
{
    private int _deleted;

    internal VirtualHost(RabbitMqBroker broker, string name, Uri amqpUri)
    {
        Broker = broker;
        Name = name;
        AmqpUri = amqpUri;
    }

    public RabbitMqBroker Broker { get; }

    public string Name { get; }

    /// <summary><c>amqp://user:password@host:port/&lt;vhost, url-encoded&gt;</c>.</summary>
    public Uri AmqpUri { get; }

    public ConnectionFactory CreateConnectionFactory() => new() { Uri = AmqpUri };

    public Task<IConnection> ConnectAsync(string? clientProvidedName = null, CancellationToken cancellationToken = default) =>
        CreateConnectionFactory().CreateConnectionAsync(clientProvidedName ?? $"test:{Name}", cancellationToken);

    public Task<IReadOnlyList<QueueInfo>> ListQueuesAsync(CancellationToken cancellationToken = default) =>
        Broker.ListQueuesAsync(Name, cancellationToken);

    public Task<IReadOnlyList<ConsumerInfo>> ListConsumersAsync(CancellationToken cancellationToken = default) =>
        Broker.ListConsumersAsync(Name, cancellationToken);

    /// <summary>Force-closes this vhost's connections with the given client-provided name; how many.</summary>
    public Task<int> CloseConnectionsAsync(string clientProvidedName, CancellationToken cancellationToken = default) =>
        Broker.CloseConnectionsAsync(Name, clientProvidedName, cancellationToken);

    public Task<int> MessageCountAsync(string queue, CancellationToken cancellationToken = default) =>
        Broker.MessageCountAsync(Name, queue, cancellationToken);

    public async Task DeleteAsync(CancellationToken cancellationToken = default)
    {
        if (Interlocked.Exchange(ref _deleted, 1) == 0)
        {
            await Broker.DeleteVirtualHostAsync(Name, cancellationToken).ConfigureAwait(false);
        }
    }

    public async ValueTask DisposeAsync() => await DeleteAsync().ConfigureAwait(false);

    public override string ToString() => $"vhost {Name} on {Broker}";
}
