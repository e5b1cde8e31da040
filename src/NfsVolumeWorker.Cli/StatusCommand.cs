using NfsVolumeWorker.Broker;
using System.CommandLine;
using System.Globalization;
using System.Net.Http.Json;
using NfsVolumeWorker.Balancing;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Status;
using Spectre.Console;

namespace NfsVolumeWorker.Cli;

/// <summary>
/// <c>nfsvol status</c>: the fleet. Which instances hold which partitions comes from RabbitMQ's management API,
/// read by the worker's own <see cref="ManagementClient"/>; each instance's <c>/status.json</c> is found at the URL it
/// advertises in its partition connection (client property <c>nfsvol_status_url</c>) or given with <c>--worker</c>.
/// </summary>
internal static class StatusCommand
{
    public const string ManagementVariable = "NFSVOL_MANAGEMENT_URL";

    public static Command Build(GlobalOptions globals, CliEnvironment environment)
    {
        var broker = new Option<string?>("--broker")
        {
            Description = $"The broker's AMQP URL: its credentials and vhost are used for the management API. Default: {Wire.BrokerVariable}, then RABBITMQ_URL in .local/broker/broker.env.",
            HelpName = "url",
        };
        var management = new Option<string?>("--management")
        {
            Description = $"RabbitMQ's management API (http://host:15672/). Default: {ManagementVariable}, then RABBITMQ_MANAGEMENT_URL in .local/broker/broker.env. "
                + "Without one, only the --worker instances are shown.",
            HelpName = "url",
        };
        var workers = new Option<string[]>("--worker")
        {
            Description = "An instance's HTTP base URL (its Http:Urls, e.g. http://10.0.0.5:9464); repeat for several. Added to those the instances advertise.",
            HelpName = "url",
            Arity = ArgumentArity.ZeroOrMore,
            AllowMultipleArgumentsPerToken = false,
        };
        var partitions = new Option<int?>("--partitions")
        {
            Description = $"Number of partitions (Worker:PartitionCount). Default: what the instances report, else {PartitionKey.DefaultPartitionCount}.",
            HelpName = "n",
        };
        var timeout = new Option<int>("--timeout") { Description = "Seconds to wait for each HTTP request. Default 5.", HelpName = "seconds", DefaultValueFactory = _ => 5 };
        var command = new Command("status", "The fleet: each instance with the partitions it holds (from RabbitMQ's management API), and from each instance's "
            + "/status.json its running operations, failed commands of the last hour, inbox and shares. --json: the same as one JSON object.")
        {
            broker, management, workers, partitions, timeout,
        };
        command.SetAction(async (parse, ct) =>
        {
            var json = parse.GetValue(globals.Json);
            try
            {
                var fleet = await ReadAsync(parse.GetValue(broker), parse.GetValue(management), parse.GetValue(workers) ?? [], parse.GetValue(partitions),
                    TimeSpan.FromSeconds(Math.Max(1, parse.GetValue(timeout))), environment, ct).ConfigureAwait(false);
                if (json)
                {
                    Output.WriteJson(environment.Out, fleet);
                }
                else
                {
                    Render(CreateConsole(environment), fleet);
                }
                return fleet.ManagementError is not null && fleet.Instances.All(i => i.Status is null) ? ExitCodes.Failed : ExitCodes.Ok;
            }
            catch (CliUsageException e)
            {
                return Output.Fail(environment, json, ErrorCodes.Usage, e.Message);
            }
        });
        return command;
    }

