using NfsVolumeWorker.Broker;
using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using NfsVolumeWorker.Contracts;
using RabbitMQ.Client.Exceptions;
using Spectre.Console;

namespace NfsVolumeWorker.Cli;

/// <summary><c>nfsvol send</c> and <c>nfsvol watch</c>: native commands and events through the broker.</summary>
internal static class BrokerCommands
{
    private static Option<string?> BrokerOption() => new("--broker")
    {
        Description = $"The broker's AMQP URL (amqp://user:password@host:5672/vhost). Default: {Wire.BrokerVariable}, then RABBITMQ_URL in .local/broker/broker.env (ops/run-worker's broker).",
        HelpName = "url",
    };

    public static Command Send(GlobalOptions globals, CliEnvironment environment)
    {
        var type = new Argument<string?>("command-type")
        {
            Description = "CreateVolume, DeleteVolume, CreateSnapshot, DeleteSnapshot, CreateVolumeFromSnapshot, CloneVolume, RevertToSnapshot or ExtendVolume "
                + "(also kebab-case: create-snapshot). Or the whole command as JSON with a \"type\" field (then --json is the output format, e.g. nfsvol send --json '{\"type\":...}').",
            Arity = ArgumentArity.ZeroOrOne,
        };
        var volume = new Option<string?>("--volume") { Description = "volumeId: the volume (for clones: the source). The partition key.", HelpName = "id" };
        var snapshot = new Option<string?>("--snapshot") { Description = "snapshotId.", HelpName = "id" };
        var newVolume = new Option<string?>("--new-volume") { Description = "newVolumeId (clones).", HelpName = "id" };
        var size = new Option<string?>("--size") { Description = "sizeBytes (CreateVolume) or newSizeBytes (ExtendVolume, clones): bytes or 10G.", HelpName = "size" };
        var format = new Option<string?>("--format") { Description = "format (CreateVolume) or targetFormat (clones): raw or qcow2.", HelpName = "raw|qcow2" };
        format.AcceptOnlyFromAmong("raw", "qcow2");
        var targetShare = new Option<string?>("--target-share") { Description = "targetShare (clones).", HelpName = "host:/export" };
        var commandId = new Option<string?>("--command-id") { Description = "The command's id (default: a new UUID). Sending the same id again runs the command at most once.", HelpName = "id" };
        var file = new Option<string?>("--file") { Description = "Read the command as JSON (with a \"type\" field) from this file ('-' for stdin).", HelpName = "file" };
        var wait = new Option<bool>("--wait") { Description = "Wait for the command's terminal event: exit 0 on success, 3 on CommandFailed or timeout." };
        var timeout = new Option<int>("--timeout") { Description = "Seconds --wait waits. Default 600.", HelpName = "seconds", DefaultValueFactory = _ => 600 };
        var broker = BrokerOption();
        var command = new Command("send", "Publish a native command to the worker (MassTransit envelope, publisher-confirmed) and print its command id. "
            + "The --share global option fills the command's share (Cinder's host:/export).")
        {
            type, volume, snapshot, newVolume, size, format, targetShare, commandId, file, wait, timeout, broker,
        };
        command.SetAction(async (parse, ct) =>
        {
            var json = parse.GetValue(globals.Json);
            try
            {
                var message = BuildMessage(parse.GetValue(type), parse.GetValue(file), environment, new JsonObject
                {
                    ["commandId"] = Id(parse.GetValue(commandId), "--command-id") ?? Guid.NewGuid().ToString(),
                    ["volumeId"] = Id(parse.GetValue(volume), "--volume"),
                    ["snapshotId"] = Id(parse.GetValue(snapshot), "--snapshot"),
                    ["newVolumeId"] = Id(parse.GetValue(newVolume), "--new-volume"),
                    ["share"] = parse.GetValue(globals.Share)?.FirstOrDefault(),
                    ["targetShare"] = parse.GetValue(targetShare),
                }, parse.GetValue(size), parse.GetValue(format));
                var brokerAddress = Wire.ResolveBroker(parse.GetValue(broker), environment);
                return await SendAsync(message, brokerAddress, parse.GetValue(wait), TimeSpan.FromSeconds(parse.GetValue(timeout)), json, environment, ct).ConfigureAwait(false);
            }
            catch (CliUsageException e)
            {
                return Output.Fail(environment, json, ErrorCodes.Usage, e.Message);
            }
            catch (PublishReturnException e)
            {
                return Output.Fail(environment, json, ErrorCodes.Unroutable, $"the broker returned the command: no queue is bound to exchange {e.Exchange} ({e.ReplyText}). "
                    + "Start a worker on this vhost once, or import ops/rabbitmq/definitions.json.");
            }
            catch (Exception e) when (e is BrokerUnreachableException or OperationInterruptedException or AlreadyClosedException or System.Net.Sockets.SocketException)
            {
                return Output.Fail(environment, json, ErrorCodes.BrokerUnavailable, e.InnerException?.Message ?? e.Message);
            }
        });
        return command;
    }

