using System.Net.Http.Json;
using System.Text.Json;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Testing;
using NfsVolumeWorker.Tests.Support;

namespace NfsVolumeWorker.Tests;

/// <summary>The log an operator follows: the worker process with JSON console logging
/// (<c>--Logging:Console:FormatterName=json</c>) writes only JSON lines, each with its event id, level and category;
/// every command ends in exactly one event 3004 line with its outcome code and duration, rejected ones included,
/// carrying <c>CommandId</c>/<c>VolumeId</c> in its scope; the broker password appears nowhere.</summary>
public sealed class JsonLogTests(ITestOutputHelper output)
{
    private const long MiB = WorkerTestBed.MiB;

    [Fact]
    public async Task Json_lines_carry_event_ids_and_command_scopes_one_finished_line_per_command_and_no_password()
    {
        var broker = await RabbitMqBroker.SharedAsync();
        Assert.True(broker.ManagementUri is not null, "this test creates a broker user through the management API");
        await using var vhost = await broker.CreateVirtualHostAsync("jsonlog");
        // A user of its own, with a password that cannot be mistaken for anything else in the log (guest:guest
        // would hide a leak behind the user name). Tagged monitoring: the balancer reads the management API with it.
        var user = "nfsvol-log-" + Guid.NewGuid().ToString("N")[..8];
        var password = "Pw-" + Guid.NewGuid().ToString("N");
        using var management = new HttpClient { BaseAddress = broker.ManagementUri };
        management.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue(
            "Basic", Convert.ToBase64String(System.Text.Encoding.UTF8.GetBytes($"{broker.UserName}:{broker.Password}")));
        (await management.PutAsJsonAsync($"api/users/{user}", new { password, tags = "monitoring" })).EnsureSuccessStatusCode();
        try
        {
            (await management.PutAsJsonAsync($"api/permissions/{Uri.EscapeDataString(vhost.Name)}/{user}", new { configure = ".*", write = ".*", read = ".*" })).EnsureSuccessStatusCode();
            var workerUri = new Uri($"amqp://{user}:{password}@{vhost.AmqpUri.Host}:{vhost.AmqpUri.Port}/{Uri.EscapeDataString(vhost.Name)}");

            using var root = new TempDirectory();
            var share = Path.Combine(root.Path, "share");
            Directory.CreateDirectory(share);
            await using var events = await EventCollector.StartAsync(vhost.AmqpUri);
            await using var producer = await CommandBus.StartAsync(vhost.AmqpUri);

            var worker = WorkerProcess.Start(workerUri, share, "json-log", new Dictionary<string, string?>
            {
                ["Logging:Console:FormatterName"] = "json",
                ["Logging:LogLevel:Default"] = "Information",
                ["Logging:LogLevel:MassTransit"] = "Debug",
                ["Broker:ManagementUrl"] = broker.ManagementUri!.ToString(),
                ["Balancing:Interval"] = "00:00:01",
            });
            var vol = Guid.NewGuid();
            var commands = new (VolumeCommand Command, string Outcome)[]
            {
                (new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = vol, SizeBytes = 4 * MiB }, "Completed"),
                (new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = vol, SnapshotId = Guid.NewGuid() }, "Completed"),
                (new RevertToSnapshot { CommandId = Guid.NewGuid(), VolumeId = vol, SnapshotId = Guid.NewGuid() }, "SnapshotNotFound"),
                (new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = Guid.NewGuid(), SizeBytes = MiB, Share = "nowhere:/export" }, "ShareNotConfigured"),
            };
            try
            {
                await Ownership.WaitForAsync(vhost, ["json-log"], TimeSpan.FromSeconds(60)); // subscribed: the topology exists
                foreach (var (command, _) in commands)
                {
                    await (command switch // published as its own type: each command type has its exchange
                    {
                        CreateVolume c => producer.PublishAsync(c),
                        CreateSnapshot c => producer.PublishAsync(c),
                        RevertToSnapshot c => producer.PublishAsync(c),
                        _ => throw new InvalidOperationException(command.GetType().Name),
                    });
                    await events.WaitForAsync(command.CommandId, TimeSpan.FromSeconds(90));
                }
                await Task.Delay(TimeSpan.FromSeconds(2)); // a balancing round or two
            }
            finally
            {
                await worker.TerminateAsync(TimeSpan.FromSeconds(60));
            }

            var lines = worker.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            output.WriteLine($"{lines.Length} lines; the first: {lines.FirstOrDefault()}");
            Assert.True(lines.Length > 10, "the worker hardly logged:\n" + worker.Output);

            // The password never appears, in any form a URL or a log could carry it.
            Assert.DoesNotContain(password, worker.Output, StringComparison.Ordinal);
            Assert.DoesNotContain(Uri.EscapeDataString(password), worker.Output, StringComparison.Ordinal);
            Assert.DoesNotContain(Convert.ToBase64String(System.Text.Encoding.UTF8.GetBytes($"{user}:{password}")), worker.Output, StringComparison.Ordinal);

            var parsed = new List<JsonElement>();
            foreach (var line in lines)
            {
                JsonElement e;
                try
                {
                    using var doc = JsonDocument.Parse(line);
                    e = doc.RootElement.Clone();
                }
                catch (JsonException ex)
                {
                    Assert.Fail($"not a JSON line ({ex.Message}): {line}");
                    throw;
                }
                Assert.True(e.ValueKind == JsonValueKind.Object, line);
                foreach (var field in new[] { "Timestamp", "EventId", "LogLevel", "Category", "Message" })
                {
                    Assert.True(e.TryGetProperty(field, out _), $"no {field}: {line}");
                }
                Assert.Equal(JsonValueKind.Number, e.GetProperty("EventId").ValueKind);
                parsed.Add(e);
            }
            Assert.Contains(parsed, e => e.GetProperty("EventId").GetInt32() == 3014 && e.GetProperty("Message").GetString()!.Contains(user, StringComparison.Ordinal));

            foreach (var (command, outcome) in commands)
            {
                var id = command.CommandId.ToString();
                var finished = parsed.Where(e => e.GetProperty("EventId").GetInt32() == 3004 && State(e, "CommandId") == id).ToList();
                Assert.True(finished.Count == 1, $"{command.GetType().Name} {id}: {finished.Count} 'finished' lines (event 3004), expected 1");
                var line = finished[0];
                output.WriteLine(line.ToString());
                Assert.Equal(outcome, State(line, "Outcome"));
                Assert.Equal(command.GetType().Name, State(line, "CommandType"));
                Assert.True(line.GetProperty("State").TryGetProperty("ElapsedMs", out var elapsed) && elapsed.ValueKind == JsonValueKind.Number, line.ToString());
                // The scope every line of a command's work carries.
                Assert.True(line.TryGetProperty("Scopes", out var scopes), "no Scopes (Logging:Console:FormatterOptions:IncludeScopes): " + line);
                var scope = scopes.EnumerateArray().FirstOrDefault(s => s.ValueKind == JsonValueKind.Object && s.TryGetProperty("CommandId", out _));
                Assert.True(scope.ValueKind == JsonValueKind.Object, "no scope with CommandId: " + line);
                Assert.Equal(id, scope.GetProperty("CommandId").GetString());
                Assert.Equal(command.VolumeId.ToString(), scope.GetProperty("VolumeId").GetString());
            }
        }
        finally
        {
            await management.DeleteAsync(new Uri($"api/users/{user}", UriKind.Relative));
        }
    }

    private static string? State(JsonElement line, string property) =>
        line.TryGetProperty("State", out var state) && state.TryGetProperty(property, out var v) ? v.ToString() : null;
}