    internal static async Task<FleetReport> ReadAsync(string? brokerOption, string? managementOption, IReadOnlyList<string> workerUrls, int? partitionOption,
        TimeSpan timeout, CliEnvironment environment, CancellationToken ct)
    {
        var managementUrl = ResolveManagement(managementOption, environment);
        if (managementUrl is null && workerUrls.Count == 0)
        {
            throw new CliUsageException($"Give the management API (--management, {ManagementVariable}) or at least one --worker URL.");
        }
        foreach (var w in workerUrls)
        {
            if (!Uri.TryCreate(w, UriKind.Absolute, out var u) || u.Scheme is not ("http" or "https"))
            {
                throw new CliUsageException($"--worker must be an http(s) URL; got '{w}'.");
            }
        }

        ConsumerSnapshot? snapshot = null;
        string? managementError = null;
        if (managementUrl is not null)
        {
            var brokerAddress = Wire.ResolveBroker(brokerOption, environment);
            try
            {
                using var client = new ManagementClient(managementUrl, brokerAddress, timeout);
                // Every partition queue there is; the count the instances report narrows it below.
                snapshot = await client.GetConsumersAsync(MaxPartitions, ct).ConfigureAwait(false);
            }
            catch (Exception e) when (e is HttpRequestException or TaskCanceledException or System.Text.Json.JsonException)
            {
                managementError = $"{BrokerAddress.Redact(managementUrl.ToString())}: {e.Message}";
            }
        }

        // Each instance's status, from the URL it advertises and from --worker.
        var urls = workerUrls.Select(u => u.TrimEnd('/')).Concat(snapshot?.StatusUrls.Values.Select(u => u.TrimEnd('/')) ?? [])
            .Distinct(StringComparer.Ordinal).ToList();
        using var http = new HttpClient { Timeout = timeout };
        var reads = await Task.WhenAll(urls.Select(u => ReadStatusAsync(http, u, ct))).ConfigureAwait(false);

        var partitionCount = partitionOption ?? reads.Select(r => r.Status?.PartitionCount).Max() ?? PartitionKey.DefaultPartitionCount;
        var instances = new List<InstanceView>();
        if (snapshot is not null)
        {
            snapshot = new ConsumerSnapshot(partitionCount, snapshot.Consumers.Where(c => c.Partition < partitionCount).ToList()) { StatusUrls = snapshot.StatusUrls };
            foreach (var name in snapshot.Instances)
            {
                var url = snapshot.StatusUrls.GetValueOrDefault(name)?.TrimEnd('/');
                var read = reads.FirstOrDefault(r => r.Status?.Instance == name) ?? reads.FirstOrDefault(r => r.Url == url);
                instances.Add(new InstanceView(name, snapshot.ActiveOf(name), snapshot.WaitingOf(name), read?.Url ?? url, read?.Status,
                    read?.Error ?? (url is null ? "no status URL advertised (Http:Urls with port 0, or an older worker): give it with --worker" : null)));
            }
        }
        foreach (var read in reads.Where(r => instances.All(i => i.StatusUrl != r.Url && (r.Status is null || i.Instance != r.Status.Instance))))
        {
            // Known only through --worker (no management API, or not consuming any partition queue).
            var s = read.Status;
            instances.Add(new InstanceView(s?.Instance ?? read.Url, s?.Partitions.Where(p => p.Active == true).Select(p => p.Partition).ToList() ?? [],
                s?.Partitions.Where(p => p.Active == false).Select(p => p.Partition).ToList() ?? [], read.Url, s, read.Error));
        }
        var unowned = snapshot?.Unowned ?? [];
        return new FleetReport(DateTimeOffset.UtcNow, managementUrl is null ? null : BrokerAddress.Redact(managementUrl.ToString()), managementError, partitionCount,
            instances.OrderBy(i => i.Instance, StringComparer.Ordinal).ToList(), snapshot is null ? null : unowned);
    }

    private const int MaxPartitions = 1024;

    private static Uri? ResolveManagement(string? option, CliEnvironment environment)
    {
        var url = option;
        if (string.IsNullOrWhiteSpace(url))
        {
            url = environment.GetEnvironmentVariable(ManagementVariable);
        }
        if (string.IsNullOrWhiteSpace(url))
        {
            for (var dir = new DirectoryInfo(Directory.GetCurrentDirectory()); dir is not null && string.IsNullOrWhiteSpace(url); dir = dir.Parent)
            {
                var env = Path.Combine(dir.FullName, ".local", "broker", "broker.env");
                if (File.Exists(env))
                {
                    url = File.ReadLines(env).Where(l => l.StartsWith("RABBITMQ_MANAGEMENT_URL=", StringComparison.Ordinal))
                        .Select(l => l["RABBITMQ_MANAGEMENT_URL=".Length..].Trim('"', '\'')).FirstOrDefault();
                }
            }
        }
        if (string.IsNullOrWhiteSpace(url))
        {
            return null;
        }
        return Uri.TryCreate(url, UriKind.Absolute, out var uri) && uri.Scheme is "http" or "https"
            ? uri
            : throw new CliUsageException($"The management URL must be http:// or https://; got '{BrokerAddress.Redact(url)}'.");
    }