    private static string? Id(string? value, string option) =>
        value is null ? null : Guid.TryParse(value, out var g) ? g.ToString() : throw new CliUsageException($"{option} must be a UUID; got '{value}'.");

    /// <summary>The command from flags, or from JSON (argument, --file or stdin), as its contract type.</summary>
    internal static VolumeCommand BuildMessage(string? typeOrJson, string? file, CliEnvironment environment, JsonObject fields, string? size, string? format)
    {
        JsonObject body;
        Type? type;
        if (file is not null || typeOrJson?.TrimStart().StartsWith('{') == true)
        {
            var text = file is null ? typeOrJson! : file == "-" ? Console.In.ReadToEnd() : File.Exists(file) ? File.ReadAllText(file) : throw new CliUsageException($"{file} does not exist.");
            try
            {
                body = JsonNode.Parse(text) as JsonObject ?? throw new CliUsageException("The command JSON must be an object.");
            }
            catch (JsonException e)
            {
                throw new CliUsageException($"The command is not valid JSON: {e.Message}");
            }
            var typeName = body.FirstOrDefault(p => string.Equals(p.Key, "type", StringComparison.OrdinalIgnoreCase)).Value?.GetValue<string>()
                ?? throw new CliUsageException("The command JSON needs a \"type\" field, e.g. \"type\": \"CreateSnapshot\".");
            type = Wire.CommandType(typeName) ?? throw new CliUsageException($"Unknown command type '{typeName}'.");
            body.Remove(body.First(p => string.Equals(p.Key, "type", StringComparison.OrdinalIgnoreCase)).Key);
            if (!body.Any(p => string.Equals(p.Key, "commandId", StringComparison.OrdinalIgnoreCase)))
            {
                body["commandId"] = fields["commandId"]!.GetValue<string>();
            }
        }
        else
        {
            if (typeOrJson is null)
            {
                throw new CliUsageException("Name the command type (e.g. nfsvol send create-snapshot --volume <id> --snapshot <id>) or give it as JSON.");
            }
            type = Wire.CommandType(typeOrJson) ?? throw new CliUsageException(
                $"Unknown command type '{typeOrJson}'. One of: {string.Join(", ", Wire.CommandTypes.Select(t => t.Name))}.");
            body = new JsonObject();
            foreach (var (key, value) in fields)
            {
                if (value is not null)
                {
                    body[key] = value.DeepClone();
                }
            }
            if (size is not null)
            {
                body[type == typeof(CreateVolume) ? "sizeBytes" : "newSizeBytes"] = SizeParser.Parse(size, "size");
            }
            if (format is not null)
            {
                body[type == typeof(CreateVolume) ? "format" : "targetFormat"] = format;
            }
        }
        try
        {
            return (VolumeCommand)(body.Deserialize(type, Wire.Read) ?? throw new CliUsageException("The command is empty."));
        }
        catch (JsonException e)
        {
            throw new CliUsageException($"{type.Name}: {e.Message.Replace("'", "", StringComparison.Ordinal)}");
        }
    }

    private static async Task<int> SendAsync(VolumeCommand message, BrokerAddress broker, bool wait, TimeSpan timeout, bool json, CliEnvironment environment, CancellationToken ct)
    {
        EventSubscription? subscription = null;
        try
        {
            if (wait)
            {
                // Subscribed before publishing: the terminal event cannot be missed.
                subscription = await EventSubscription.OpenAsync(broker, progress: false, ct).ConfigureAwait(false);
            }
            var connection = await Wire.ConnectAsync(broker, $"nfsvol-send-{Environment.ProcessId}", ct).ConfigureAwait(false);
            await using (connection.ConfigureAwait(false))
            {
                var channel = await connection.CreateChannelAsync(new RabbitMQ.Client.CreateChannelOptions(publisherConfirmationsEnabled: true, publisherConfirmationTrackingEnabled: true), ct).ConfigureAwait(false);
                await using (channel.ConfigureAwait(false))
                {
                    await Wire.PublishAsync(channel, message, Guid.NewGuid(), ct).ConfigureAwait(false);
                }
            }
            var partition = PartitionKey.PartitionOf(message.VolumeId, PartitionKey.DefaultPartitionCount);
            var type = message.GetType().Name;
            if (!json)
            {
                environment.Out.WriteLine(string.Create(CultureInfo.InvariantCulture, $"sent {type} {message.CommandId} (volume {message.VolumeId}, partition {partition} of {PartitionKey.DefaultPartitionCount})"));
            }
            if (subscription is null)
            {
                if (json)
                {
                    Output.WriteJson(environment.Out, new { type, commandId = message.CommandId, volumeId = message.VolumeId, partition });
                }
                return ExitCodes.Ok;
            }
            using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
            cts.CancelAfter(timeout);
            try
            {
                while (true)
                {
                    var e = await subscription.Events.ReadAsync(cts.Token).ConfigureAwait(false);
                    if (e.IsTerminal && e.CommandId == message.CommandId)
                    {
                        var line = EventLine.From(e);
                        if (json)
                        {
                            Output.WriteJson(environment.Out, line);
                        }
                        else
                        {
                            environment.Out.WriteLine(line.ToText());
                        }
                        if (e.IsFailure)
                        {
                            await environment.Error.WriteLineAsync($"nfsvol: {line.ErrorCode}: {line.Message}").ConfigureAwait(false);
                        }
                        return e.IsFailure ? ExitCodes.ForReported(line.ErrorCode) : ExitCodes.Ok;
                    }
                }
            }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested)
            {
                return Output.Fail(environment, json, ErrorCodes.Timeout, $"no terminal event for command {message.CommandId} within {timeout.TotalSeconds:0} s (is a worker running on this vhost?)");
            }
        }
        finally
        {
            if (subscription is not null)
            {
                await subscription.DisposeAsync().ConfigureAwait(false);
            }
        }
    }

