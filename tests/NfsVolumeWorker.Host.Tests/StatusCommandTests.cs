using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using NfsVolumeWorker.Cli;
using NfsVolumeWorker.Testing;
using Xunit.Abstractions;

namespace NfsVolumeWorker.Host.Tests;

/// <summary><c>nfsvol status</c> against a worker process: the fleet from the management API, the instance's own
/// status from the URL it advertises; as a table in a real terminal (tmux) and as JSON.</summary>
public sealed class StatusCommandTests(ITestOutputHelper output) : IAsyncLifetime
{
    private const string Instance = "status-a";
    private const int Partitions = 16;
    private readonly string _share = Directory.CreateTempSubdirectory("nfsvol-status-").FullName;
    private readonly string _tmuxSocket = $"nfsvol-status-{Environment.ProcessId}";
    private WorkerProcess? _worker;

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        RequiredToolRun("tmux", "-L", _tmuxSocket, "kill-server");
        if (_worker is not null)
        {
            output.WriteLine(_worker.Output);
            await _worker.DisposeAsync();
        }
        Directory.Delete(_share, recursive: true);
    }

    [Fact]
    public async Task nfsvol_status_shows_the_instance_its_partitions_and_its_failed_command_in_a_terminal_and_as_json()
    {
        var tmux = RequiredTool.Find("tmux", "tmux");
        var broker = await RabbitMqBroker.SharedAsync();
        Assert.True(broker.ManagementUri is not null, "the test broker has no management API");
        await using var vhost = await broker.CreateVirtualHostAsync("status");
        var port = FreePort();
        _worker = WorkerProcess.Start(Instance, vhost.AmqpUri, broker.ManagementUri, _share,
            $"--Http:Urls=http://127.0.0.1:{port}", "--Balancing:Interval=00:00:01");
        string[] args = ["status", "--broker", vhost.AmqpUri.ToString(), "--management", broker.ManagementUri.ToString()];

        // The instance holds every partition and its status answers.
        var fleet = await WaitAsync(async () => await StatusJsonAsync(args),
            f => f?.Instances.SingleOrDefault(i => i.Instance == Instance) is { Status: not null } i && i.Active.Count == Partitions, TimeSpan.FromSeconds(90));

        // One failed command, sent with nfsvol.
        var volume = Guid.NewGuid();
        var sent = await NfsvolAsync(vhost.AmqpUri, "send", "revert-to-snapshot", "--volume", volume.ToString(), "--snapshot", Guid.NewGuid().ToString(), "--wait", "--timeout", "60");
        Assert.True(sent.Exit == 3, sent.Out + sent.Err);
        var code = JsonlessCode(sent.Err);

        // --json: parsed and checked.
        var json = await NfsvolAsync(vhost.AmqpUri, [.. args, "--json"]);
        Assert.True(json.Exit == 0, json.Out + json.Err);
        using var doc = JsonDocument.Parse(json.Out);
        var root = doc.RootElement;
        Assert.Equal(Partitions, root.GetProperty("partitionCount").GetInt32());
        Assert.Empty(root.GetProperty("unowned").EnumerateArray());
        var instance = Assert.Single(root.GetProperty("instances").EnumerateArray());
        Assert.Equal(Instance, instance.GetProperty("instance").GetString());
        Assert.Equal(Enumerable.Range(0, Partitions), instance.GetProperty("active").EnumerateArray().Select(p => p.GetInt32()));
        Assert.Equal($"http://127.0.0.1:{port}", instance.GetProperty("statusUrl").GetString());
        Assert.Equal(JsonValueKind.Null, instance.GetProperty("error").ValueKind);
        var status = instance.GetProperty("status");
        Assert.Equal(Instance, status.GetProperty("instance").GetString());
        Assert.Contains(status.GetProperty("failures").EnumerateArray(),
            f => f.GetProperty("volumeId").GetGuid() == volume && f.GetProperty("errorCode").GetString() == code);
        Assert.True(Assert.Single(status.GetProperty("shares").EnumerateArray()).GetProperty("available").GetBoolean());

        // The table, in a real terminal.
        var nfsvol = NfsvolDll;
        var command = string.Join(' ', new[] { "dotnet", nfsvol }.Concat(args).Select(Quote)) + "; sleep 300";
        Run(tmux, "-L", _tmuxSocket, "new-session", "-d", "-s", "status", "-x", "180", "-y", "40", command);
        var screen = await WaitAsync(() => Task.FromResult(Run(tmux, "-L", _tmuxSocket, "capture-pane", "-p", "-t", "status")),
            s => s.Contains("Failed in the last hour", StringComparison.Ordinal), TimeSpan.FromSeconds(60));
        output.WriteLine(screen);
        var capture = Path.Combine(AppContext.BaseDirectory, "TestResults", "nfsvol-status.txt");
        Directory.CreateDirectory(Path.GetDirectoryName(capture)!);
        File.WriteAllText(capture, screen);
        var row = screen.Split('\n').FirstOrDefault(l => l.Contains(Instance, StringComparison.Ordinal) && l.Contains("00 01", StringComparison.Ordinal));
        Assert.True(row is not null, $"no table row for {Instance} with its partitions:\n{screen}");
        Assert.Contains(string.Join(' ', Enumerable.Range(0, Partitions).Select(p => p.ToString("D2", CultureInfo.InvariantCulture))), row, StringComparison.Ordinal);
        Assert.Contains($"http://127.0.0.1:{port}", row, StringComparison.Ordinal);
        Assert.Contains(code, screen, StringComparison.Ordinal);
        Assert.Contains("16 partitions", screen, StringComparison.Ordinal);
    }

    [Fact]
    public async Task nfsvol_status_without_a_management_api_or_a_worker_is_a_usage_error()
    {
        var run = await NfsvolAsync(new Uri("amqp://guest:guest@127.0.0.1:1/"), "status", "--management", "");
        Assert.Equal(2, run.Exit);
        Assert.Contains("--worker", run.Err, StringComparison.Ordinal);
    }

    /// <summary>The error code from <c>nfsvol: Code: message</c> on stderr.</summary>
    private static string JsonlessCode(string stderr) =>
        stderr.Split('\n').First(l => l.StartsWith("nfsvol: ", StringComparison.Ordinal))["nfsvol: ".Length..].Split(':')[0];

    private async Task<FleetReport?> StatusJsonAsync(string[] args)
    {
        var run = await NfsvolAsync(null, [.. args, "--json"]);
        return run.Exit == 0 ? JsonSerializer.Deserialize<FleetReport>(run.Out, Status.StatusReport.Json) : null;
    }

    private static async Task<(int Exit, string Out, string Err)> NfsvolAsync(Uri? broker, params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var env = new CliEnvironment(TextWriter.Synchronized(stdout), TextWriter.Synchronized(stderr),
            name => name == "NFSVOL_BROKER_URL" ? broker?.ToString() : null, IsTerminal: false);
        var exit = await NfsVolumeWorker.Cli.Program.RunAsync(args, env, CancellationToken.None);
        return (exit, stdout.ToString(), stderr.ToString());
    }

    private static async Task<T> WaitAsync<T>(Func<Task<T>> probe, Func<T, bool> done, TimeSpan timeout)
    {
        var sw = Stopwatch.StartNew();
        while (true)
        {
            var value = await probe();
            if (done(value))
            {
                return value;
            }
            Assert.True(sw.Elapsed < timeout, $"not within {timeout.TotalSeconds} s; last: {(value is string s ? s : JsonSerializer.Serialize(value))}");
            await Task.Delay(500);
        }
    }

    /// <summary>nfsvol as built with the tests (its project is referenced).</summary>
    private static string NfsvolDll
    {
        get
        {
            var configuration = AppContext.BaseDirectory.Contains("/Release/", StringComparison.Ordinal) ? "Release" : "Debug";
            var path = Path.Combine(RepositoryRoot.Find(), "src", "NfsVolumeWorker.Cli", "bin", configuration, "net10.0", "nfsvol.dll");
            return File.Exists(path) ? path : throw new FileNotFoundException($"build nfsvol first: {path}");
        }
    }

    private static string Quote(string arg) => "'" + arg.Replace("'", "'\\''", StringComparison.Ordinal) + "'";

    private static string Run(string file, params string[] args)
    {
        var (code, stdout, stderr) = RequiredTool.Run(file, args);
        Assert.True(code == 0, $"{file} {string.Join(' ', args)} exited {code}: {stdout}{stderr}");
        return stdout;
    }

    private static void RequiredToolRun(string file, params string[] args)
    {
        try
        {
            RequiredTool.Run(file, args);
        }
        catch (System.ComponentModel.Win32Exception)
        {
            // tmux is not installed: nothing to stop
        }
    }

    private static int FreePort()
    {
        using var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        return ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
    }
}
