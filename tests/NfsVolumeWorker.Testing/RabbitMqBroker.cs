using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using DotNet.Testcontainers.Containers;
using RabbitMQ.Client;
using RabbitMQ.Client.Exceptions;
using Testcontainers.RabbitMq;

namespace NfsVolumeWorker.Testing;

/// <summary>
/// A real RabbitMQ broker for tests. <see cref="SharedAsync"/> obtains one per test process, in this
/// order: (a) the URL in <c>NFSVOL_TEST_RABBITMQ_URL</c>; (b) a Testcontainers.RabbitMq container
/// when a Docker engine answers; (c) a private rabbitmq-server started by
/// <c>ops/broker/private-rabbitmq</c> in a temp directory. It is stopped when the process exits
/// (and, should the process be killed, by the script's watchdog, or by the next run's cleanup).
/// Tests isolate themselves with <see cref="CreateVirtualHostAsync"/>. When no way works, it
/// throws, saying what was tried: tests never skip for want of a broker.
/// </summary>
public sealed class RabbitMqBroker : IAsyncDisposable
{
    private static readonly Lazy<Task<RabbitMqBroker>> Shared =
        new(() => AcquireSharedAsync(), LazyThreadSafetyMode.ExecutionAndPublication);

    private static readonly ConcurrentDictionary<RabbitMqBroker, byte> Running = new();
    private static int _exitHookInstalled;

    private readonly ManagementApi? _management;
    private readonly PrivateBrokerScript? _script;
    private readonly RabbitMqContainer? _container;
    private readonly bool _isShared;
    private int _stopped;

    private RabbitMqBroker(
        RabbitMqBrokerMode mode,
        Uri amqpUri,
        ManagementApi? management,
        string description,
        bool isShared,
        PrivateBrokerScript? script = null,
        IReadOnlyDictionary<string, string>? privateEnv = null,
        string? dataDirectory = null,
        RabbitMqContainer? container = null,
        TimeSpan startupTime = default,
        string? startupLog = null)
    {
        Mode = mode;
        AmqpUri = amqpUri;
        _management = management;
        Description = description;
        _isShared = isShared;
        _script = script;
        _container = container;
        DataDirectory = dataDirectory;
        StartupTime = startupTime;
        StartupLog = startupLog ?? "";
        var userInfo = amqpUri.UserInfo.Split(':', 2);
        UserName = userInfo.Length > 0 && userInfo[0].Length > 0 ? Uri.UnescapeDataString(userInfo[0]) : "guest";
        Password = userInfo.Length > 1 ? Uri.UnescapeDataString(userInfo[1]) : "guest";
        if (privateEnv is not null)
        {
            NodeName = privateEnv.GetValueOrDefault("RABBITMQ_NODENAME");
            BrokerProcessId = ParseInt(privateEnv.GetValueOrDefault("BROKER_PID"));
            EpmdProcessId = ParseInt(privateEnv.GetValueOrDefault("EPMD_PID"));
            EpmdPort = ParseInt(privateEnv.GetValueOrDefault("ERL_EPMD_PORT"));
        }
    }

    public RabbitMqBrokerMode Mode { get; }

    /// <summary>The broker's default vhost, with credentials: <c>amqp://user:password@host:port/</c>.</summary>
    public Uri AmqpUri { get; }

    public Uri? ManagementUri => _management?.BaseUri;

    public string UserName { get; }

    public string Password { get; }

    /// <summary>How it was obtained, and what the ways before it said.</summary>
    public string Description { get; }

    /// <summary>Private mode: the directory that holds all of the broker's state.</summary>
    public string? DataDirectory { get; }

    /// <summary>Private mode: the Erlang node name.</summary>
    public string? NodeName { get; }

    /// <summary>Private mode: the OS pid of the broker's beam.smp.</summary>
    public int? BrokerProcessId { get; }

    /// <summary>Private mode: the OS pid of the broker's own epmd.</summary>
    public int? EpmdProcessId { get; }

    public int? EpmdPort { get; }

    /// <summary>How long obtaining the broker took.</summary>
    public TimeSpan StartupTime { get; }

    /// <summary>Private mode: what the script reported while starting (ports, timing).</summary>
    public string StartupLog { get; }

    public bool IsStopped => Volatile.Read(ref _stopped) != 0;

