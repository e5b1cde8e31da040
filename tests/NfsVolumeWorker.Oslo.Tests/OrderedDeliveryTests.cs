using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text;
using System.Text.Json.Nodes;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Oslo.Rpc;
using NfsVolumeWorker.Oslo.Wire;
using NfsVolumeWorker.Testing;
using RabbitMQ.Client;

namespace NfsVolumeWorker.Oslo.Tests;

/// <summary>The adapter's consumer on a real broker, with a pipeline that does not confirm when told not to: a cast
/// whose command is not confirmed is retried in place, so the casts behind it wait (one volume's casts keep their order
/// even with many prefetched), and it is acknowledged once its command is confirmed.</summary>
public sealed class OrderedDeliveryTests
{
    [Fact]
    public async Task A_cast_whose_command_is_not_confirmed_is_retried_in_place_and_no_later_cast_passes_it()
    {
        var broker = await RabbitMqBroker.SharedAsync();
        await using var vhost = await broker.CreateVirtualHostAsync("oslo-ordered");
        Guid first = Guid.NewGuid(), second = Guid.NewGuid(), never = Guid.NewGuid();
        // The first cast's command is confirmed on its 4th submit, the second's at once, the third's never (it is
        // being retried when the adapter stops, which shows that everything before it was settled).
        var pipeline = new ScriptedPipeline((command, submit) => command.VolumeId == first ? submit > 3 : command.VolumeId == second);
        var logs = new CapturingLoggerProvider();
        using var loggers = new LoggerFactory([logs]);
        var options = new OsloOptions { Enabled = true, Host = OsloWorker.Host, BrokerUrl = vhost.AmqpUri.AbsoluteUri, Notifications = false };
        var locator = new EndpointTests.FakeLocator();
        using var server = new OsloRpcServer(Options.Create(options), new CinderVolumeEndpoint(options, locator, new EndpointTests.FakeConnections(), TimeProvider.System),
            pipeline, locator, new NoPendingNotifications(), new NoOutcomes(), TimeProvider.System, loggers.CreateLogger<OsloRpcServer>(), new UncontestedAdapterLease());
        await server.StartAsync(CancellationToken.None);
        await server.Ready.WaitAsync(TimeSpan.FromSeconds(60));

        var queue = $"{options.Topic}.{OsloWorker.Host}";
        await using var connection = await vhost.ConnectAsync();
        await using var channel = await connection.CreateChannelAsync(new CreateChannelOptions(publisherConfirmationsEnabled: true, publisherConfirmationTrackingEnabled: true));
        await channel.BasicPublishAsync("", queue, Encoding.UTF8.GetBytes("not oslo"));
        foreach (var (volume, unique) in new[] { (first, "cast-1"), (second, "cast-2"), (never, "cast-3") })
        {
            await channel.BasicPublishAsync("", queue, OsloEnvelope.Encode(CreateVolumeCast(volume, unique)));
        }

        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        Assert.Equal(first, (await pipeline.Confirmed.Reader.ReadAsync(timeout.Token)).VolumeId);
        Assert.Equal(second, (await pipeline.Confirmed.Reader.ReadAsync(timeout.Token)).VolumeId);
        // Once the third cast is being retried, the consumer is past the second, which it acknowledged before it took the third.
        (Guid, int) refused;
        do
        {
            refused = await pipeline.Refused.Reader.ReadAsync(timeout.Token);
        }
        while (refused != (never, 2));
        await server.StopAsync(CancellationToken.None);

        Assert.False(pipeline.Confirmed.Reader.TryRead(out _), "a command was confirmed twice");
        // What the stopped adapter had not acknowledged is back in the queue: the third cast, and only it.
        Assert.Equal(1u, await ReadyCountAsync(channel, queue, timeout.Token));
        Assert.Contains("oslo message on cinder-volume.hostA@nfs is unreadable and was dropped", logs.All, StringComparison.Ordinal);
        for (var attempt = 1; attempt <= 3; attempt++)
        {
            Assert.Contains(logs.Lines, line => line.Contains("unique_id=cast-1 ", StringComparison.Ordinal) && line.Contains($"(attempt {attempt})", StringComparison.Ordinal));
        }
    }

