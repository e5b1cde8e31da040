using System.Diagnostics;
using System.Globalization;
using System.Text.Json;

namespace NfsVolumeWorker.Testing;

/// <summary>One node of a <see cref="RabbitMqCluster"/>.</summary>
/// <param name="Index">1-based, as the script numbers them (<c>&lt;dir&gt;/node&lt;Index&gt;</c>).</param>
/// <param name="Name">The Erlang node name, <c>nfsvol-&lt;port&gt;@localhost</c>.</param>
/// <param name="Directory">The node's own state directory.</param>
public sealed record ClusterNode(int Index, string Name, string Directory, int AmqpPort, Uri ManagementUri)
{
    /// <summary><c>127.0.0.1:&lt;port&gt;</c>, as <c>Broker:Hosts</c> takes it.</summary>
    public string Endpoint => string.Create(CultureInfo.InvariantCulture, $"127.0.0.1:{AmqpPort}");

    public override string ToString() => $"node{Index} {Name} (amqp {AmqpPort})";
}

/// <summary>A quorum (or other) queue as <c>rabbitmqctl list_queues name type members leader online</c> reports it.</summary>
public sealed record ClusterQueueInfo(string Name, string Type, IReadOnlyList<string> Members, string? Leader, IReadOnlyList<string> Online);

/// <summary>
/// A private RabbitMQ cluster of N nodes on loopback, started by <c>ops/broker/private-rabbitmq start-cluster</c>
/// in a temp directory, with fault injection per node (stop_app/start_app, <c>kill -9</c>, restart on the same
/// state). <see cref="StartAsync"/> fails, with the script's output, when the cluster cannot be formed: tests never
/// skip for want of one. Disposing stops every node and removes the directory (the script's watchdog does it
/// should the test process die).
/// </summary>
public sealed class RabbitMqCluster : IAsyncDisposable
{
    private readonly PrivateBrokerScript _script;
    private int _stopped;

    private RabbitMqCluster(PrivateBrokerScript script, string directory, IReadOnlyList<ClusterNode> nodes, TimeSpan startupTime, string startupLog)
    {
        _script = script;
        Directory = directory;
        Nodes = nodes;
        StartupTime = startupTime;
        StartupLog = startupLog;
    }

    public string Directory { get; }

    public IReadOnlyList<ClusterNode> Nodes { get; }

    public TimeSpan StartupTime { get; }

    /// <summary>What the script reported while starting (ports, timing).</summary>
    public string StartupLog { get; }

    public ClusterNode Node(int index) => Nodes[index - 1];

    /// <summary>The node of an Erlang node name (a queue's leader, say).</summary>
    public ClusterNode NodeNamed(string name) =>
        Nodes.FirstOrDefault(n => n.Name == name) ?? throw new ArgumentException($"no node {name} in this cluster", nameof(name));