    /// <summary>The broker of this test process, started on first use, stopped when the process exits.</summary>
    public static Task<RabbitMqBroker> SharedAsync() => Shared.Value;

    /// <summary>
    /// A second, private broker of the caller's own (private mode only: never a URL or a container),
    /// e.g. with a short global consumer_timeout, which RabbitMQ 3.10 cannot set per queue or vhost.
    /// The caller disposes it.
    /// </summary>
    public static Task<RabbitMqBroker> StartDedicatedAsync(TimeSpan? consumerTimeout = null) =>
        StartDedicatedAsync(new RabbitMqBrokerOptions { ConsumerTimeout = consumerTimeout });

    public static async Task<RabbitMqBroker> StartDedicatedAsync(RabbitMqBrokerOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var (broker, failure) = await TryStartPrivateAsync(options, isShared: false, "dedicated").ConfigureAwait(false);
        return broker ?? throw new InvalidOperationException(
            $"Could not start a dedicated private RabbitMQ broker: {failure}{Environment.NewLine}{InstallHint}");
    }

    /// <summary>Obtains a broker the way <paramref name="options"/> describe (not shared: the caller disposes it).</summary>
    public static Task<RabbitMqBroker> AcquireAsync(RabbitMqBrokerOptions options) => AcquireCoreAsync(options, isShared: false);

    private static Task<RabbitMqBroker> AcquireSharedAsync() =>
        AcquireCoreAsync(RabbitMqBrokerOptions.FromEnvironment(), isShared: true);

    private const string InstallHint =
        "To run the broker tests on this machine: apt-get install -y rabbitmq-server (3.10 or later; it need not be started: " +
        "the tests start a private one with ops/broker/private-rabbitmq). Or set " + RabbitMqBrokerOptions.UrlVariable +
        "=amqp://user:password@host:5672/ (and " + RabbitMqBrokerOptions.ManagementUrlVariable +
        ") to a broker with the management plugin, or run a Docker engine.";

    private static async Task<RabbitMqBroker> AcquireCoreAsync(RabbitMqBrokerOptions options, bool isShared)
    {
        ArgumentNullException.ThrowIfNull(options);
        var tried = new List<string>();
        bool Allowed(RabbitMqBrokerMode m) => options.Mode is null || options.Mode == m;

        // (a) an explicit broker: used as it is, and never silently replaced by another way.
        if (options.Url is not null && Allowed(RabbitMqBrokerMode.ExplicitUrl))
        {
            return await UseExplicitUrlAsync(options, isShared).ConfigureAwait(false);
        }

        tried.Add(options.Mode is RabbitMqBrokerMode.ExplicitUrl
            ? $"(a) explicit URL: {RabbitMqBrokerOptions.UrlVariable} is not set, but {RabbitMqBrokerOptions.ModeVariable}=url"
            : $"(a) explicit URL: {RabbitMqBrokerOptions.UrlVariable} is not set");

        // (b) a container, when a Docker engine answers (quickly: no engine is the usual case here).
        if (Allowed(RabbitMqBrokerMode.Container))
        {
            var (answers, detail) = await DockerProbe.ProbeAsync(options.DockerProbeTimeout).ConfigureAwait(false);
            if (answers)
            {
                try
                {
                    return await StartContainerAsync(options, isShared, detail, tried).ConfigureAwait(false);
                }
#pragma warning disable CA1031 // any failure of this way moves on to the next one, and is reported
                catch (Exception e)
#pragma warning restore CA1031
                {
                    tried.Add($"(b) container {options.ContainerImage}: {detail}, but starting it failed: {e.GetType().Name}: {e.Message}");
                }
            }
            else
            {
                tried.Add($"(b) container: no Docker engine answers ({detail})");
            }
        }
        else
        {
            tried.Add($"(b) container: not tried ({RabbitMqBrokerOptions.ModeVariable})");
        }

        // (c) a private rabbitmq-server.
        if (Allowed(RabbitMqBrokerMode.Private))
        {
            var (broker, failure) = await TryStartPrivateAsync(options, isShared, string.Join("; ", tried)).ConfigureAwait(false);
            if (broker is not null)
            {
                return broker;
            }

            tried.Add($"(c) private rabbitmq-server: {failure}");
        }
        else
        {
            tried.Add($"(c) private rabbitmq-server: not tried ({RabbitMqBrokerOptions.ModeVariable})");
        }

        var message = new StringBuilder("No RabbitMQ broker for the tests. Tried, in order:");
        foreach (var t in tried)
        {
            message.AppendLine().Append("  ").Append(t);
        }

        message.AppendLine().Append(InstallHint);
        throw new InvalidOperationException(message.ToString());
    }

