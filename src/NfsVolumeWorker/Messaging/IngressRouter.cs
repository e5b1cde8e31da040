using MassTransit;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Configuration;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Telemetry;

namespace NfsVolumeWorker.Messaging;

/// <summary>
/// Assigns native commands to their partition. Runs on the ingress queue, which has a single active
/// consumer and handles one message at a time, so one volume's commands leave in the order they came;
/// each is forwarded (publisher-confirmed) before it is acknowledged.
/// </summary>
public sealed class IngressRouter(IOptions<WorkerOptions> options, ILogger<IngressRouter> logger) :
    IConsumer<CreateVolume>, IConsumer<DeleteVolume>, IConsumer<CreateSnapshot>, IConsumer<DeleteSnapshot>,
    IConsumer<CreateVolumeFromSnapshot>, IConsumer<CloneVolume>, IConsumer<RevertToSnapshot>, IConsumer<ExtendVolume>
{
    public Task Consume(ConsumeContext<CreateVolume> context) => Route(context);
    public Task Consume(ConsumeContext<DeleteVolume> context) => Route(context);
    public Task Consume(ConsumeContext<CreateSnapshot> context) => Route(context);
    public Task Consume(ConsumeContext<DeleteSnapshot> context) => Route(context);
    public Task Consume(ConsumeContext<CreateVolumeFromSnapshot> context) => Route(context);
    public Task Consume(ConsumeContext<CloneVolume> context) => Route(context);
    public Task Consume(ConsumeContext<RevertToSnapshot> context) => Route(context);
    public Task Consume(ConsumeContext<ExtendVolume> context) => Route(context);

    private async Task Route<T>(ConsumeContext<T> context)
        where T : class, IVolumeCommand
    {
        var partition = PartitionKey.PartitionOf(context.Message.VolumeId, options.Value.PartitionCount);
        var endpoint = await context.GetSendEndpoint(Topology.PartitionAddress(partition)).ConfigureAwait(false);
        await context.Forward(endpoint, context.Message).ConfigureAwait(false);
        WorkerLog.Routed(logger, typeof(T).Name, context.Message.CommandId, context.Message.VolumeId, partition);
    }
}
