using System.Diagnostics;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Execution;
using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Storage.Inbox;
using NfsVolumeWorker.Storage.Shares;
using NfsVolumeWorker.Telemetry;

namespace NfsVolumeWorker.Messaging;

/// <summary>
/// Accepts a command taken from a partition queue: appends it, durably, to its volume's inbox on the
/// share; the caller acknowledges the message only after this returns. The operation itself runs later in
/// the <see cref="VolumeExecutor"/>, so a long copy never holds a delivery past the broker's consumer
/// timeout, and a long operation on one volume never delays another volume of the same partition.
/// </summary>
public sealed class CommandAcceptor(
    ShareMap shares, VolumeExecutor executor, EventPublisher events, IOptions<VolumeEngineOptions> engineOptions, ILogger<CommandAcceptor> logger)
{
    /// <summary>Validates, answers a command already finished from its outcome record, else appends it to the
    /// volume's inbox and schedules the volume. Bad input yields <c>CommandFailed</c> and touches nothing.</summary>
    public async Task AcceptAsync(VolumeCommand command, int partition, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(command);
        using var scope = logger.BeginScope(new Dictionary<string, object>
        {
            ["CommandId"] = command.CommandId, ["VolumeId"] = command.VolumeId, ["Partition"] = partition,
        });
        var commandType = command.GetType().Name;
        var problem = Validate(command);
        if (problem is not null)
        {
            await RejectAsync(command, commandType, StorageErrorCode.InvalidRequest.ToString(), problem, cancellationToken).ConfigureAwait(false);
            return;
        }
        Share share;
        try
        {
            share = shares.Resolve(command.Share);
        }
        catch (StorageException e)
        {
            await RejectAsync(command, commandType, e.Code.ToString(), e.Message, cancellationToken).ConfigureAwait(false);
            return;
        }

        if (CommandOutcomes.Read(share, command.CommandId) is { } recorded)
        {
            // A command that already ran (a redelivery, or a producer sending it again): answer from the record.
            var outcome = OutcomeRecord.FromBytes(recorded);
            if (!outcome.Published)
            {
                await events.PublishTerminalAsync(outcome.ToEvent(), cancellationToken).ConfigureAwait(false);
                CommandOutcomes.Write(share, command.CommandId, (outcome with { Published = true }).ToBytes(), engineOptions.Value.NewFileMode);
            }
            WorkerLog.DuplicateCommand(logger, commandType, command.CommandId, command.VolumeId);
            WorkerTelemetry.Duplicates.Add(1);
            return;
        }

        var record = InboxRecord.For(command, partition, Activity.Current?.Id);
        var appended = await VolumeInbox.AppendAsync(share, command.VolumeId, command.CommandId, record.ToBytes(), engineOptions.Value.NewFileMode, cancellationToken).ConfigureAwait(false);
        if (appended)
        {
            WorkerLog.Accepted(logger, commandType, command.CommandId, command.VolumeId, partition);
            WorkerTelemetry.Accepted.Add(1, new KeyValuePair<string, object?>("command", commandType));
        }
        else
        {
            WorkerLog.DuplicateCommand(logger, commandType, command.CommandId, command.VolumeId);
            WorkerTelemetry.Duplicates.Add(1);
        }
        executor.Schedule(share, command.VolumeId);
    }

    /// <summary>What makes a command unusable before it reaches the engine (which checks the rest).</summary>
    internal static string? Validate(VolumeCommand command) => command switch
    {
        _ when command.CommandId == Guid.Empty => "the command has no commandId (a UUID chosen by the sender)",
        _ when command.VolumeId == Guid.Empty => "the command has no volumeId (a UUID)",
        CreateSnapshot { SnapshotId: var s } when s == Guid.Empty => "snapshotId is missing",
        DeleteSnapshot { SnapshotId: var s } when s == Guid.Empty => "snapshotId is missing",
        RevertToSnapshot { SnapshotId: var s } when s == Guid.Empty => "snapshotId is missing",
        CreateVolumeFromSnapshot c when c.SnapshotId == Guid.Empty || c.NewVolumeId == Guid.Empty => "snapshotId and newVolumeId are required",
        CloneVolume { NewVolumeId: var n } when n == Guid.Empty => "newVolumeId is missing",
        CreateVolume { SizeBytes: <= 0 } => "sizeBytes must be positive",
        ExtendVolume { NewSizeBytes: <= 0 } => "newSizeBytes must be positive",
        _ => null,
    };

    private async Task RejectAsync(VolumeCommand command, string commandType, string code, string message, CancellationToken cancellationToken)
    {
        WorkerLog.Rejected(logger, commandType, command.CommandId, command.VolumeId, code, message);
        WorkerTelemetry.Finished.Add(1, new KeyValuePair<string, object?>("command", commandType), new KeyValuePair<string, object?>("outcome", code));
        var commandId = command.CommandId == Guid.Empty ? Guid.NewGuid() : command.CommandId;
        await events.PublishTerminalAsync(new CommandFailed
        {
            CommandId = commandId, VolumeId = command.VolumeId, Timestamp = DateTimeOffset.UtcNow,
            CommandType = commandType, ErrorCode = code, Message = message, IsTransient = false,
        }, cancellationToken).ConfigureAwait(false);
    }
}
