using System.Diagnostics;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Configuration;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Execution;
using NfsVolumeWorker.Storage.Diagnostics;
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
/// A short command (<see cref="CommandCatalog.ShortCommands"/>) whose volume has nothing waiting or running is run
/// here instead, without an inbox entry (<see cref="VolumeExecutor.TryRunInlineAsync"/>), unless
/// <see cref="WorkerOptions.InlineShortCommands"/> is off.
/// </summary>
public sealed class CommandAcceptor(
    ShareMap shares, VolumeExecutor executor, EventPublisher events, IOptions<VolumeEngineOptions> engineOptions, IOptions<WorkerOptions> workerOptions,
    Status.StatusBoard board, ILogger<CommandAcceptor> logger)
{
    /// <summary>Validates (<see cref="CommandValidation"/>), answers a command already finished by publishing its
    /// recorded event again, else runs it inline when it is short and its volume idle, else appends it to the
    /// volume's inbox and schedules the volume. Bad input yields
    /// <c>CommandFailed</c> and touches nothing.</summary>
    /// <param name="command">The decoded command.</param>
    /// <param name="partition">The partition it arrived on.</param>
    /// <param name="redelivered">True when the broker delivers this message again (a crash or a lost connection before
    /// the ack): a finished command's event then went out already, and is not published again.</param>
    /// <param name="cancellationToken">Stops waiting for the broker or the share.</param>
    public async Task AcceptAsync(VolumeCommand command, int partition, bool redelivered, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(command);
        var started = Stopwatch.GetTimestamp();
        using var scope = logger.BeginScope(new LogScope(new("CommandId", command.CommandId), new("VolumeId", command.VolumeId), new("Partition", partition)));
        var commandType = command.GetType().Name;
        var problem = CommandValidation.FieldProblem(command);
        if (problem is not null)
        {
            await RejectAsync(command, commandType, ErrorCodes.InvalidRequest, problem, started, cancellationToken).ConfigureAwait(false);
            return;
        }
        Share share;
        try
        {
            share = shares.Resolve(command.Share);
            // An unmounted share's empty mount point must not take the command: fail it, transient, and let the
            // partition go on with the commands of other shares.
            ShareMarker.EnsureAvailable(share);
        }
        catch (StorageException e)
        {
            await RejectAsync(command, commandType, e.Code.ToErrorCode(), e.Message, started, cancellationToken).ConfigureAwait(false);
            return;
        }
        if (CommandValidation.Problem(command, share, engineOptions.Value) is { } sizeProblem)
        {
            await RejectAsync(command, commandType, ErrorCodes.InvalidRequest, sizeProblem, started, cancellationToken).ConfigureAwait(false);
            return;
        }

        if (CommandOutcomes.Read(share, command.CommandId) is { } recorded && OutcomeRecord.TryFromBytes(recorded) is { } outcome)
        {
            // A command that already ran. A producer sending it again (it missed the event) gets the recorded event
            // again, with the same message id and content: subscribers that saw it already drop it by that id. A
            // redelivery of a message whose event went out already publishes nothing.
            WorkerTelemetry.Duplicates.Add(1);
            var published = outcome.Published || CommandOutcomes.IsMarkedPublished(share, command.CommandId);
            if (published && redelivered)
            {
                WorkerLog.DuplicateCommand(logger, commandType, command.CommandId, command.VolumeId);
                return;
            }
            await events.PublishTerminalAsync(outcome.ToEvent(), cancellationToken).ConfigureAwait(false);
            if (!published)
            {
                CommandRunner.MarkPublished(share, command.CommandId, engineOptions.Value.NewFileMode, logger);
            }
            WorkerLog.Republished(logger, commandType, command.CommandId, command.VolumeId, outcome.Code);
            return;
        }

        // The typed command runs as decoded, and the message is acknowledged once this returns: after its outcome is
        // durable and its terminal event confirmed.
        if (workerOptions.Value.InlineShortCommands && CommandCatalog.IsShort(command, engineOptions.Value)
            && await executor.TryRunInlineAsync(share, command, partition, Activity.Current?.Id, cancellationToken).ConfigureAwait(false))
        {
            WorkerTelemetry.Accepted.Add(1, new KeyValuePair<string, object?>("command", commandType));
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

    /// <summary>Publishes the rejection's <c>CommandFailed</c>, then logs it twice over: event 3003 (Warning) with the
    /// reason, and event 3004 <c>Finished</c> like every other outcome, so that one event id lists every command's end.</summary>
    private async Task RejectAsync(VolumeCommand command, string commandType, ErrorCode code, string message, long started, CancellationToken cancellationToken)
    {
        WorkerLog.Rejected(logger, commandType, command.CommandId, command.VolumeId, code.Name, message);
        WorkerTelemetry.Finished.Add(1, new KeyValuePair<string, object?>("command", commandType), new KeyValuePair<string, object?>("outcome", code.Name));
        var commandId = command.CommandId == Guid.Empty ? Guid.NewGuid() : command.CommandId;
        board.Failed(commandId, commandType, command.VolumeId, command.Share, code.Name, message, code.IsTransient); // before the event: see CommandRunner
        await events.PublishTerminalAsync(new CommandFailed
        {
            CommandId = commandId, VolumeId = command.VolumeId, Timestamp = DateTimeOffset.UtcNow,
            CommandType = commandType, ErrorCode = code.Name, Message = message, IsTransient = code.IsTransient,
        }, cancellationToken).ConfigureAwait(false);
        WorkerLog.Finished(logger, commandType, commandId, command.VolumeId, code.Name, (long)Stopwatch.GetElapsedTime(started).TotalMilliseconds);
    }
}
