using System.Text.Json;
using NfsVolumeWorker.Cli;
using NfsVolumeWorker.Testing;
using Xunit.Abstractions;

namespace NfsVolumeWorker.Host.Tests;

public sealed class SendWatchTests(ITestOutputHelper output) : IAsyncLifetime
{
    private readonly string _share = Directory.CreateTempSubdirectory("nfsvol-sendwatch-").FullName;
    private WorkerProcess? _worker;

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        if (_worker is not null)
        {
            output.WriteLine(_worker.Output);
            await _worker.DisposeAsync();
        }
        Directory.Delete(_share, recursive: true);
    }

    private static async Task<(int Exit, string Out, string Err)> NfsvolAsync(Uri broker, CancellationToken ct, params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var env = new CliEnvironment(TextWriter.Synchronized(stdout), TextWriter.Synchronized(stderr),
            name => name == "NFSVOL_BROKER_URL" ? broker.ToString() : null, IsTerminal: false);
        var exit = await NfsVolumeWorker.Cli.Program.RunAsync(args, env, ct);
        return (exit, stdout.ToString(), stderr.ToString());
    }

    private static Task WaitForConsumerAsync(VirtualHost vhost, string queue) =>
        WaitForConsumerAsync(vhost, q => q == queue, queue);

    private static async Task WaitForConsumerAsync(VirtualHost vhost, Func<string, bool> queue, string what)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (DateTime.UtcNow < deadline)
        {
            if ((await vhost.ListConsumersAsync()).Any(c => queue(c.Queue)))
            {
                return;
            }
            await Task.Delay(250);
        }
        Assert.Fail($"no consumer on {what} within 60 s");
    }

    [Fact]
    public async Task I_can_send_commands_and_watch_their_terminal_events_as_json_lines()
    {
        var broker = await RabbitMqBroker.SharedAsync();
        await using var vhost = await broker.CreateVirtualHostAsync("sendwatch");
        var early = await NfsvolAsync(vhost.AmqpUri, CancellationToken.None, "send", "delete-volume", "--volume", Guid.NewGuid().ToString());
        Assert.Equal(3, early.Exit); // no worker has bound a queue yet: refused, not lost
        Assert.Contains("Unroutable", early.Err, StringComparison.Ordinal);

        _worker = WorkerProcess.Start("sw", vhost.AmqpUri, null, _share);
        await WaitForConsumerAsync(vhost, "nfsvol.ingress");

        using var stopWatch = new CancellationTokenSource();
        var volume = Guid.NewGuid();
        var other = Guid.NewGuid();
        var watch = NfsvolAsync(vhost.AmqpUri, stopWatch.Token, "watch", "--json", "--volume", volume.ToString());
        // The watch consumes its (server-named) queue only after binding it to every event exchange.
        await WaitForConsumerAsync(vhost, q => q.StartsWith("amq.gen-", StringComparison.Ordinal), "the watch's queue");

        var created = await NfsvolAsync(vhost.AmqpUri, CancellationToken.None, "send", "create-volume", "--volume", volume.ToString(), "--size", "64M", "--wait", "--timeout", "60");
        Assert.True(created.Exit == 0, created.Out + created.Err + _worker.Output);
        Assert.Contains("VolumeCreated", created.Out, StringComparison.Ordinal);

        var snapshot = Guid.NewGuid();
        var json = $$"""{"type":"CreateSnapshot","volumeId":"{{volume}}","snapshotId":"{{snapshot}}"}""";
        Assert.Equal(0, (await NfsvolAsync(vhost.AmqpUri, CancellationToken.None, "send", json, "--wait", "--timeout", "60")).Exit);

        var shrink = await NfsvolAsync(vhost.AmqpUri, CancellationToken.None, "send", "extend-volume", "--volume", volume.ToString(), "--size", "1M", "--wait", "--timeout", "60");
        Assert.Equal(3, shrink.Exit);
        Assert.Contains("CommandFailed", shrink.Out, StringComparison.Ordinal);

        Assert.Equal(0, (await NfsvolAsync(vhost.AmqpUri, CancellationToken.None, "send", "create-volume", "--volume", other.ToString(), "--size", "1M", "--wait", "--timeout", "60")).Exit);
        Assert.Equal(2, (await NfsvolAsync(vhost.AmqpUri, CancellationToken.None, "send", "create-snapshot", "--volume", "not-a-uuid")).Exit);

        await Task.Delay(1000);
        await stopWatch.CancelAsync();
        var watched = await watch;
        Assert.Equal(0, watched.Exit);
        var lines = watched.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal(["VolumeCreated", "SnapshotCreated", "CommandFailed"], lines.Select(l => l.GetProperty("event").GetString()));
        Assert.All(lines, l => Assert.Equal(volume, l.GetProperty("volumeId").GetGuid()));
        Assert.Equal("ShrinkNotAllowed", lines[2].GetProperty("errorCode").GetString());
    }

    [Fact]
    public async Task Watch_with_progress_shows_a_running_copy_with_bytes_done_and_total_and_the_time_left()
    {
        var broker = await RabbitMqBroker.SharedAsync();
        await using var vhost = await broker.CreateVirtualHostAsync("watchprogress");
        // Copies limited to 16 MiB/s by the worker's own limit (read and write in a pinned mode: a server-side copy
        // would run at the kernel's pace).
        _worker = WorkerProcess.Start("wp", vhost.AmqpUri, null, _share,
            $"--Engine:CopyBytesPerSecond={16 << 20}", "--Engine:ServerSideCopy=false", "--Engine:CopyWithDirectIo=true");
        await WaitForConsumerAsync(vhost, "nfsvol.ingress");
        var volume = Guid.NewGuid();
        var created = await NfsvolAsync(vhost.AmqpUri, CancellationToken.None, "send", "create-volume", "--volume", volume.ToString(), "--size", "256M", "--wait", "--timeout", "60");
        Assert.True(created.Exit == 0, created.Out + created.Err + _worker.Output);
        RequiredTool.RunChecked(RequiredTool.Find("qemu-io", "qemu-utils"), "-f", "raw", "-c", "write -P 0x42 0 96M", Path.Combine(_share, $"volume-{volume}"));

        using var stopWatch = new CancellationTokenSource();
        var watch = NfsvolAsync(vhost.AmqpUri, stopWatch.Token, "watch", "--progress", "--volume", volume.ToString());
        await WaitForConsumerAsync(vhost, q => q.StartsWith("amq.gen-", StringComparison.Ordinal), "the watch's queue");
        var clone = await NfsvolAsync(vhost.AmqpUri, CancellationToken.None, "send", "clone-volume", "--volume", volume.ToString(), "--new-volume", Guid.NewGuid().ToString(),
            "--wait", "--timeout", "120");
        Assert.True(clone.Exit == 0, clone.Out + clone.Err + _worker.Output);
        await Task.Delay(1000); // progress is published without waiting: let the last one arrive
        await stopWatch.CancelAsync();
        var watched = await watch;
        output.WriteLine(watched.Out);

        Assert.Equal(0, watched.Exit);
        var progress = watched.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => l.Contains("OperationProgressed", StringComparison.Ordinal)).ToList();
        Assert.NotEmpty(progress);
        Assert.All(progress, l => Assert.Matches(@"running  copy \d+% [\d.]+ (B|KiB|MiB) / 96 MiB", l));
        Assert.Contains(progress, l => l.Contains("copy 100% 96 MiB / 96 MiB", StringComparison.Ordinal));
        Assert.Contains(progress, l => System.Text.RegularExpressions.Regex.IsMatch(l, @"copy \d+% .*, \d+ s left$"));
        Assert.Contains(watched.Out.Split('\n'), l => l.Contains("VolumeCloned", StringComparison.Ordinal));
    }
}