    private static async Task<RabbitMqBroker> UseExplicitUrlAsync(RabbitMqBrokerOptions options, bool isShared)
    {
        var url = options.Url!;
        var user = url.UserInfo.Split(':', 2);
        var userName = user[0].Length > 0 ? Uri.UnescapeDataString(user[0]) : "guest";
        var password = user.Length > 1 ? Uri.UnescapeDataString(user[1]) : "guest";
        var management = await ConnectManagementAsync(
            options.ManagementUrl ?? new Uri($"http://{url.Host}:15672/"), userName, password, required: options.ManagementUrl is not null)
            .ConfigureAwait(false);
        var broker = new RabbitMqBroker(
            RabbitMqBrokerMode.ExplicitUrl,
            url,
            management,
            $"explicit broker {Redact(url.ToString())} from {RabbitMqBrokerOptions.UrlVariable}" +
            (management is null ? " (no management API: vhosts cannot be created)" : ""),
            isShared);
        // Fail now, with the URL in the message, rather than in every test.
        await broker.CheckConnectsAsync().ConfigureAwait(false);
        return broker;
    }

    private static async Task<RabbitMqBroker> StartContainerAsync(
        RabbitMqBrokerOptions options, bool isShared, string probe, List<string> tried)
    {
        var sw = Stopwatch.StartNew();
        var container = new RabbitMqBuilder(options.ContainerImage).WithPortBinding(15672, true).Build();
        try
        {
            await container.StartAsync().ConfigureAwait(false);
            var amqp = new Uri(container.GetConnectionString());
            var user = amqp.UserInfo.Split(':', 2);
            var management = await ConnectManagementAsync(
                new Uri($"http://{container.Hostname}:{container.GetMappedPublicPort(15672)}/"),
                Uri.UnescapeDataString(user[0]), user.Length > 1 ? Uri.UnescapeDataString(user[1]) : "", required: true, TimeSpan.FromSeconds(60))
                .ConfigureAwait(false);
            var broker = new RabbitMqBroker(
                RabbitMqBrokerMode.Container, amqp, management,
                $"container {options.ContainerImage} ({probe}); before: {string.Join("; ", tried)}",
                isShared, container: container, startupTime: sw.Elapsed);
            Register(broker);
            return broker;
        }
        catch
        {
            await container.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    private static async Task<(RabbitMqBroker? Broker, string Failure)> TryStartPrivateAsync(
        RabbitMqBrokerOptions options, bool isShared, string before)
    {
        string scriptPath;
        if (options.ScriptPath is not null)
        {
            scriptPath = options.ScriptPath;
        }
        else
        {
            var root = RepositoryRoot.TryFind();
            if (root is null)
            {
                return (null, $"no {RepositoryRoot.SolutionFile} above {AppContext.BaseDirectory}, so no ops/broker/private-rabbitmq");
            }

            scriptPath = PrivateBrokerScript.DefaultPath(root);
        }

        if (!File.Exists(scriptPath))
        {
            return (null, $"{scriptPath} does not exist");
        }

        var bin = options.RabbitMqBinDirectory ?? "/usr/lib/rabbitmq/bin";
        if (!File.Exists(Path.Combine(bin, "rabbitmq-server")))
        {
            return (null, $"rabbitmq-server is not installed ({Path.Combine(bin, "rabbitmq-server")} does not exist)");
        }

        var script = new PrivateBrokerScript(scriptPath, options.RabbitMqBinDirectory);
        var temp = Path.GetTempPath().TrimEnd('/');

        // Best effort: brokers of earlier runs whose test process died (and whose watchdog did not
        // get to stop them), or that are older than 12 hours.
        try
        {
            await script.RunAsync(TimeSpan.FromSeconds(60), "cleanup-stale", "--root", temp, "--older-than-hours", "12").ConfigureAwait(false);
        }
#pragma warning disable CA1031 // cleanup of other runs' leftovers must never fail this run
        catch (Exception)
#pragma warning restore CA1031
        {
        }

        // A start can lose a race for its ports to another test process starting a broker at the same moment
        // (dotnet test runs the assemblies in parallel); a second attempt picks new ports.
        var failures = new List<string>();
        for (var attempt = 1; attempt <= PrivateStartAttempts; attempt++)
        {
            var (broker, failure) = await StartPrivateOnceAsync(options, isShared, before, script, scriptPath, temp).ConfigureAwait(false);
            if (broker is not null)
            {
                return (broker, "");
            }
            failures.Add($"attempt {attempt}: {failure}");
        }
        return (null, string.Join(Environment.NewLine, failures));
    }

    private const int PrivateStartAttempts = 3;

    private static async Task<(RabbitMqBroker? Broker, string Failure)> StartPrivateOnceAsync(
        RabbitMqBrokerOptions options, bool isShared, string before, PrivateBrokerScript script, string scriptPath, string temp)
    {
        var dir = Path.Combine(temp, string.Create(CultureInfo.InvariantCulture,
            $"nfsvol-rabbitmq-{Environment.ProcessId}-{Guid.NewGuid().ToString("N")[..8]}"));
        var args = new List<string> { "start", dir, "--owner-pid", Environment.ProcessId.ToString(CultureInfo.InvariantCulture), "--ephemeral" };
        if (options.ConsumerTimeout is { } timeout)
        {
            args.Add("--consumer-timeout-ms");
            args.Add(((long)timeout.TotalMilliseconds).ToString(CultureInfo.InvariantCulture));
        }

        var sw = Stopwatch.StartNew();
        PrivateBrokerScript.Result result;
        try
        {
            result = await script.RunAsync(options.StartTimeout, [.. args]).ConfigureAwait(false);
        }
        catch (TimeoutException e)
        {
            await script.RunAsync(TimeSpan.FromSeconds(60), "stop", "--fast", dir).ConfigureAwait(false);
            return (null, e.Message);
        }

        if (!result.Succeeded)
        {
            return (null, $"{scriptPath} start failed (exit {result.ExitCode}):{Environment.NewLine}{result.StandardError.Trim()}");
        }

        var env = PrivateBrokerScript.ReadEnvFile(Path.Combine(dir, "broker.env"));
        var amqp = new Uri(env["RABBITMQ_URL"]);
        // The script always enables the management plugin: a private broker without it is a failed start.
        ManagementApi management;
        try
        {
            management = (await ConnectManagementAsync(new Uri(env["RABBITMQ_MANAGEMENT_URL"]), "guest", "guest", required: true,
                TimeSpan.FromSeconds(60)).ConfigureAwait(false))!;
        }
        catch (InvalidOperationException e)
        {
            await script.RunAsync(TimeSpan.FromSeconds(60), "stop", "--fast", dir).ConfigureAwait(false);
            return (null, e.Message);
        }
        var broker = new RabbitMqBroker(
            RabbitMqBrokerMode.Private, amqp, management,
            $"private rabbitmq-server {env.GetValueOrDefault("RABBITMQ_NODENAME")} in {dir}" +
            (options.ConsumerTimeout is { } t ? $" (consumer_timeout {t.TotalMilliseconds:0} ms)" : "") +
            $"; before: {before}",
            isShared, script, env, dir, startupTime: sw.Elapsed, startupLog: result.StandardError.Trim());
        Register(broker);
        return (broker, "");
    }

    /// <summary>Probes the management API until it answers or <paramref name="patience"/> (default: one 5 s
    /// probe) is spent: a loaded machine can take a while to answer the first request.</summary>
    private static async Task<ManagementApi?> ConnectManagementAsync(Uri uri, string user, string password, bool required, TimeSpan patience = default)
    {
        var api = new ManagementApi(uri, user, password);
        var deadline = Stopwatch.StartNew();
        var (answers, detail) = await api.ProbeAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
        while (!answers && deadline.Elapsed < patience)
        {
            await Task.Delay(250).ConfigureAwait(false);
            (answers, detail) = await api.ProbeAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
        }
        if (answers)
        {
            return api;
        }

        api.Dispose();
        return required ? throw new InvalidOperationException($"the management API does not answer: {detail}") : null;
    }

    private static void Register(RabbitMqBroker broker)
    {
        Running[broker] = 0;
        if (Interlocked.Exchange(ref _exitHookInstalled, 1) == 0)
        {
            AppDomain.CurrentDomain.ProcessExit += (_, _) => StopAllAtExit();
        }
    }

    private static void StopAllAtExit()
    {
        var stops = Running.Keys.Select(b => Task.Run(() => b.StopCoreAsync(fast: true))).ToArray();
        try
        {
            Task.WaitAll(stops, TimeSpan.FromSeconds(30));
        }
#pragma warning disable CA1031 // at exit there is nobody left to tell; the watchdog and the next run's cleanup remain
        catch (Exception)
#pragma warning restore CA1031
        {
        }
    }

    /// <summary>Opens and closes one connection to the default vhost.</summary>
    public async Task CheckConnectsAsync(CancellationToken cancellationToken = default)
    {
        try
        {
            var factory = new ConnectionFactory { Uri = AmqpUri };
            var connection = await factory.CreateConnectionAsync("nfsvol-test-probe", cancellationToken).ConfigureAwait(false);
            await using (connection.ConfigureAwait(false))
            {
                await connection.CloseAsync(cancellationToken).ConfigureAwait(false);
            }
        }
        catch (BrokerUnreachableException e)
        {
            throw new InvalidOperationException($"{Description}: cannot connect: {e.InnerException?.Message ?? e.Message}", e);
        }
    }

    /// <summary>A fresh vhost (<c>prefix-xxxxxxxx</c>) on which the broker's user may do anything.</summary>
    public async Task<VirtualHost> CreateVirtualHostAsync(string? prefix = null, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(IsStopped, this);
        var name = $"{(string.IsNullOrEmpty(prefix) ? "test" : prefix)}-{Guid.NewGuid().ToString("N")[..8]}";
        if (_management is not null)
        {
            await _management.CreateVirtualHostAsync(name, cancellationToken).ConfigureAwait(false);
        }
        else if (_script is not null && DataDirectory is not null)
        {
            await CtlAsync(cancellationToken, "add_vhost", name).ConfigureAwait(false);
            await CtlAsync(cancellationToken, "set_permissions", "-p", name, UserName, ".*", ".*", ".*").ConfigureAwait(false);
        }
        else
        {
            throw new NotSupportedException($"{Description}: creating a vhost needs the management API");
        }

        return new VirtualHost(this, name, UriFor(name));
    }

    /// <summary>The AMQP URI of <paramref name="vhost"/> on this broker, with credentials.</summary>
    public Uri UriFor(string vhost)
    {
        ArgumentNullException.ThrowIfNull(vhost);
        return new Uri($"{AmqpUri.Scheme}://{AmqpUri.UserInfo}@{AmqpUri.Host}:{AmqpUri.Port}/{Uri.EscapeDataString(vhost)}");
    }

    internal async Task DeleteVirtualHostAsync(string vhost, CancellationToken cancellationToken)
    {
        if (IsStopped)
        {
            return;
        }

        if (_management is not null)
        {
            await _management.DeleteVirtualHostAsync(vhost, cancellationToken).ConfigureAwait(false);
        }
        else if (_script is not null)
        {
            await CtlAsync(cancellationToken, "delete_vhost", vhost).ConfigureAwait(false);
        }
    }

    /// <summary>The queues of a vhost with their arguments and consumers (management API; counts lag up to 1 s on the private broker).</summary>
    public Task<IReadOnlyList<QueueInfo>> ListQueuesAsync(string vhost, CancellationToken cancellationToken = default) =>
        RequireManagement().ListQueuesAsync(vhost, cancellationToken);

    /// <summary>The consumers of a vhost, with single-active-consumer state (<c>active</c>, <c>activity_status</c>).</summary>
    public Task<IReadOnlyList<ConsumerInfo>> ListConsumersAsync(string vhost, CancellationToken cancellationToken = default) =>
        RequireManagement().ListConsumersAsync(vhost, cancellationToken);

    /// <summary>Force-closes the connections on <paramref name="vhost"/> with this client-provided name; how many.</summary>
    public Task<int> CloseConnectionsAsync(string vhost, string clientProvidedName, CancellationToken cancellationToken = default) =>
        RequireManagement().CloseConnectionsAsync(vhost, clientProvidedName, cancellationToken);

    /// <summary>
    /// Messages ready for delivery in a queue, exactly and at once (a passive declare over AMQP; the
    /// management API's counts lag). Unacknowledged messages are not counted.
    /// </summary>
    public async Task<int> MessageCountAsync(string vhost, string queue, CancellationToken cancellationToken = default)
    {
        var factory = new ConnectionFactory { Uri = UriFor(vhost) };
        var connection = await factory.CreateConnectionAsync("nfsvol-test-count", cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            var channel = await connection.CreateChannelAsync(cancellationToken: cancellationToken).ConfigureAwait(false);
            await using (channel.ConfigureAwait(false))
            {
                var ok = await channel.QueueDeclarePassiveAsync(queue, cancellationToken).ConfigureAwait(false);
                return checked((int)ok.MessageCount);
            }
        }
    }

    private ManagementApi RequireManagement() =>
        _management ?? throw new NotSupportedException($"{Description}: listing queues needs the management API");

    private async Task<string> CtlAsync(CancellationToken cancellationToken, params string[] args)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var result = await _script!.RunAsync(TimeSpan.FromSeconds(60), ["ctl", DataDirectory!, .. args]).ConfigureAwait(false);
        return result.Succeeded
            ? result.StandardOutput
            : throw new InvalidOperationException($"rabbitmqctl {string.Join(' ', args)}: {result.StandardError.Trim()}");
    }

    /// <summary>
    /// Stops a broker this code started (private: the script's <c>stop</c>; <paramref name="fast"/>:
    /// SIGTERM instead of rabbitmqctl stop, ~3 s instead of ~8 s; container: disposed). The shared
    /// broker cannot be stopped this way: the process exit does it.
    /// </summary>
    public Task StopAsync(bool fast = true) =>
        _isShared ? throw new InvalidOperationException("the shared broker stops when the test process exits") : StopCoreAsync(fast);

    private async Task StopCoreAsync(bool fast)
    {
        if (Interlocked.Exchange(ref _stopped, 1) != 0)
        {
            return;
        }

        Running.TryRemove(this, out _);
        _management?.Dispose();
        if (_container is not null)
        {
            await _container.DisposeAsync().ConfigureAwait(false);
        }

        if (_script is not null && DataDirectory is not null)
        {
            // The script removes the directory itself: should the test host be killed while this
            // runs (at process exit), the script still finishes the job.
            string[] args = fast ? ["stop", "--fast", "--remove", DataDirectory] : ["stop", "--remove", DataDirectory];
            var result = await _script.RunAsync(TimeSpan.FromSeconds(90), args).ConfigureAwait(false);
            if (!result.Succeeded)
            {
                throw new InvalidOperationException($"{_script.Path} stop {DataDirectory}: {result.StandardError.Trim()}");
            }
        }
    }

    /// <summary>
    /// Private mode, not the shared broker: stops the broker (<paramref name="kill"/>: <c>kill -9</c> of its
    /// beam.smp, as a crash would) and starts it again on the same ports with the same state (queues, messages);
    /// returns once it accepts work again. <see cref="BrokerProcessId"/> is the pid of the first start.
    /// </summary>
    public async Task RestartAsync(bool kill = false)
    {
        if (_isShared || _script is null || DataDirectory is null)
        {
            throw new InvalidOperationException($"{Description}: only a dedicated private broker can be restarted");
        }
        string[] args = kill ? ["restart", "--kill", DataDirectory] : ["restart", DataDirectory];
        var result = await _script.RunAsync(TimeSpan.FromMinutes(2), args).ConfigureAwait(false);
        if (!result.Succeeded)
        {
            throw new InvalidOperationException($"{_script.Path} {string.Join(' ', args)} failed (exit {result.ExitCode}): {result.StandardError.Trim()}");
        }
    }

    /// <summary>Stops a dedicated or acquired broker; does nothing to the shared one.</summary>
    public async ValueTask DisposeAsync()
    {
        if (!_isShared)
        {
            await StopCoreAsync(fast: true).ConfigureAwait(false);
        }
    }

    public override string ToString() => $"{Mode} broker {Redact(AmqpUri.ToString())}";

    private static string Redact(string url) => NfsVolumeWorker.Broker.BrokerAddress.Redact(url);

    private static int? ParseInt(string? s) =>
        int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out var v) ? v : null;
}