    /// <summary>Starts a cluster of <paramref name="nodes"/> nodes; throws, saying why, when it cannot be formed.</summary>
    public static async Task<RabbitMqCluster> StartAsync(int nodes = 3, TimeSpan? timeout = null)
    {
        var root = RepositoryRoot.TryFind()
            ?? throw new InvalidOperationException($"no {RepositoryRoot.SolutionFile} above {AppContext.BaseDirectory}, so no ops/broker/private-rabbitmq");
        if (!File.Exists("/usr/lib/rabbitmq/bin/rabbitmq-server"))
        {
            throw new InvalidOperationException("rabbitmq-server is not installed (apt-get install -y rabbitmq-server): the cluster tests start three private nodes of it");
        }
        var script = new PrivateBrokerScript(PrivateBrokerScript.DefaultPath(root), null);
        var dir = Path.Combine(Path.GetTempPath(), string.Create(CultureInfo.InvariantCulture,
            $"nfsvol-rabbitmq-cluster-{Environment.ProcessId}-{Guid.NewGuid().ToString("N")[..8]}"));
        var sw = Stopwatch.StartNew();
        var failures = new List<string>();
        // A start can lose a race for its ports to another test process starting brokers at the same moment.
        for (var attempt = 1; attempt <= 2; attempt++)
        {
            PrivateBrokerScript.Result result;
            try
            {
                result = await script.RunAsync(timeout ?? TimeSpan.FromMinutes(4), "start-cluster", dir, "--nodes", nodes.ToString(CultureInfo.InvariantCulture),
                    "--owner-pid", Environment.ProcessId.ToString(CultureInfo.InvariantCulture), "--ephemeral").ConfigureAwait(false);
            }
            catch (TimeoutException e)
            {
                await script.RunAsync(TimeSpan.FromMinutes(1), "stop", "--fast", "--remove", dir).ConfigureAwait(false);
                failures.Add($"attempt {attempt}: {e.Message}");
                continue;
            }
            if (!result.Succeeded)
            {
                await script.RunAsync(TimeSpan.FromMinutes(1), "stop", "--fast", "--remove", dir).ConfigureAwait(false);
                failures.Add($"attempt {attempt}: start-cluster exited {result.ExitCode}:{Environment.NewLine}{result.StandardError.Trim()}");
                continue;
            }
            var list = new List<ClusterNode>();
            for (var i = 1; i <= nodes; i++)
            {
                var nodeDir = Path.Combine(dir, $"node{i}");
                var env = PrivateBrokerScript.ReadEnvFile(Path.Combine(nodeDir, "broker.env"));
                list.Add(new ClusterNode(i, env["RABBITMQ_NODENAME"], nodeDir,
                    int.Parse(env["RABBITMQ_NODE_PORT"], CultureInfo.InvariantCulture), new Uri(env["RABBITMQ_MANAGEMENT_URL"])));
            }
            var cluster = new RabbitMqCluster(script, dir, list, sw.Elapsed, result.StandardError.Trim());
            try
            {
                await cluster.AssertFormedAsync().ConfigureAwait(false);
            }
            catch
            {
                await cluster.DisposeAsync().ConfigureAwait(false);
                throw;
            }
            return cluster;
        }
        throw new InvalidOperationException($"Could not form a {nodes}-node RabbitMQ cluster with {script.Path}:{Environment.NewLine}{string.Join(Environment.NewLine, failures)}");
    }

    /// <summary>Every node lists every other as a running member (cluster_status on each node).</summary>
    public async Task AssertFormedAsync()
    {
        foreach (var node in Nodes)
        {
            var json = await CtlOnAsync(node.Index, "cluster_status", "--formatter", "json").ConfigureAwait(false);
            using var doc = JsonDocument.Parse(json);
            var running = doc.RootElement.GetProperty("running_nodes").EnumerateArray().Select(e => e.GetString()).ToHashSet();
            var missing = Nodes.Where(n => !running.Contains(n.Name)).Select(n => n.Name).ToList();
            if (missing.Count > 0)
            {
                throw new InvalidOperationException($"not a cluster: {node} does not see {string.Join(", ", missing)} running; cluster_status: {json}");
            }
        }
    }

    /// <summary>The AMQP URL of <paramref name="vhost"/> on one node, with the guest credentials.</summary>
    public Uri UriFor(string vhost, int node = 1) =>
        new(string.Create(CultureInfo.InvariantCulture, $"amqp://guest:guest@127.0.0.1:{Node(node).AmqpPort}/{Uri.EscapeDataString(vhost)}"));

    /// <summary>Every node but <paramref name="node"/>, as <c>Broker:Hosts</c> takes them.</summary>
    public string HostsExcept(int node) => string.Join(',', Nodes.Where(n => n.Index != node).Select(n => n.Endpoint));

    /// <summary>A fresh vhost (<c>prefix-xxxxxxxx</c>) on which guest may do anything.</summary>
    public async Task<string> CreateVirtualHostAsync(string prefix)
    {
        var name = $"{prefix}-{Guid.NewGuid().ToString("N")[..8]}";
        await CtlAsync("add_vhost", name).ConfigureAwait(false);
        await CtlAsync("set_permissions", "-p", name, "guest", ".*", ".*", ".*").ConfigureAwait(false);
        return name;
    }

    public Task DeleteVirtualHostAsync(string vhost) => CtlAsync("delete_vhost", vhost);

