using System.Diagnostics;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Configuration;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Messaging;
using NfsVolumeWorker.Storage.Diagnostics;
using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Storage.Inbox;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Shares;
using NfsVolumeWorker.Telemetry;

namespace NfsVolumeWorker.Execution;

/// <summary>
/// Runs one command, from an inbox entry or inline from the partition consumer: the engine operation, then its
/// outcome recorded on the share, then the terminal event published and confirmed. Safe to run again from any
/// point: a recorded outcome is never run twice, and the engine finishes interrupted operations from what is on disk.
/// </summary>
public sealed class CommandRunner(
    VolumeEngine engine, EventPublisher events, IOptions<WorkerOptions> options, IOptions<VolumeEngineOptions> engineOptions, Status.StatusBoard board,
    ILogger<CommandRunner> logger)
{
    /// <summary>Runs one inbox entry (the drain loop's path).</summary>
    public async Task RunAsync(Share share, Guid volumeId, InboxEntry entry, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(entry);
        InboxRecord record;
        VolumeCommand command;
        try
        {
            record = InboxRecord.FromBytes(entry.ReadPayload());
            command = record.ToCommand();
        }
        catch (System.Text.Json.JsonException e)
        {
            // Written by this worker, so this is damage on the share: keep it out of the way, loudly.
            WorkerLog.UnreadableInboxEntry(logger, entry.Path, e.Message);
            File.Move(entry.Path, entry.Path + ".unreadable", overwrite: true);
            return;
        }
        await RunAsync(share, volumeId, command, record.CommandType, record.Partition, record.ReceivedAt, record.TraceParent, deferTransient: false, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Runs a command the partition consumer decoded, at once and without an inbox entry (the inline fast
    /// path: the caller holds the volume's drain lock and acknowledges the message after this returns true). The
    /// same steps, outcome record, event, logs, trace and status board as an inbox entry. False when it did not
    /// end: its first attempt failed with a transient error and nothing was recorded; the caller then queues it in
    /// the inbox, whose drain loop retries it with back-off instead of holding the partition meanwhile.</summary>
    public Task<bool> RunInlineAsync(Share share, VolumeCommand command, int partition, string? traceParent, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(command);
        return RunAsync(share, command.VolumeId, command, command.GetType().Name, partition, DateTimeOffset.UtcNow, traceParent, deferTransient: true, cancellationToken);
    }

    private async Task<bool> RunAsync(Share share, Guid volumeId, VolumeCommand command, string commandType, int partition, DateTimeOffset receivedAt,
        string? traceParent, bool deferTransient, CancellationToken cancellationToken)
    {
        using var activity = WorkerTelemetry.ActivitySource.StartActivity($"run {commandType}", ActivityKind.Internal, traceParent);
        activity?.SetTag("nfsvol.command_id", command.CommandId.ToString());
        activity?.SetTag("nfsvol.volume_id", volumeId.ToString());
        activity?.SetTag("nfsvol.partition", partition);
        using var scope = logger.BeginScope(new LogScope(new("CommandId", command.CommandId), new("VolumeId", volumeId), new("Partition", partition)));

        if (CommandOutcomes.Read(share, command.CommandId) is { } existing)
        {
            if (OutcomeRecord.TryFromBytes(existing) is { } recorded)
            {
                if (!recorded.Published && !CommandOutcomes.IsMarkedPublished(share, command.CommandId))
                {
                    await PublishAndMarkAsync(share, recorded, cancellationToken).ConfigureAwait(false);
                }
                return true;
            }
            // Torn by a crash before its fsync returned (CommandOutcomes.Write): its event never went out. The command
            // runs again (it is idempotent) and its new record replaces this one.
            WorkerLog.UnreadableOutcome(logger, CommandOutcomes.PathOf(share, command.CommandId), "not an outcome record");
        }

        var started = Stopwatch.GetTimestamp();
        ITerminalEvent? terminal;
        board.Started(command.CommandId, commandType, share.Export, volumeId, partition);
        try
        {
            terminal = CommandValidation.Problem(command, share, engineOptions.Value) is { } problem
                ? Failed(command, ErrorCodes.InvalidRequest, problem) // accepted by an older worker
                : await ExecuteWithRetriesAsync(share, command, deferTransient, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            board.Ended(command.CommandId);
        }
        if (terminal is null)
        {
            return false;
        }
        if (terminal is CommandFailed failedOutcome)
        {
            // On the board before the event goes out: whoever reads the status page after the event finds it there.
            board.Failed(failedOutcome.CommandId, failedOutcome.CommandType, volumeId, share.Export, failedOutcome.ErrorCode, failedOutcome.Message, failedOutcome.IsTransient);
        }
        var outcome = OutcomeRecord.For(terminal);
        CommandOutcomes.Write(share, command.CommandId, outcome.ToBytes(), engineOptions.Value.NewFileMode);
        await PublishAndMarkAsync(share, outcome, cancellationToken).ConfigureAwait(false);

        var code = OutcomeRecord.CodeOf(terminal);
        WorkerTelemetry.Finished.Add(1, new KeyValuePair<string, object?>("command", commandType), new KeyValuePair<string, object?>("outcome", code));
        WorkerTelemetry.CommandDuration.Record((DateTimeOffset.UtcNow - receivedAt).TotalSeconds, new KeyValuePair<string, object?>("command", commandType));
        WorkerLog.Finished(logger, commandType, command.CommandId, volumeId, code, (long)Stopwatch.GetElapsedTime(started).TotalMilliseconds);
        if (terminal is CommandFailed)
        {
            activity?.SetStatus(ActivityStatusCode.Error, code);
        }
        return true;
    }

    private async Task PublishAndMarkAsync(Share share, OutcomeRecord outcome, CancellationToken cancellationToken)
    {
        var e = outcome.ToEvent();
        await events.PublishTerminalAsync(e, cancellationToken).ConfigureAwait(false);
        MarkPublished(share, e.CommandId, engineOptions.Value.NewFileMode, logger);
    }

    /// <summary>Notes on the share that the command's terminal event went out (after the broker confirmed it), saying
    /// so in the log when the share kept no mark bit and a file had to be made.</summary>
    internal static void MarkPublished(Share share, Guid commandId, UnixFileMode mode, ILogger logger)
    {
        if (!CommandOutcomes.MarkPublished(share, commandId, mode))
        {
            WorkerLog.PublishedMarkAsFile(logger, commandId, share.Export);
        }
    }

    /// <summary>The command's terminal event; null when <paramref name="deferTransient"/> and the first attempt failed
    /// with a transient error (the caller queues the command instead of waiting out the back-off).</summary>
    private async Task<ITerminalEvent?> ExecuteWithRetriesAsync(Share share, VolumeCommand command, bool deferTransient, CancellationToken cancellationToken)
    {
        var delay = options.Value.TransientBackoff;
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                // Inline, the volume's lock is tried once: waiting behind another operation would hold the partition.
                var terminal = await ExecuteAsync(share, command, inline: deferTransient, cancellationToken).ConfigureAwait(false);
                if (terminal is null)
                {
                    WorkerLog.InlineNotStarted(logger, command.GetType().Name, command.CommandId, command.VolumeId);
                }
                return terminal;
            }
            catch (StorageException e) when (e.IsTransient && deferTransient)
            {
                WorkerLog.InlineDeferred(logger, command.GetType().Name, command.CommandId, command.VolumeId, e.Code.ToString(), e.Message);
                return null;
            }
            catch (StorageException e) when (e.IsTransient && attempt < options.Value.TransientAttempts)
            {
                WorkerLog.Retrying(logger, command.GetType().Name, command.CommandId, e.Code.ToString(), attempt, delay.TotalSeconds, e.Message);
                await Task.Delay(delay, cancellationToken).ConfigureAwait(false);
                delay *= 2;
            }
            catch (StorageException e)
            {
                return Failed(command, e.Code.ToErrorCode(), e.Message);
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                throw; // shutting down: the entry stays in the inbox and the next owner resumes it
            }
            catch (Exception e)
            {
                // Whatever escaped the engine ends the command, for good: an inbox entry retried forever stalls
                // its volume and floods the log. The share is as the last durable step left it (readable).
                WorkerLog.UnexpectedFailure(logger, command.GetType().Name, command.CommandId, command.VolumeId, e);
                return Failed(command, ErrorCodes.InternalError, $"Unexpected {e.GetType().Name}: {e.Message}");
            }
        }
    }

    private static CommandFailed Failed(VolumeCommand command, ErrorCode code, string message) => new()
    {
        CommandId = command.CommandId, VolumeId = command.VolumeId, Timestamp = DateTimeOffset.UtcNow,
        CommandType = command.GetType().Name, ErrorCode = code.Name, Message = message, IsTransient = code.IsTransient,
    };

    /// <summary>Runs the command in the engine; null when <paramref name="inline"/> and the engine did not start it
    /// because it would move data (a snapshot delete that is not a metadata-only edit): the caller queues it.</summary>
    private async Task<ITerminalEvent?> ExecuteAsync(Share share, VolumeCommand command, bool inline, CancellationToken ct)
    {
        TimeSpan? lockTimeout = inline ? TimeSpan.Zero : null;
        var export = share.Export;
        var progress = new ProgressPublisher(events, board, command.CommandId, command.VolumeId, logger);
        switch (command)
        {
            case CreateVolume c:
            {
                var r = await engine.CreateVolumeAsync(Guarded(new CreateVolumeRequest(export, c.VolumeId, c.SizeBytes, Format(c.Format)), c, lockTimeout), ct).ConfigureAwait(false);
                return Success(new VolumeCreated { CommandId = c.CommandId, VolumeId = c.VolumeId, Share = export, Timestamp = Now }, r);
            }
            case DeleteVolume c:
            {
                var r = await engine.DeleteVolumeAsync(Guarded(new DeleteVolumeRequest(export, c.VolumeId), c, lockTimeout), ct).ConfigureAwait(false);
                return Success(new VolumeDeleted { CommandId = c.CommandId, VolumeId = c.VolumeId, Share = export, Timestamp = Now }, r);
            }
            case CreateSnapshot c:
            {
                var r = await engine.CreateSnapshotAsync(Guarded(new CreateSnapshotRequest(export, c.VolumeId, c.SnapshotId, c.VolumeSizeBytes), c, lockTimeout), ct).ConfigureAwait(false);
                return Success(new SnapshotCreated { CommandId = c.CommandId, VolumeId = c.VolumeId, SnapshotId = c.SnapshotId, Share = export, Timestamp = Now }, r);
            }
            case DeleteSnapshot c:
            {
                var r = await engine.DeleteSnapshotAsync(Guarded(new DeleteSnapshotRequest(export, c.VolumeId, c.SnapshotId) { OnlyIfNothingToMove = inline }, c, lockTimeout), progress, ct).ConfigureAwait(false);
                return r.Outcome == OperationOutcome.NotStarted ? null : Success(new SnapshotDeleted { CommandId = c.CommandId, VolumeId = c.VolumeId, SnapshotId = c.SnapshotId, Share = export, Timestamp = Now }, r);
            }
            case CreateVolumeFromSnapshot c:
            {
                var r = await engine.CreateVolumeFromSnapshotAsync(Guarded(new CreateVolumeFromSnapshotRequest(export, c.VolumeId, c.SnapshotId, c.NewVolumeId, Format(c.TargetFormat), c.NewSizeBytes, c.TargetShare), c, lockTimeout), progress, ct).ConfigureAwait(false);
                return Success(new VolumeCloned { CommandId = c.CommandId, VolumeId = c.VolumeId, NewVolumeId = c.NewVolumeId, SnapshotId = c.SnapshotId, Share = export, Timestamp = Now }, r);
            }
            case CloneVolume c:
            {
                var r = await engine.CloneVolumeAsync(Guarded(new CloneVolumeRequest(export, c.VolumeId, c.NewVolumeId, Format(c.TargetFormat), c.NewSizeBytes, c.TargetShare), c, lockTimeout), progress, ct).ConfigureAwait(false);
                return Success(new VolumeCloned { CommandId = c.CommandId, VolumeId = c.VolumeId, NewVolumeId = c.NewVolumeId, Share = export, Timestamp = Now }, r);
            }
            case RevertToSnapshot c:
            {
                var r = await engine.RevertToSnapshotAsync(Guarded(new RevertToSnapshotRequest(export, c.VolumeId, c.SnapshotId), c, lockTimeout), ct).ConfigureAwait(false);
                return Success(new VolumeReverted { CommandId = c.CommandId, VolumeId = c.VolumeId, SnapshotId = c.SnapshotId, Share = export, Timestamp = Now }, r);
            }
            case ExtendVolume c:
            {
                var r = await engine.ExtendVolumeAsync(Guarded(new ExtendVolumeRequest(export, c.VolumeId, c.NewSizeBytes), c, lockTimeout), ct).ConfigureAwait(false);
                return Success(new VolumeExtended { CommandId = c.CommandId, VolumeId = c.VolumeId, NewSizeBytes = c.NewSizeBytes, Share = export, Timestamp = Now }, r);
            }
            case GetChangedExtents c:
            {
                var changed = await engine.GetChangedExtentsAsync(export, c.VolumeId,
                    c.FromSnapshotId is { } f ? VolumePoint.Snapshot(f) : VolumePoint.Base,
                    c.ToSnapshotId is { } t ? VolumePoint.Snapshot(t) : VolumePoint.Now, Format(c.BaseFormat), ct).ConfigureAwait(false);
                var ranges = changed.Extents.Select(e => new ExtentRange(e.Offset, e.Length)).ToList();
                var listed = ranges.Count <= ChangedExtentsListed.MaxInlineExtents;
                return new ChangedExtentsListed
                {
                    CommandId = c.CommandId, VolumeId = c.VolumeId, Share = export, Timestamp = Now,
                    FromSnapshotId = c.FromSnapshotId, ToSnapshotId = c.ToSnapshotId, VirtualSize = changed.VirtualSize,
                    TotalBytes = changed.TotalBytes, ExtentCount = ranges.Count,
                    Extents = listed ? ranges : null,
                    ExtentsFile = listed ? null : ChangedExtentsFile.Write(share, c.CommandId, changed.Extents, engineOptions.Value.NewFileMode),
                    Message = $"{ranges.Count} range(s), {changed.TotalBytes} bytes may differ between {changed.From} and {changed.To}",
                };
            }
            default:
                return Failed(command, ErrorCodes.InvalidRequest, $"Unknown command type {command.GetType().Name}.");
        }
    }

    private static DateTimeOffset Now => DateTimeOffset.UtcNow;

    private static T Guarded<T>(T request, VolumeCommand c, TimeSpan? lockTimeout)
        where T : VolumeRequest =>
        request with { EncryptionKeyId = c.EncryptionKeyId, Attached = c.Attached, BaseFormat = Format(c.BaseFormat), LockTimeout = lockTimeout };

    private static ImageFormat? Format(VolumeFormat? f) => CommandValidation.ToImageFormat(f);

    private static ITerminalEvent Success(VolumeEvent e, OperationResult r) =>
        e with { AlreadyDone = r.Outcome == OperationOutcome.AlreadyDone, ActiveFile = r.ActiveFile, Message = r.Message };
}
