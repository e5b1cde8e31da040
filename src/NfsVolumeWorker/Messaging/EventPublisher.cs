using MassTransit;
using NfsVolumeWorker.Contracts;

namespace NfsVolumeWorker.Messaging;

/// <summary>Publishes events with the message id derived from the command id (terminal events), and waits
/// for the broker's confirmation.</summary>
public sealed class EventPublisher(IBus bus, BrokerWaits waits)
{
    public Task PublishTerminalAsync(ITerminalEvent e, CancellationToken cancellationToken)
    {
        var messageId = EventIds.TerminalEventId(e.CommandId);
        return e switch
        {
            VolumeCreated x => Publish(x, messageId, cancellationToken),
            VolumeDeleted x => Publish(x, messageId, cancellationToken),
            SnapshotCreated x => Publish(x, messageId, cancellationToken),
            SnapshotDeleted x => Publish(x, messageId, cancellationToken),
            VolumeCloned x => Publish(x, messageId, cancellationToken),
            VolumeReverted x => Publish(x, messageId, cancellationToken),
            VolumeExtended x => Publish(x, messageId, cancellationToken),
            CommandFailed x => Publish(x, messageId, cancellationToken),
            _ => throw new ArgumentException($"Not a known terminal event: {e.GetType().Name}", nameof(e)),
        };
    }

    public Task PublishProgressAsync(OperationProgressed e, CancellationToken cancellationToken) =>
        bus.Publish(e, cancellationToken);

    private async Task Publish<T>(T message, Guid messageId, CancellationToken cancellationToken)
        where T : class
    {
        await waits.ConfirmedAsync($"{typeof(T).Name} {messageId}", ct => bus.Publish(message, ctx =>
        {
            ctx.MessageId = messageId;
            ctx.Durable = true;
        }, ct), cancellationToken).ConfigureAwait(false);
    }
}
