using MassTransit;
using NfsVolumeWorker.Contracts;

namespace NfsVolumeWorker.Messaging;

/// <summary>Publishes events with the message id derived from the command id (terminal events), and waits
/// for the broker's confirmation.</summary>
public sealed class EventPublisher(IBus bus, BrokerWaits waits)
{
    public Task PublishTerminalAsync(ITerminalEvent e, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(e);
        var type = e.GetType();
        if (!MessageCatalog.TerminalEvents.Contains(type))
        {
            throw new ArgumentException($"Not a known terminal event: {type.Name}", nameof(e));
        }
        var messageId = EventIds.TerminalEventId(e.CommandId);
        // Published as its concrete type, so it goes to that type's exchange (and ITerminalEvent's); the wait for
        // the broker's confirm is tracked and bounded (Broker:ConfirmTimeout).
        return waits.ConfirmedAsync($"{type.Name} {messageId}", ct => bus.Publish(e, type, ctx =>
        {
            ctx.MessageId = messageId;
            ctx.Durable = true;
        }, ct), cancellationToken);
    }

    public Task PublishProgressAsync(OperationProgressed e, CancellationToken cancellationToken) =>
        bus.Publish(e, cancellationToken);
}