    /// <summary>oslo carries no trace context: each request's consumer span starts a trace, and the command's submit
    /// runs inside it, so MassTransit carries that trace on to the partition consumer and qemu-img.</summary>
    [Fact]
    public async Task Each_request_is_one_consumer_span_and_its_command_is_submitted_inside_it()
    {
        var broker = await RabbitMqBroker.SharedAsync();
        await using var vhost = await broker.CreateVirtualHostAsync("oslo-traced");
        var spans = new ConcurrentQueue<Activity>();
        using var listener = new ActivityListener
        {
            ShouldListenTo = s => s.Name == OsloTelemetry.SourceName,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = spans.Enqueue,
        };
        ActivitySource.AddActivityListener(listener);
        var volume = Guid.NewGuid();
        var pipeline = new ScriptedPipeline((_, _) => true);
        var options = new OsloOptions { Enabled = true, Host = OsloWorker.Host, BrokerUrl = vhost.AmqpUri.AbsoluteUri, Notifications = false };
        var locator = new EndpointTests.FakeLocator();
        using var server = new OsloRpcServer(Options.Create(options), new CinderVolumeEndpoint(options, locator, new EndpointTests.FakeConnections(), TimeProvider.System),
            pipeline, locator, new NoPendingNotifications(), new NoOutcomes(), TimeProvider.System, NullLogger<OsloRpcServer>.Instance, new UncontestedAdapterLease());
        await server.StartAsync(CancellationToken.None);
        await server.Ready.WaitAsync(TimeSpan.FromSeconds(60));
        var queue = $"{options.Topic}.{OsloWorker.Host}";
        await using var connection = await vhost.ConnectAsync();
        await using var channel = await connection.CreateChannelAsync(new CreateChannelOptions(publisherConfirmationsEnabled: true, publisherConfirmationTrackingEnabled: true));
        var uniqueId = $"traced-{Guid.NewGuid():N}";
        var cast = CreateVolumeCast(volume, uniqueId);
        cast["_context_request_id"] = "req-5e2c0d7a-traced";

        await channel.BasicPublishAsync("", queue, OsloEnvelope.Encode(cast));
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var submitted = await pipeline.Confirmed.Reader.ReadAsync(timeout.Token);
        // The listener hears every adapter in this process (other test classes run beside this one): ours is the span
        // of this request's unique id. It ends with the acknowledgement, just after the submit.
        Activity? span;
        while ((span = spans.FirstOrDefault(a => Equals(a.GetTagItem("oslo.unique_id"), uniqueId))) is null)
        {
            await Task.Delay(20, timeout.Token);
        }
        await server.StopAsync(CancellationToken.None);

        Assert.Equal(volume, submitted.VolumeId);
        Assert.Equal($"{queue} receive", span.DisplayName);
        Assert.Equal(ActivityKind.Consumer, span.Kind);
        Assert.Equal(default, span.ParentSpanId); // a root: nothing came with the oslo message
        Assert.Equal("create_volume", span.GetTagItem("rpc.method"));
        Assert.Equal("cast", span.GetTagItem("oslo.kind"));
        Assert.Equal("req-5e2c0d7a-traced", span.GetTagItem("cinder.request_id"));
        Assert.Equal(span.TraceId, pipeline.TraceOf[submitted.CommandId]);
    }

    private static JsonObject CreateVolumeCast(Guid volume, string uniqueId) => new()
    {
        ["method"] = "create_volume",
        ["args"] = new JsonObject { ["volume"] = EndpointTests.Vol(volume) },
        ["version"] = "3.0",
        ["_unique_id"] = uniqueId,
        ["_context_user_id"] = "u",
    };

    /// <summary>The queue's ready messages once the stopped adapter's unacknowledged ones are back (the broker requeues
    /// them as the connection closes).</summary>
    private static async Task<uint> ReadyCountAsync(IChannel channel, string queue, CancellationToken cancellationToken)
    {
        while (true)
        {
            var count = (await channel.QueueDeclarePassiveAsync(queue, cancellationToken)).MessageCount;
            if (count > 0)
            {
                return count;
            }
            await Task.Delay(50, cancellationToken);
        }
    }

    /// <summary>A pipeline that confirms a command's submit when <c>confirms(command, submit number of that command)</c>
    /// says so, else throws as a pipeline whose broker did not confirm. What it confirmed, and what it refused, can be
    /// read in order.</summary>
    private sealed class ScriptedPipeline(Func<VolumeCommand, int, bool> confirms) : ICommandPipeline
    {
        private readonly Dictionary<Guid, int> _submits = [];

        public Channel<VolumeCommand> Confirmed { get; } = Channel.CreateUnbounded<VolumeCommand>();

        public Channel<(Guid VolumeId, int Submit)> Refused { get; } = Channel.CreateUnbounded<(Guid, int)>();

        /// <summary>The trace each confirmed command was submitted in (the default id when there was none).</summary>
        public ConcurrentDictionary<Guid, ActivityTraceId> TraceOf { get; } = new();

        public Task SubmitAsync(VolumeCommand command, CancellationToken cancellationToken)
        {
            int submit;
            lock (_submits)
            {
                submit = _submits[command.CommandId] = _submits.GetValueOrDefault(command.CommandId) + 1;
            }
            if (!confirms(command, submit))
            {
                Refused.Writer.TryWrite((command.VolumeId, submit));
                throw new IOException($"the broker did not confirm submit {submit} of {command.CommandId}");
            }
            TraceOf[command.CommandId] = Activity.Current?.TraceId ?? default;
            Confirmed.Writer.TryWrite(command);
            return Task.CompletedTask;
        }
    }

    private sealed class NoPendingNotifications : IPendingNotificationStore
    {
        public void Save(string share, Guid commandId, ReadOnlySpan<byte> record) => throw new InvalidOperationException("notifications are off");
        public IPendingNotificationClaim? TryClaim(Guid commandId, string? share) => null;
        public IReadOnlyList<(string Share, Guid CommandId)> ListPending(TimeSpan staleClaimAge) => [];
    }

    private sealed class NoOutcomes : ICommandOutcomeSource
    {
        public ITerminalEvent? OutcomeOf(string share, Guid commandId) => null;
    }
}