    public static Command Watch(GlobalOptions globals, CliEnvironment environment)
    {
        var volume = new Option<string?>("--volume") { Description = "Only events of this volume.", HelpName = "id" };
        var broker = BrokerOption();
        var showProgress = new Option<bool>("--progress")
        {
            Description = "Also one line per progress event of copies and merges (percent, bytes done / total, time left), for logs and scripts; with --json, as JSON objects. On a terminal progress shows as bars anyway.",
        };
        var command = new Command("watch", "Print the worker's events as they happen: one line per terminal event (time, event, volume, command, outcome or error code, message); "
            + "progress bars for running copies and merges on a terminal (percent, bytes done / total, time left). --json: one JSON object per line, no progress unless --progress. Runs until interrupted.")
        {
            volume, broker, showProgress,
        };
        command.SetAction(async (parse, ct) =>
        {
            var json = parse.GetValue(globals.Json);
            try
            {
                Guid? filter = parse.GetValue(volume) is { } v ? Guid.TryParse(v, out var g) ? g : throw new CliUsageException($"--volume must be a UUID; got '{v}'.") : null;
                var brokerAddress = Wire.ResolveBroker(parse.GetValue(broker), environment);
                var progress = !json && environment.IsTerminal;
                var progressLines = parse.GetValue(showProgress) && !progress;
                await using var subscription = await EventSubscription.OpenAsync(brokerAddress, progress || progressLines, ct).ConfigureAwait(false);
                if (!json)
                {
                    await environment.Error.WriteLineAsync($"nfsvol: watching {brokerAddress.Redacted}{(filter is null ? "" : $" for volume {filter}")}; Ctrl-C to stop").ConfigureAwait(false);
                }
                try
                {
                    if (progress)
                    {
                        await WatchWithProgressAsync(subscription, filter, environment, ct).ConfigureAwait(false);
                    }
                    else
                    {
                        await foreach (var e in subscription.Events.ReadAllAsync(ct).ConfigureAwait(false))
                        {
                            if ((!e.IsTerminal && !(progressLines && e.Type == nameof(OperationProgressed))) || (filter is { } f && e.VolumeId != f))
                            {
                                continue;
                            }
                            var line = EventLine.From(e);
                            if (json)
                            {
                                environment.Out.WriteLine(JsonSerializer.Serialize(line, Wire.Write));
                                environment.Out.Flush();
                            }
                            else
                            {
                                environment.Out.WriteLine(line.ToText());
                                environment.Out.Flush();
                            }
                        }
                    }
                }
                catch (OperationCanceledException) when (ct.IsCancellationRequested)
                {
                }
                return ExitCodes.Ok;
            }
            catch (CliUsageException e)
            {
                return Output.Fail(environment, json, ErrorCodes.Usage, e.Message);
            }
            catch (Exception e) when (e is BrokerUnreachableException or OperationInterruptedException or AlreadyClosedException or System.Net.Sockets.SocketException)
            {
                return Output.Fail(environment, json, ErrorCodes.BrokerUnavailable, e.InnerException?.Message ?? e.Message);
            }
        });
        return command;
    }