    /// <summary>The queues of <paramref name="vhost"/> with their members, leader and online members.</summary>
    public async Task<IReadOnlyList<ClusterQueueInfo>> ListQueuesAsync(string vhost)
    {
        var json = await CtlAsync("list_queues", "-p", vhost, "name", "type", "members", "leader", "online", "--formatter", "json").ConfigureAwait(false);
        using var doc = JsonDocument.Parse(json);
        static IReadOnlyList<string> Names(JsonElement q, string property) =>
            q.TryGetProperty(property, out var v) && v.ValueKind == JsonValueKind.Array ? v.EnumerateArray().Select(e => e.GetString() ?? "").ToList() : [];
        return doc.RootElement.EnumerateArray().Select(q => new ClusterQueueInfo(
            q.GetProperty("name").GetString() ?? "",
            q.TryGetProperty("type", out var t) ? t.GetString() ?? "" : "",
            Names(q, "members"),
            q.TryGetProperty("leader", out var l) && l.ValueKind == JsonValueKind.String ? l.GetString() : null,
            Names(q, "online"))).ToList();
    }

    /// <summary><c>rabbitmqctl stop_app</c> on one node: the Erlang VM stays, RabbitMQ on it stops (connections
    /// closed, its queue replicas gone), as an operator takes a node out.</summary>
    public Task StopAppAsync(int node) => CtlOnAsync(node, "stop_app");

    /// <summary><c>rabbitmqctl start_app</c> on one node, then waits until it runs.</summary>
    public async Task StartAppAsync(int node)
    {
        await CtlOnAsync(node, "start_app").ConfigureAwait(false);
        await CtlOnAsync(node, "await_startup", "--timeout", "120").ConfigureAwait(false);
    }

    /// <summary><c>kill -9</c> of one node's beam.smp: no clean-up of any kind.</summary>
    public Task KillAsync(int node) => RunAsync(TimeSpan.FromSeconds(30), "kill", Node(node).Directory);

    /// <summary>Starts a node again on its ports and state (after <see cref="KillAsync"/>; or stops it cleanly
    /// first when it runs); returns once it runs.</summary>
    public Task RestartAsync(int node) => RunAsync(TimeSpan.FromMinutes(2), "restart", Node(node).Directory);

    /// <summary>Brings back every node that is not running: <c>start_app</c> where the Erlang VM still runs,
    /// a restart on its state where it is gone; then checks the cluster is whole.</summary>
    public async Task HealAsync()
    {
        foreach (var node in Nodes)
        {
            var status = await _script.RunAsync(TimeSpan.FromSeconds(60), "status", node.Directory).ConfigureAwait(false);
            if (status.Succeeded)
            {
                continue;
            }
            var pidFile = Path.Combine(node.Directory, "broker.pid");
            var vmRuns = File.Exists(pidFile) && int.TryParse(File.ReadAllText(pidFile).Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var pid)
                && File.Exists($"/proc/{pid}/comm") && File.ReadAllText($"/proc/{pid}/comm").StartsWith("beam", StringComparison.Ordinal);
            if (vmRuns)
            {
                await StartAppAsync(node.Index).ConfigureAwait(false);
            }
            else
            {
                await RestartAsync(node.Index).ConfigureAwait(false);
            }
        }
        await AssertFormedAsync().ConfigureAwait(false);
    }

    /// <summary>rabbitmqctl through the first node that runs.</summary>
    public Task<string> CtlAsync(params string[] args) => RunAsync(TimeSpan.FromSeconds(60), ["ctl", Directory, .. args]);

    /// <summary>rabbitmqctl on one node.</summary>
    public Task<string> CtlOnAsync(int node, params string[] args) => RunAsync(TimeSpan.FromMinutes(2), ["ctl", Node(node).Directory, .. args]);

    /// <summary>The script's <c>status</c>: one line per node, exit 0 only when every node runs.</summary>
    public async Task<(bool AllRunning, string Status)> StatusAsync()
    {
        var result = await _script.RunAsync(TimeSpan.FromSeconds(60), "status", Directory).ConfigureAwait(false);
        return (result.Succeeded, result.StandardOutput.Trim());
    }

    private async Task<string> RunAsync(TimeSpan timeout, params string[] args)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _stopped) != 0, this);
        var result = await _script.RunAsync(timeout, args).ConfigureAwait(false);
        return result.Succeeded
            ? result.StandardOutput
            : throw new InvalidOperationException($"{_script.Path} {string.Join(' ', args)} exited {result.ExitCode}: {result.StandardError.Trim()} {result.StandardOutput.Trim()}");
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _stopped, 1) == 0)
        {
            await _script.RunAsync(TimeSpan.FromMinutes(2), "stop", "--fast", "--remove", Directory).ConfigureAwait(false);
        }
    }

    public override string ToString() => $"cluster of {Nodes.Count} in {Directory}: {string.Join(", ", Nodes)}";
}
