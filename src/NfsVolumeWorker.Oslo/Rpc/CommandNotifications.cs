using System.Collections.Concurrent;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using NfsVolumeWorker.Broker;
using NfsVolumeWorker.Contracts;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;

namespace NfsVolumeWorker.Oslo.Rpc;

/// <summary>
/// The .end/.error notification of each command the adapter accepted, sent from the command's native terminal event
/// (a queue of this adapter bound to the event exchanges; correlated by command id). What a notification needs is
/// written to the command's share before the command is published (<see cref="IPendingNotificationStore"/>), so that
/// after a restart, or when another instance finishes the command, the instance that claims that record sends it:
/// exactly one per command, unless a claimer dies between sending and deleting the record (then the next start sends
/// it again).
/// </summary>
internal sealed class CommandNotifications(
    OsloOptions options, OsloPublisher publisher, IVolumeLocator locator, IPendingNotificationStore store,
    ICommandOutcomeSource outcomes, TimeProvider time, ILogger logger)
{
    private static readonly JsonSerializerOptions EventJson = new(JsonSerializerDefaults.Web);

    /// <summary>A claim on a pending record older than this is taken to be abandoned (its claimer died before
    /// sending); the next start gives it back. Sending takes a publish and its confirm: seconds.</summary>
    public static readonly TimeSpan StaleClaimAge = TimeSpan.FromMinutes(5);

    private readonly ConcurrentDictionary<Guid, PendingEntry> _pending = new();
    private readonly TaskCompletionSource _recovered = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>A command this instance accepted: its notification, and whether its record is on the share
    /// (then it is sent only by whoever claims the record).</summary>
    private sealed record PendingEntry(PendingNotification Notification, string? Share, bool Persisted);

    /// <summary>Commands accepted by this instance and waiting for their terminal event.</summary>
    public int Count => _pending.Count;

    /// <summary>Completes when the start-up look for records of commands that finished unobserved is done.</summary>
    public Task Recovered => _recovered.Task;

    /// <summary>Registers a command about to be submitted; its record goes to the share first (the oslo message is
    /// acknowledged after the submit).</summary>
    public void Register(VolumeCommand command, PendingNotification n, string described) =>
        _pending[command.CommandId] = new PendingEntry(n, command.Share, Persist(command, n, described));

    /// <summary>Binds this instance's queue to the terminal-event exchanges and sends each command's notification from
    /// its event; then, in the background, sends those whose event was published while no adapter listened.</summary>
    public async Task StartAsync(IConnection connection, CancellationToken ct)
    {
        await ListenAsync(connection, ct).ConfigureAwait(false);
        // Terminal events from now on reach the queue just bound; those published before are found through the
        // outcome records of the commands whose notification records wait.
        _ = Task.Run(() => SendFinishedFromSharesAsync(ct), CancellationToken.None);
    }

    /// <summary>Writes the command's pending record to its share. False when it could not (the notification then
    /// depends on this instance living until the terminal event, as it did before records existed) or when the
    /// command has finished already (a redelivery after its outcome was recorded: its record was handled then).</summary>
    private bool Persist(VolumeCommand command, PendingNotification n, string described)
    {
        if (!options.Notifications || command.Share is not { } share)
        {
            return false;
        }
        try
        {
            if (outcomes.OutcomeOf(share, command.CommandId) is not null)
            {
                return true; // claimed (and sent) by whoever holds its record; nothing to add
            }
            store.Save(share, command.CommandId, PendingRecord.For(command.CommandId, command.VolumeId, share, time.GetUtcNow(), n).ToBytes());
            return true;
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            OsloLog.NotPersisted(logger, e, described, command.CommandId);
            return false;
        }
    }

    private async Task ListenAsync(IConnection connection, CancellationToken ct)
    {
        var channel = await connection.CreateChannelAsync(cancellationToken: ct).ConfigureAwait(false);
        await channel.BasicQosAsync(0, 64, false, ct).ConfigureAwait(false);
        // One queue per adapter instance, not exclusive, so that terminal events published while the connection
        // is being recovered wait for it; it expires an hour after its instance is gone.
        var queue = $"nfsvol.oslo-events.{options.Host}.{Environment.MachineName}-{Environment.ProcessId}";
        await channel.QueueDeclareAsync(queue, durable: true, exclusive: false, autoDelete: false,
            new Dictionary<string, object?> { ["x-expires"] = 3_600_000 }, cancellationToken: ct).ConfigureAwait(false);
        foreach (var type in MessageCatalog.TerminalEvents)
        {
            var exchange = MassTransitEnvelope.ExchangeOf(type);
            // As MassTransit declares its publish exchanges: fanout, durable.
            await channel.ExchangeDeclareAsync(exchange, ExchangeType.Fanout, durable: true, autoDelete: false, cancellationToken: ct).ConfigureAwait(false);
            await channel.QueueBindAsync(queue, exchange, "", cancellationToken: ct).ConfigureAwait(false);
        }
        var consumer = new AsyncEventingBasicConsumer(channel);
        consumer.ReceivedAsync += async (_, ea) =>
        {
            try
            {
                await OnEventAsync(ea.Exchange, ea.Body, ct).ConfigureAwait(false);
            }
            catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException or KeyNotFoundException)
            {
                OsloLog.UnreadableEvent(logger, ea.Exchange, e.Message);
            }
            await channel.BasicAckAsync(ea.DeliveryTag, false, ct).ConfigureAwait(false);
        };
        await channel.BasicConsumeAsync(queue, autoAck: false, consumer, ct).ConfigureAwait(false);
    }

    private async Task OnEventAsync(string exchange, ReadOnlyMemory<byte> body, CancellationToken ct)
    {
        if (!MassTransitEnvelope.TryRead(body.Span, out var envelope))
        {
            throw new InvalidOperationException($"not a MassTransit envelope of a contract type (from {exchange})");
        }
        var eventType = MessageCatalog.TerminalEventNamed(envelope.TypeName) ?? throw new InvalidOperationException($"not a terminal event: {envelope.TypeName}");
        var e = (ITerminalEvent)(envelope.Message.Deserialize(eventType, EventJson) ?? throw new InvalidOperationException($"empty {envelope.TypeName}"));
        switch (e)
        {
            case VolumeCreated c: locator.RememberVolume(c.VolumeId, c.Share); break;
            case VolumeCloned c: locator.RememberVolume(c.NewVolumeId, c.Share); break;
            case SnapshotCreated c: locator.RememberSnapshot(c.SnapshotId, c.VolumeId, c.Share); break;
        }
        if (_pending.TryRemove(e.CommandId, out var entry))
        {
            if (!entry.Persisted)
            {
                await SendFromMemoryAsync(entry, e, ct).ConfigureAwait(false);
                return;
            }
            using var mine = store.TryClaim(e.CommandId, entry.Share);
            if (mine is null)
            {
                return; // another instance claimed it and sends it
            }
            await SendClaimedAsync(mine, entry.Notification, e, ct).ConfigureAwait(false);
            return;
        }
        // Accepted by an instance that has since stopped (or by this one before a restart), or a native command:
        // one look per share for its record.
        await SendFromShareAsync(e, (e as VolumeEvent)?.Share, recovered: false, ct).ConfigureAwait(false);
    }

    private async Task SendFromMemoryAsync(PendingEntry entry, ITerminalEvent e, CancellationToken ct)
    {
        try
        {
            await SendAsync(entry.Notification, e, ct).ConfigureAwait(false);
        }
        catch
        {
            _pending.TryAdd(e.CommandId, entry); // for the redelivered event
            throw;
        }
    }

    /// <summary>Claims the command's record on the shares and sends its notification; nothing when no share
    /// holds one (a native command, or sent already) or another instance claimed it.</summary>
    private async Task<bool> SendFromShareAsync(ITerminalEvent e, string? share, bool recovered, CancellationToken ct)
    {
        using var claim = store.TryClaim(e.CommandId, share);
        if (claim is null)
        {
            return false;
        }
        PendingRecord record;
        try
        {
            record = PendingRecord.FromBytes(claim.Record);
        }
        catch (JsonException x)
        {
            OsloLog.UnreadablePending(logger, e.CommandId, claim.Share, x.Message);
            return false; // given back on dispose; left for people to look at
        }
        await SendClaimedAsync(claim, record.Notification, e, ct).ConfigureAwait(false);
        OsloLog.SentFromShare(logger, e.CommandId, claim.Share, recovered ? "at start, from the command's outcome record" : "from its terminal event");
        return true;
    }

    private async Task SendClaimedAsync(IPendingNotificationClaim claim, PendingNotification n, ITerminalEvent e, CancellationToken ct)
    {
        await SendAsync(n, e, ct).ConfigureAwait(false);
        // Confirmed by the broker (the publish channel waits for confirms): the record can go. A crash before
        // this line leaves the record claimed; the next start gives it back and sends again (a duplicate).
        claim.Complete();
    }

    private async Task SendAsync(PendingNotification n, ITerminalEvent e, CancellationToken ct)
    {
        if (e is CommandFailed failed)
        {
            await publisher.NotifyErrorAsync(n, failed.ErrorCode, e.CommandId, ct).ConfigureAwait(false);
            OsloLog.Refused(logger, $"command {e.CommandId}", failed.ErrorCode, failed.Message);
        }
        else
        {
            await publisher.NotifyEndAsync(n, e.CommandId, ct).ConfigureAwait(false);
        }
    }

    /// <summary>At start: the records of commands whose outcome is recorded already — their terminal event was
    /// published while no adapter listened — are claimed and their notification sent now. Records of commands
    /// still running wait for the terminal event.</summary>
    private async Task SendFinishedFromSharesAsync(CancellationToken ct)
    {
        try
        {
            IReadOnlyList<(string Share, Guid CommandId)> waiting;
            try
            {
                waiting = store.ListPending(StaleClaimAge);
            }
            catch (Exception x) when (x is not OperationCanceledException)
            {
                OsloLog.RecoveryFailed(logger, x);
                return;
            }
            var sent = 0;
            foreach (var (share, commandId) in waiting)
            {
                ct.ThrowIfCancellationRequested();
                try
                {
                    if (outcomes.OutcomeOf(share, commandId) is { } outcome && await SendFromShareAsync(outcome, share, recovered: true, ct).ConfigureAwait(false))
                    {
                        sent++;
                    }
                }
                catch (Exception x) when (x is not OperationCanceledException)
                {
                    OsloLog.RecoveryFailed(logger, x);
                }
            }
            OsloLog.Recovered(logger, waiting.Count, sent);
        }
        catch (OperationCanceledException)
        {
            // stopping
        }
        finally
        {
            _recovered.TrySetResult();
        }
    }
}
