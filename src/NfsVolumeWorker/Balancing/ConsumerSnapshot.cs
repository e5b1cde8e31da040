using NfsVolumeWorker.Broker;
using System.Globalization;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using NfsVolumeWorker.Partitions;

namespace NfsVolumeWorker.Balancing;

/// <summary>One consumer of a partition queue, as the management API reports it.</summary>
/// <param name="Queue">Queue name.</param>
/// <param name="Connection">The consumer's connection name (the instance name for workers).</param>
/// <param name="Active">True for the single active consumer.</param>
/// <param name="SubscribedAt">When it subscribed, from its consumer tag (<see cref="ConsumerTags"/>); null
/// for a consumer that is not a worker's.</param>
public sealed record PartitionConsumerInfo(int Partition, string Queue, string Connection, bool Active, DateTimeOffset? SubscribedAt = null);

/// <summary>What the balancer does with one of this instance's partition subscriptions.</summary>
public enum BalanceMove
{
    /// <summary>This instance is active on the partition and has too many: give it to the next in line.</summary>
    HandOver,

    /// <summary>This instance is next in line for a partition it should not take: move to the back of the line.</summary>
    StepBack,
}

/// <summary>One move of a balancing round.</summary>
public sealed record BalanceAction(int Partition, BalanceMove Move);

/// <summary>Who consumes which partition queue, and what follows for this instance.</summary>
public sealed record ConsumerSnapshot(int PartitionCount, IReadOnlyList<PartitionConsumerInfo> Consumers)
{
    private const string Prefix = "nfsvol.partition.";

    /// <summary>The AMQP client property in which a worker advertises its HTTP base URL (status page, health,
    /// metrics) on its partition connection: how <c>nfsvol status</c> finds each instance's <c>/status.json</c>.</summary>
    public const string StatusUrlProperty = "nfsvol_status_url";

    /// <summary>Instance (connection name) to the HTTP base URL it advertises in <see cref="StatusUrlProperty"/>;
    /// empty when the connections were not read or none advertises one.</summary>
    public IReadOnlyDictionary<string, string> StatusUrls { get; init; } = new Dictionary<string, string>(StringComparer.Ordinal);

    /// <summary>Partitions on which <paramref name="instance"/> waits (subscribed, not active).</summary>
    public IReadOnlyList<int> WaitingOf(string instance) =>
        Consumers.Where(c => !c.Active && c.Connection == instance).Select(c => c.Partition).Distinct().Order().ToList();

    /// <summary>Partitions without an active consumer.</summary>
    public IReadOnlyList<int> Unowned =>
        Enumerable.Range(0, PartitionCount).Where(p => !Consumers.Any(c => c.Partition == p && c.Active)).ToList();

    /// <summary>Distinct instances (connections) consuming partition queues: K.</summary>
    public IReadOnlyList<string> Instances => Consumers.Select(c => c.Connection).Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToList();

    /// <summary>Partitions whose active consumer is <paramref name="instance"/>.</summary>
    public IReadOnlyList<int> ActiveOf(string instance) =>
        Consumers.Where(c => c.Active && c.Connection == instance).Select(c => c.Partition).Distinct().Order().ToList();

    /// <summary>ceil(N/K): the most partitions one instance should hold.</summary>
    public int FairShare => Instances.Count == 0 ? PartitionCount : (PartitionCount + Instances.Count - 1) / Instances.Count;

    /// <summary>The waiting consumer RabbitMQ activates next on <paramref name="partition"/>: the one that
    /// subscribed first (single active consumer activates waiters in subscription order).</summary>
    public PartitionConsumerInfo? NextInLine(int partition) =>
        Consumers.Where(c => c.Partition == partition && !c.Active)
            .OrderBy(c => c.SubscribedAt ?? DateTimeOffset.MaxValue).ThenBy(c => c.Connection, StringComparer.Ordinal).FirstOrDefault();

