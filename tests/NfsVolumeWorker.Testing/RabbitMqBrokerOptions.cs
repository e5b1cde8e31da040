namespace NfsVolumeWorker.Testing;

/// <summary>Where <see cref="RabbitMqBroker.AcquireAsync"/> looks for a broker, and how it starts one.</summary>
public sealed record RabbitMqBrokerOptions
{
    /// <summary>Environment variable: the AMQP URL of a broker to use as it is (way a).</summary>
    public const string UrlVariable = "NFSVOL_TEST_RABBITMQ_URL";

    /// <summary>Environment variable: that broker's management API (default: http://host:15672/ when it answers).</summary>
    public const string ManagementUrlVariable = "NFSVOL_TEST_RABBITMQ_MANAGEMENT_URL";

    /// <summary>Environment variable: force one way: <c>url</c>, <c>container</c> or <c>private</c>.</summary>
    public const string ModeVariable = "NFSVOL_TEST_RABBITMQ_MODE";

    /// <summary>An explicit broker; when set, it is the only way tried.</summary>
    public Uri? Url { get; init; }

    public Uri? ManagementUrl { get; init; }

    /// <summary>Only this way (null: a, then b, then c).</summary>
    public RabbitMqBrokerMode? Mode { get; init; }

    public TimeSpan DockerProbeTimeout { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>The image of the container way: Debian's broker is 3.10, so the container matches it.</summary>
    public string ContainerImage { get; init; } = "rabbitmq:3.10-management";

    /// <summary>The private-broker script (default: ops/broker/private-rabbitmq in the repository).</summary>
    public string? ScriptPath { get; init; }

    /// <summary>Where rabbitmq-server's own scripts are (default /usr/lib/rabbitmq/bin): passed to the script.</summary>
    public string? RabbitMqBinDirectory { get; init; }

    /// <summary>The private broker's global consumer_timeout (3.10 has no per-queue or per-vhost one).</summary>
    public TimeSpan? ConsumerTimeout { get; init; }

    /// <summary>Longest wait for the private broker's script.</summary>
    public TimeSpan StartTimeout { get; init; } = TimeSpan.FromMinutes(2);

    /// <summary>The options the environment variables describe.</summary>
    public static RabbitMqBrokerOptions FromEnvironment() => FromEnvironment(Environment.GetEnvironmentVariable);

    /// <summary>The options the variables <paramref name="variable"/> looks up describe (tests pass their own
    /// lookup rather than change the process environment that parallel tests read).</summary>
    public static RabbitMqBrokerOptions FromEnvironment(Func<string, string?> variable)
    {
        ArgumentNullException.ThrowIfNull(variable);
        var url = variable(UrlVariable);
        var management = variable(ManagementUrlVariable);
        var mode = variable(ModeVariable);
        return new RabbitMqBrokerOptions
        {
            Url = string.IsNullOrWhiteSpace(url) ? null : new Uri(url.Trim()),
            ManagementUrl = string.IsNullOrWhiteSpace(management) ? null : new Uri(management.Trim()),
            Mode = mode?.Trim().ToUpperInvariant() switch
            {
                null or "" => null,
                "URL" => RabbitMqBrokerMode.ExplicitUrl,
                "CONTAINER" => RabbitMqBrokerMode.Container,
                "PRIVATE" => RabbitMqBrokerMode.Private,
                _ => throw new InvalidOperationException(
                    $"{ModeVariable}={mode}: expected url, container or private"),
            },
        };
    }
}