    private static async Task WatchWithProgressAsync(EventSubscription subscription, Guid? filter, CliEnvironment environment, CancellationToken ct)
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(environment.Out) });
        await console.Progress()
            .AutoClear(false)
            .HideCompleted(true)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
            .StartAsync(async ctx =>
            {
                var tasks = new Dictionary<Guid, ProgressTask>();
                await foreach (var e in subscription.Events.ReadAllAsync(ct).ConfigureAwait(false))
                {
                    if (filter is { } f && e.VolumeId != f)
                    {
                        continue;
                    }
                    if (e.Type == nameof(OperationProgressed))
                    {
                        var description = $"{e.Message["phase"]?.GetValue<string>() ?? "op"} {e.VolumeId.ToString()[..8]} ({e.CommandId.ToString()[..8]})"
                            + ProgressText.Figures((long?)ProgressText.Number(e.Message["bytesDone"]), (long?)ProgressText.Number(e.Message["bytesTotal"]),
                                ProgressText.Number(e.Message["secondsLeft"]), " ");
                        if (!tasks.TryGetValue(e.CommandId, out var task))
                        {
                            task = ctx.AddTask(Markup.Escape(description), maxValue: 100);
                            tasks[e.CommandId] = task;
                        }
                        task.Description = Markup.Escape(description);
                        task.Value = Math.Clamp(e.Message["fraction"]?.GetValue<double>() ?? 0, 0, 1) * 100;
                        continue;
                    }
                    if (tasks.Remove(e.CommandId, out var done))
                    {
                        done.Value = 100;
                        done.StopTask();
                    }
                    var line = EventLine.From(e);
                    console.MarkupLine(e.IsFailure ? $"[red]{Markup.Escape(line.ToText())}[/]" : Markup.Escape(line.ToText()));
                }
            }).ConfigureAwait(false);
    }

}

/// <summary>One line of <c>nfsvol watch</c> (and of <c>send --wait</c>).</summary>
public sealed record EventLine(DateTimeOffset Time, string Event, Guid VolumeId, Guid CommandId, string Outcome, string? ErrorCode, string? Message, JsonObject Data)
{
    internal static EventLine From(ReceivedEvent e)
    {
        var time = DateTimeOffset.TryParse(e.Message["timestamp"]?.GetValue<string>(), CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var t) ? t : DateTimeOffset.UtcNow;
        var failed = e.IsFailure;
        var alreadyDone = e.Message["alreadyDone"]?.GetValue<bool>() == true;
        if (e.Type == nameof(OperationProgressed))
        {
            return new EventLine(time.ToUniversalTime(), e.Type, e.VolumeId, e.CommandId, "running", null, ProgressText.Of(e.Message), e.Message);
        }
        return new EventLine(time.ToUniversalTime(), e.Type, e.VolumeId, e.CommandId,
            failed ? "failed" : alreadyDone ? "already-done" : "ok",
            failed ? e.Message["errorCode"]?.GetValue<string>() : null,
            e.Message["message"]?.GetValue<string>(), e.Message);
    }

    public string ToText() => string.Create(CultureInfo.InvariantCulture,
        $"{Time:yyyy-MM-ddTHH:mm:ss.fffZ}  {Event,-16} volume {VolumeId}  command {CommandId}  {(ErrorCode ?? Outcome)}{(Message is null ? "" : "  " + Message)}");
}
