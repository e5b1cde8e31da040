using NfsVolumeWorker.Broker;
using System.Collections.Concurrent;
using System.Diagnostics;
using NfsVolumeWorker.Benchmarks;
using NfsVolumeWorker.Cli;
using NfsVolumeWorker.Contracts;
using RabbitMQ.Client;
using RabbitMQ.Client.Exceptions;

namespace NfsVolumeWorker.PipelineBenchmark;

/// <summary>A terminal event and when it arrived (<see cref="Stopwatch.GetTimestamp"/>).</summary>
internal sealed record Arrival(ReceivedEvent Event, long At);

/// <summary>
/// A new user's client: plain RabbitMQ.Client connections publishing native commands in MassTransit's envelope with
/// confirms (nfsvol's <see cref="Wire.PublishAsync"/>, the envelope written once), and a subscriber bound to the
/// terminal-event exchanges (nfsvol watch's <see cref="EventSubscription"/>). Each publisher is a connection of its
/// own and awaits every confirm, so one publisher's commands reach the broker in the order it sent them.
/// </summary>
internal sealed class CommandDriver : IAsyncDisposable
{
    private readonly List<(IConnection Connection, IChannel Channel)> _publishers;
    private readonly EventSubscription _events;
    private readonly ConcurrentDictionary<Guid, TaskCompletionSource<Arrival>> _waiting = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _pump;
    private long _terminalEvents;

    private CommandDriver(List<(IConnection, IChannel)> publishers, EventSubscription events)
    {
        _publishers = publishers;
        _events = events;
        _pump = Task.Run(PumpAsync);
    }

    /// <summary>Every terminal event, as it arrives (for order checks and counting).</summary>
    public Action<Arrival>? OnTerminal { get; set; }

    public long TerminalEvents => Interlocked.Read(ref _terminalEvents);

    public int Publishers => _publishers.Count;

    public static async Task<CommandDriver> OpenAsync(Uri vhost, int publishers, CancellationToken cancellationToken)
    {
        var broker = BrokerAddress.Parse(vhost.ToString());
        var events = await EventSubscription.OpenAsync(broker, progress: false, cancellationToken);
        var list = new List<(IConnection, IChannel)>();
        try
        {
            for (var i = 0; i < publishers; i++)
            {
                var connection = await Wire.ConnectAsync(broker, $"bench-publisher-{i}", cancellationToken);
                list.Add((connection, await connection.CreateChannelAsync(
                    new CreateChannelOptions(publisherConfirmationsEnabled: true, publisherConfirmationTrackingEnabled: true), cancellationToken)));
            }
        }
        catch
        {
            foreach (var (c, ch) in list)
            {
                await ch.DisposeAsync();
                await c.DisposeAsync();
            }
            await events.DisposeAsync();
            throw;
        }
        return new CommandDriver(list, events);
    }

    private async Task PumpAsync()
    {
        try
        {
            await foreach (var e in _events.Events.ReadAllAsync(_stop.Token))
            {
                if (!e.IsTerminal)
                {
                    continue;
                }
                var arrival = new Arrival(e, Stopwatch.GetTimestamp());
                Interlocked.Increment(ref _terminalEvents);
                OnTerminal?.Invoke(arrival);
                if (_waiting.TryRemove(e.CommandId, out var waiter))
                {
                    waiter.TrySetResult(arrival);
                }
            }
        }
        catch (OperationCanceledException)
        {
            // disposed
        }
    }

    /// <summary>Registers interest in a command's terminal event; call before publishing it.</summary>
    public Task<Arrival> Expect(Guid commandId)
    {
        var waiter = new TaskCompletionSource<Arrival>(TaskCreationOptions.RunContinuationsAsynchronously);
        if (!_waiting.TryAdd(commandId, waiter))
        {
            throw new InvalidOperationException($"command {commandId} is awaited twice");
        }
        return waiter.Task;
    }

    /// <summary>Publishes on publisher <paramref name="publisher"/> and waits for the broker's confirm.</summary>
    public Task PublishAsync(int publisher, VolumeCommand command, CancellationToken cancellationToken) =>
        Wire.PublishAsync(_publishers[publisher].Channel, command, Guid.NewGuid(), cancellationToken);

    /// <summary>Publishes and waits for the terminal event; throws when it is a failure or does not come in time.
    /// Returns the time from the start of the publish to the event's arrival.</summary>
    public async Task<TimeSpan> RunAsync(VolumeCommand command, TimeSpan timeout, CancellationToken cancellationToken, int publisher = 0)
    {
        var done = Expect(command.CommandId);
        var start = Stopwatch.GetTimestamp();
        await PublishAsync(publisher, command, cancellationToken);
        var arrival = await WaitAsync(done, command, timeout, cancellationToken);
        return Stopwatch.GetElapsedTime(start, arrival.At);
    }

    public async Task<Arrival> WaitAsync(Task<Arrival> done, VolumeCommand command, TimeSpan timeout, CancellationToken cancellationToken)
    {
        Arrival arrival;
        try
        {
            arrival = await done.WaitAsync(timeout, cancellationToken);
        }
        catch (TimeoutException)
        {
            _waiting.TryRemove(command.CommandId, out _);
            throw new HarnessException($"no terminal event for {command.GetType().Name} {command.CommandId} within {timeout.TotalSeconds:F0} s");
        }
        if (arrival.Event.IsFailure)
        {
            throw new HarnessException($"{command.GetType().Name} {command.CommandId} failed: {arrival.Event.Message.ToJsonString()}");
        }
        return arrival;
    }

    /// <summary>The first publish after a worker started may find its queues not yet bound (mandatory: it is
    /// returned); this one is retried until the worker's topology takes it.</summary>
    public async Task<TimeSpan> RunFirstAsync(VolumeCommand command, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var done = Expect(command.CommandId);
            var start = Stopwatch.GetTimestamp();
            try
            {
                await PublishAsync(0, command, cancellationToken);
            }
            catch (PublishException) when (DateTime.UtcNow < deadline)
            {
                _waiting.TryRemove(command.CommandId, out _);
                await Task.Delay(250, cancellationToken);
                continue;
            }
            var arrival = await WaitAsync(done, command, timeout, cancellationToken);
            return Stopwatch.GetElapsedTime(start, arrival.At);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        await _pump;
        foreach (var (connection, channel) in _publishers)
        {
            await channel.DisposeAsync();
            await connection.DisposeAsync();
        }
        await _events.DisposeAsync();
        _stop.Dispose();
    }
}
