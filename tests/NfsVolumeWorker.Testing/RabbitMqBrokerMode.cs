namespace NfsVolumeWorker.Testing;

/// <summary>How a <see cref="RabbitMqBroker"/> was obtained.</summary>
public enum RabbitMqBrokerMode
{
    /// <summary>A broker somebody else runs, named by <c>NFSVOL_TEST_RABBITMQ_URL</c>.</summary>
    ExplicitUrl,

    /// <summary>A Testcontainers.RabbitMq container on a Docker engine that answered.</summary>
    Container,

    /// <summary>A private rabbitmq-server started by <c>ops/broker/private-rabbitmq</c>.</summary>
    Private,
}
