using System.Diagnostics;
using System.Text;
using System.Text.Json.Nodes;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Testing;
using RabbitMQ.Client;

namespace NfsVolumeWorker.Cli.Tests;

/// <summary><c>nfsvol watch</c> shows a copy's progress with the bytes done and total and the time left, from
/// progress events on a real broker; events of older workers (without those fields) still show.</summary>
public sealed class WatchProgressTests
{
    private const long GiB = 1024L * 1024 * 1024;

    [Theory]
    [InlineData("copy", 0.375, 1610612736L, 4294967296L, 12.3, "copy 37% 1.5 GiB / 4 GiB, 13 s left")]
    [InlineData("merge", 0.5, 512L * 1024 * 1024, 1073741824L, 150.0, "merge 50% 512 MiB / 1 GiB, 2 min 30 s left")]
    [InlineData("copy", 0.9, 9L * 1024 * 1024 * 1024, 10737418240L, 7300.0, "copy 90% 9 GiB / 10 GiB, 2 h 1 min left")]
    [InlineData("copy", 0.02, 20L * 1024 * 1024, 1073741824L, null, "copy 2% 20 MiB / 1 GiB")]
    [InlineData("copy", 0.4, null, null, null, "copy 40%")]
    public void Progress_reads_as_percent_bytes_and_time_left(string phase, double fraction, long? done, long? total, double? left, string expected) =>
        Assert.Equal(expected, ProgressText.Format(phase, fraction, done, total, left));

    [Fact]
    public async Task Watch_with_progress_prints_each_progress_event_with_its_bytes_and_time_left()
    {
        var broker = await RabbitMqBroker.SharedAsync();
        await using var vhost = await broker.CreateVirtualHostAsync("watch-progress");
        var volume = Guid.NewGuid();
        var command = Guid.NewGuid();
        var stdout = new SharedWriter();
        var stderr = new SharedWriter();
        using var stop = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        var env = new CliEnvironment(stdout, stderr, _ => null, false);
        var watch = Task.Run(() => Program.RunAsync(["watch", "--progress", "--volume", volume.ToString(), "--broker", vhost.AmqpUri.ToString()], env, stop.Token));
        await WaitForAsync(() => stderr.ToString().Contains("watching", StringComparison.Ordinal) || watch.IsCompleted, "nfsvol watch to subscribe", stderr);
        Assert.False(watch.IsCompleted, $"nfsvol watch ended: {stderr}");

        await PublishAsync(vhost.AmqpUri, new JsonObject
        {
            ["commandId"] = command.ToString(), ["volumeId"] = volume.ToString(), ["timestamp"] = DateTimeOffset.UtcNow.ToString("O"),
            ["phase"] = "copy", ["fraction"] = 0.375, ["bytesDone"] = 3 * GiB / 8, ["bytesTotal"] = GiB, ["secondsLeft"] = 12.0,
        });
        // A worker from before these fields: percent only.
        await PublishAsync(vhost.AmqpUri, new JsonObject
        {
            ["commandId"] = command.ToString(), ["volumeId"] = volume.ToString(), ["timestamp"] = DateTimeOffset.UtcNow.ToString("O"),
            ["phase"] = "merge", ["fraction"] = 0.5,
        });
        await WaitForAsync(() => stdout.ToString().Contains("merge 50%", StringComparison.Ordinal), "both progress lines", stdout);
        await stop.CancelAsync();
        Assert.Equal(0, await watch);

        var lines = stdout.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Contains(lines, l => l.Contains(nameof(OperationProgressed), StringComparison.Ordinal) && l.Contains($"volume {volume}", StringComparison.Ordinal)
            && l.Contains("running  copy 37% 384 MiB / 1 GiB, 12 s left", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.EndsWith("running  merge 50%", StringComparison.Ordinal));
    }

    private static async Task PublishAsync(Uri broker, JsonObject message)
    {
        await using var connection = await new ConnectionFactory { Uri = broker }.CreateConnectionAsync("watch-progress-test");
        await using var channel = await connection.CreateChannelAsync();
        var exchange = MassTransitEnvelope.ExchangeOf(typeof(OperationProgressed));
        await channel.ExchangeDeclareAsync(exchange, ExchangeType.Fanout, durable: true, autoDelete: false);
        var envelope = new JsonObject
        {
            ["messageId"] = Guid.NewGuid().ToString(),
            ["messageType"] = new JsonArray(MassTransitEnvelope.UrnOf(typeof(OperationProgressed))),
            ["message"] = message,
        };
        await channel.BasicPublishAsync(exchange, "", Encoding.UTF8.GetBytes(envelope.ToJsonString()));
    }

    private static async Task WaitForAsync(Func<bool> condition, string what, SharedWriter output)
    {
        var sw = Stopwatch.StartNew();
        while (!condition())
        {
            if (sw.Elapsed > TimeSpan.FromSeconds(60))
            {
                throw new TimeoutException($"waited 60 s for {what}; output so far:\n{output}");
            }
            await Task.Delay(50);
        }
    }

    /// <summary>A writer the watch writes to on its thread while the test reads it.</summary>
    private sealed class SharedWriter : StringWriter
    {
        private readonly Lock _lock = new();

        public override void Write(char value)
        {
            lock (_lock)
            {
                base.Write(value);
            }
        }

        public override void Write(string? value)
        {
            lock (_lock)
            {
                base.Write(value);
            }
        }

        public override void Write(char[] buffer, int index, int count)
        {
            lock (_lock)
            {
                base.Write(buffer, index, count);
            }
        }

        public override void WriteLine(string? value)
        {
            lock (_lock)
            {
                base.WriteLine(value);
            }
        }

        public override Task WriteLineAsync(string? value)
        {
            WriteLine(value);
            return Task.CompletedTask;
        }

        public override string ToString()
        {
            lock (_lock)
            {
                return base.ToString();
            }
        }
    }
}