    private static async Task<StatusRead> ReadStatusAsync(HttpClient http, string url, CancellationToken ct)
    {
        try
        {
            var status = await http.GetFromJsonAsync<StatusReport>(new Uri(url + "/status.json"), StatusReport.Json, ct).ConfigureAwait(false);
            return new StatusRead(url, status, status is null ? "empty answer" : null);
        }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException or System.Text.Json.JsonException or NotSupportedException)
        {
            return new StatusRead(url, null, e is TaskCanceledException ? "timed out" : e.Message);
        }
    }

    private static IAnsiConsole CreateConsole(CliEnvironment environment)
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(environment.Out),
            Ansi = environment.IsTerminal ? AnsiSupport.Detect : AnsiSupport.No,
            ColorSystem = environment.IsTerminal ? ColorSystemSupport.Detect : ColorSystemSupport.NoColors,
            Interactive = InteractionSupport.No,
        });
        if (!environment.IsTerminal)
        {
            console.Profile.Width = 200;
        }
        return console;
    }

    internal static void Render(IAnsiConsole console, FleetReport fleet)
    {
        var source = fleet.Management is null ? "--worker URLs only (no management API)" : $"management API {fleet.Management}";
        console.MarkupLine(Markup.Escape($"nfsvol status: {fleet.Instances.Count} instance(s), {fleet.PartitionCount} partitions, from {source}, at {fleet.ReadAt:yyyy-MM-dd HH:mm:ss} UTC"));
        if (fleet.ManagementError is { } error)
        {
            console.MarkupLine($"[red]management API: {Markup.Escape(error)}[/]");
        }
        var table = new Table().Border(TableBorder.Rounded).AddColumns("Instance", "Partitions (active)", "Waiting", "Running", "Failed 1h", "Inbox", "Shares free", "Oslo", "Status");
        foreach (var i in fleet.Instances)
        {
            var s = i.Status;
            table.AddRow(
                new Text(i.Instance),
                new Text(i.Active.Count == 0 ? "-" : string.Join(" ", i.Active.Select(p => p.ToString("D2", CultureInfo.InvariantCulture)))),
                new Text(i.Waiting.Count == 0 ? "-" : Numbers(i.Waiting)),
                new Text(s is null ? "?" : s.Running.Count.ToString(CultureInfo.InvariantCulture)),
                s is null ? new Text("?") : s.Failures.Count > 0 ? new Markup($"[red]{s.Failures.Count}[/]") : new Text("0"),
                new Text(s is null ? "?" : string.Create(CultureInfo.InvariantCulture, $"{s.Shares.Sum(x => x.InboxCommands ?? 0)} cmd")),
                new Text(s is null ? "?" : string.Join(", ", s.Shares.Select(x => x.Available ? Bytes(x.FreeBytes) : "unavailable"))),
                new Text(s is null ? "?" : !s.Oslo.Enabled ? "off" : s.Oslo.Serving ? "serving" : "not serving"),
                i.Error is { } e ? new Markup($"[red]{Markup.Escape(e)}[/]") : new Text(i.StatusUrl ?? "-"));
        }
        console.Write(table);
        if (fleet.Unowned is { Count: > 0 } unowned)
        {
            console.MarkupLine($"[red]partitions without an active consumer: {Markup.Escape(string.Join(" ", unowned.Select(p => p.ToString("D2", CultureInfo.InvariantCulture))))}[/]");
        }
        var running = fleet.Instances.Where(i => i.Status is not null).SelectMany(i => i.Status!.Running.Select(r => (i.Instance, r))).ToList();
        if (running.Count > 0)
        {
            var ops = new Table().Border(TableBorder.Simple).Title("Running").AddColumns("Instance", "Command", "Volume", "Progress", "Elapsed", "Left");
            foreach (var (instance, r) in running)
            {
                ops.AddRow(instance, r.CommandType, r.VolumeId.ToString(),
                    r.Percent is { } p ? string.Create(CultureInfo.InvariantCulture, $"{Bar(p)} {p,5:0.0} %") : "-",
                    StatusPage.Duration(r.ElapsedSeconds), r.SecondsLeft is { } left ? StatusPage.Duration(left) : "-");
            }
            console.Write(ops);
        }
        var failures = fleet.Instances.Where(i => i.Status is not null).SelectMany(i => i.Status!.Failures.Select(f => (i.Instance, f)))
            .OrderByDescending(x => x.f.At).Take(10).ToList();
        if (failures.Count > 0)
        {
            var failed = new Table().Border(TableBorder.Simple).Title("Failed in the last hour (newest 10)").AddColumns("Time", "Instance", "Command", "Code", "Volume", "Message");
            foreach (var (instance, f) in failures)
            {
                var message = f.Message.Length > 60 ? f.Message[..57] + "..." : f.Message;
                failed.AddRow(new Text(f.At.ToString("HH:mm:ss", CultureInfo.InvariantCulture)), new Text(instance), new Text(f.CommandType),
                    new Markup($"[red]{Markup.Escape(f.ErrorCode)}[/]"), new Text(f.VolumeId.ToString()), new Text(message));
            }
            console.Write(failed);
        }
    }

    private static string Bar(double percent)
    {
        var filled = (int)Math.Round(Math.Clamp(percent, 0, 100) / 10);
        return new string('#', filled) + new string('.', 10 - filled);
    }

    private static string Numbers(IReadOnlyList<int> partitions) => string.Join(" ", partitions.Select(p => p.ToString("D2", CultureInfo.InvariantCulture)));

    private static string Bytes(long? bytes) => bytes is { } b ? SizeParser.Format(b) : "?";

    private sealed record StatusRead(string Url, StatusReport? Status, string? Error);
}

/// <summary><c>nfsvol status --json</c>: the fleet.</summary>
/// <param name="Management">The management API read (redacted), or null when none was given.</param>
/// <param name="ManagementError">Why it could not be read.</param>
/// <param name="Unowned">Partitions without an active consumer; null without the management API.</param>
public sealed record FleetReport(DateTimeOffset ReadAt, string? Management, string? ManagementError, int PartitionCount,
    IReadOnlyList<InstanceView> Instances, IReadOnlyList<int>? Unowned);

/// <summary>One instance: its partitions (management API), and its own <c>/status.json</c> when it could be read.</summary>
/// <param name="Error">Why its status could not be read.</param>
public sealed record InstanceView(string Instance, IReadOnlyList<int> Active, IReadOnlyList<int> Waiting, string? StatusUrl, StatusReport? Status, string? Error);