    /// <summary>
    /// This round's moves for <paramref name="instance"/>, so that every instance ends with at most ceil(N/K):
    /// <list type="bullet">
    /// <item>above its share, it hands over (at most its excess) partitions whose next in line is below its
    /// share, counting each receiver only up to its own shortfall;</item>
    /// <item>next in line for a partition whose holder is above its share, while itself at or above its share
    /// and someone below its share waits behind it, it steps back, so the one below becomes next.</item>
    /// </list>
    /// Both moves are safe at any time: a hand-over keeps order (see <see cref="PartitionSubscription"/>), and a
    /// step-back of a waiting consumer moves no message.
    /// </summary>
    public IReadOnlyList<BalanceAction> Plan(string instance)
    {
        var instances = Instances;
        if (instances.Count < 2 || !instances.Contains(instance, StringComparer.Ordinal))
        {
            return [];
        }
        var fair = FairShare;
        var held = instances.ToDictionary(i => i, i => ActiveOf(i).Count, StringComparer.Ordinal);
        var actions = new List<BalanceAction>();

        var excess = held[instance] - fair;
        if (excess > 0)
        {
            var room = held.ToDictionary(h => h.Key, h => Math.Max(0, fair - h.Value), StringComparer.Ordinal);
            foreach (var p in ActiveOf(instance).OrderByDescending(p => p))
            {
                if (excess == 0)
                {
                    break;
                }
                if (NextInLine(p) is { } next && room.GetValueOrDefault(next.Connection) > 0)
                {
                    room[next.Connection]--;
                    excess--;
                    actions.Add(new BalanceAction(p, BalanceMove.HandOver));
                }
            }
        }

        if (held[instance] >= fair)
        {
            for (var p = 0; p < PartitionCount; p++)
            {
                var holder = Consumers.FirstOrDefault(c => c.Partition == p && c.Active);
                if (holder is null || holder.Connection == instance || held.GetValueOrDefault(holder.Connection) <= fair
                    || NextInLine(p)?.Connection != instance)
                {
                    continue;
                }
                var someoneBelowWaits = Consumers.Any(c => c.Partition == p && !c.Active && c.Connection != instance
                    && held.GetValueOrDefault(c.Connection) < fair);
                if (someoneBelowWaits)
                {
                    actions.Add(new BalanceAction(p, BalanceMove.StepBack));
                }
            }
        }
        return actions;
    }

    /// <summary>Parses <c>GET /api/consumers/&lt;vhost&gt;</c>.</summary>
    /// <param name="connectionNames">Connection name (<c>ip:port -&gt; ip:port</c>) to the client-provided name,
    /// from <c>GET /api/vhosts/&lt;vhost&gt;/connections</c>; a connection not in it counts under its own name.</param>
    public static ConsumerSnapshot Parse(JsonElement consumers, int partitionCount, IReadOnlyDictionary<string, string>? connectionNames = null)
    {
        var list = new List<PartitionConsumerInfo>();
        foreach (var c in consumers.EnumerateArray())
        {
            var queue = c.TryGetProperty("queue", out var q) && q.TryGetProperty("name", out var qn) ? qn.GetString() ?? "" : "";
            if (!queue.StartsWith(Prefix, StringComparison.Ordinal)
                || !int.TryParse(queue.AsSpan(Prefix.Length), NumberStyles.None, CultureInfo.InvariantCulture, out var partition)
                || partition >= partitionCount)
            {
                continue;
            }
            var connection = c.TryGetProperty("channel_details", out var ch) && ch.ValueKind == JsonValueKind.Object
                && ch.TryGetProperty("connection_name", out var cn) ? cn.GetString() ?? "" : "";
            if (connectionNames is not null && connectionNames.TryGetValue(connection, out var provided))
            {
                connection = provided;
            }
            var active = c.TryGetProperty("active", out var a) ? a.ValueKind == JsonValueKind.True
                : c.TryGetProperty("activity_status", out var s) && s.GetString() is "single_active" or "up";
            var tag = c.TryGetProperty("consumer_tag", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString() : null;
            list.Add(new PartitionConsumerInfo(partition, queue, connection, active, ConsumerTags.SubscribedAt(tag)));
        }
        return new ConsumerSnapshot(partitionCount, list);
    }
}

/// <summary>The one call of RabbitMQ's management API the balancer (and <c>nfsvol status</c>) makes.</summary>
public sealed class ManagementClient : IDisposable
{
    private readonly HttpClient _http;
    private readonly string _vhost;

