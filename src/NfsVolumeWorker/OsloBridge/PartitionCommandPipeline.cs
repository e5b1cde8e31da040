using MassTransit;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Configuration;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Messaging;
using NfsVolumeWorker.Oslo;

namespace NfsVolumeWorker.OsloBridge;

/// <summary>Sends an oslo-originated command straight to its partition exchange (the same function
/// <see cref="Partitions.IngressRouter"/> uses), on the bus, which has publisher confirmations on: the task completes
/// when the broker has confirmed the message, and only then does the adapter acknowledge the oslo message.</summary>
public sealed class PartitionCommandPipeline(ISendEndpointProvider sendEndpoints, IOptions<WorkerOptions> options) : ICommandPipeline
{
    public async Task SubmitAsync(VolumeCommand command, CancellationToken cancellationToken)
    {
        var partition = PartitionKey.PartitionOf(command.VolumeId, options.Value.PartitionCount);
        var endpoint = await sendEndpoints.GetSendEndpoint(Topology.PartitionAddress(partition)).ConfigureAwait(false);
        await endpoint.Send(command, command.GetType(), ctx =>
        {
            ctx.MessageId = command.CommandId;
            ctx.Durable = true;
        }, cancellationToken).ConfigureAwait(false);
    }
}