    /// <param name="managementUrl">e.g. <c>http://127.0.0.1:15672/</c>.</param>
    /// <param name="broker">The broker: its credentials and vhost are used.</param>
    public ManagementClient(Uri managementUrl, BrokerAddress broker, TimeSpan timeout)
    {
        ArgumentNullException.ThrowIfNull(managementUrl);
        ArgumentNullException.ThrowIfNull(broker);
        _vhost = broker.VirtualHost;
        var (name, password) = (broker.UserName, broker.Password);
        _http = new HttpClient
        {
            BaseAddress = managementUrl.AbsoluteUri.EndsWith('/') ? managementUrl : new Uri(managementUrl.AbsoluteUri + "/"),
            Timeout = timeout,
        };
        _http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes($"{name}:{password}")));
    }

    public string VirtualHost => _vhost;

    /// <summary>The partition queues' consumers, each named by its connection's client-provided name (the worker's
    /// <c>Worker:InstanceName</c>).</summary>
    public async Task<ConsumerSnapshot> GetConsumersAsync(int partitionCount, CancellationToken cancellationToken)
    {
        var vhost = Uri.EscapeDataString(_vhost);
        // Consumers first: a connection opened between the two reads is then named, not counted as a stranger.
        using var consumers = await GetAsync($"api/consumers/{vhost}", cancellationToken).ConfigureAwait(false);
        using var connections = await GetAsync($"api/vhosts/{vhost}/connections?columns=name,user_provided_name,client_properties", cancellationToken).ConfigureAwait(false);
        var names = new Dictionary<string, string>(StringComparer.Ordinal);
        var statusUrls = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var c in connections.RootElement.EnumerateArray())
        {
            var name = c.TryGetProperty("name", out var n) ? n.GetString() : null;
            var properties = c.TryGetProperty("client_properties", out var cp) && cp.ValueKind == JsonValueKind.Object ? cp : default;
            var provided = c.TryGetProperty("user_provided_name", out var u) && u.ValueKind == JsonValueKind.String ? u.GetString()
                : properties.ValueKind == JsonValueKind.Object
                    && properties.TryGetProperty("connection_name", out var cn) && cn.ValueKind == JsonValueKind.String ? cn.GetString() : null;
            if (name is not null && !string.IsNullOrEmpty(provided))
            {
                names[name] = provided;
                if (properties.ValueKind == JsonValueKind.Object && properties.TryGetProperty(ConsumerSnapshot.StatusUrlProperty, out var url)
                    && url.ValueKind == JsonValueKind.String && !string.IsNullOrEmpty(url.GetString()))
                {
                    statusUrls[provided] = url.GetString()!;
                }
            }
        }
        return ConsumerSnapshot.Parse(consumers.RootElement, partitionCount, names) with { StatusUrls = statusUrls };
    }

    private async Task<JsonDocument> GetAsync(string path, CancellationToken cancellationToken)
    {
        using var response = await _http.GetAsync(new Uri(path, UriKind.Relative), cancellationToken).ConfigureAwait(false);
        if (!response.IsSuccessStatusCode)
        {
            throw new HttpRequestException(string.Create(CultureInfo.InvariantCulture, $"GET {_http.BaseAddress}{path}: HTTP {(int)response.StatusCode}"));
        }
        var stream = await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
        await using (stream.ConfigureAwait(false))
        {
            return await JsonDocument.ParseAsync(stream, cancellationToken: cancellationToken).ConfigureAwait(false);
        }
    }

    public void Dispose() => _http.Dispose();
}
