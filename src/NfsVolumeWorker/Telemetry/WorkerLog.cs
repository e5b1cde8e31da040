namespace NfsVolumeWorker.Telemetry;

/// <summary>The host's log messages (event ids 3000-3099).</summary>
internal static partial class WorkerLog
{
    [LoggerMessage(3000, LogLevel.Debug, "Routed {CommandType} {CommandId} of volume {VolumeId} to partition {Partition}")]
    public static partial void Routed(ILogger logger, string commandType, Guid commandId, Guid volumeId, int partition);

    [LoggerMessage(3001, LogLevel.Information, "Accepted {CommandType} {CommandId} of volume {VolumeId} on partition {Partition}")]
    public static partial void Accepted(ILogger logger, string commandType, Guid commandId, Guid volumeId, int partition);

    [LoggerMessage(3002, LogLevel.Information, "{CommandType} {CommandId} of volume {VolumeId} was received again; not running it twice")]
    public static partial void DuplicateCommand(ILogger logger, string commandType, Guid commandId, Guid volumeId);

    [LoggerMessage(3003, LogLevel.Warning, "Rejected {CommandType} {CommandId} of volume {VolumeId}: {Code}: {Reason}")]
    public static partial void Rejected(ILogger logger, string commandType, Guid commandId, Guid volumeId, string code, string reason);

    [LoggerMessage(3004, LogLevel.Information, "{CommandType} {CommandId} of volume {VolumeId} finished: {Outcome} in {ElapsedMs} ms")]
    public static partial void Finished(ILogger logger, string commandType, Guid commandId, Guid volumeId, string outcome, long elapsedMs);

    [LoggerMessage(3005, LogLevel.Warning, "{CommandType} {CommandId} failed with transient {Code} (attempt {Attempt}); retrying in {DelaySeconds} s: {Reason}")]
    public static partial void Retrying(ILogger logger, string commandType, Guid commandId, string code, int attempt, double delaySeconds, string reason);

    [LoggerMessage(3006, LogLevel.Error, "Draining the inbox of volume {VolumeId} on {Share} failed (attempt {Attempt}); trying again in {DelaySeconds} s")]
    public static partial void DrainFailed(ILogger logger, Guid volumeId, string share, int attempt, double delaySeconds, Exception exception);

    [LoggerMessage(3007, LogLevel.Error, "Inbox entry {Path} cannot be read ({Reason}); moved aside as .unreadable")]
    public static partial void UnreadableInboxEntry(ILogger logger, string path, string reason);

    [LoggerMessage(3008, LogLevel.Warning, "Scanning inboxes on {Share} failed: {Reason}")]
    public static partial void SweepFailed(ILogger logger, string share, string reason);

    [LoggerMessage(3009, LogLevel.Information, "Pruned {Count} old command outcomes on {Share}")]
    public static partial void PrunedOutcomes(ILogger logger, int count, string share);

    [LoggerMessage(3010, LogLevel.Warning, "Shutting down: cancelling {Count} running operations; they resume from the share on the next owner")]
    public static partial void ShutdownCancelling(ILogger logger, int count);

    [LoggerMessage(3011, LogLevel.Information, "Shutting down: no new commands; waiting up to {Seconds} s for {Count} running volumes")]
    public static partial void Draining(ILogger logger, int count, double seconds);

    [LoggerMessage(3012, LogLevel.Warning, "Second stop signal: cancelling running operations now")]
    public static partial void SecondSignal(ILogger logger);

    [LoggerMessage(3013, LogLevel.Debug, "Progress event for command {CommandId} not published: {Reason}")]
    public static partial void ProgressNotPublished(ILogger logger, Guid commandId, string reason);

    [LoggerMessage(3014, LogLevel.Information, "NfsVolumeWorker {Instance} serving {ShareCount} share(s) [{Shares}], {Partitions} partitions, broker {Broker}, qemu-img {QemuImgVersion}")]
    public static partial void Started(ILogger logger, string instance, int shareCount, string shares, int partitions, string broker, string qemuImgVersion);

    [LoggerMessage(3015, LogLevel.Error, "{CommandType} {CommandId} of volume {VolumeId} failed unexpectedly; it ends as InternalError and is not retried")]
    public static partial void UnexpectedFailure(ILogger logger, string commandType, Guid commandId, Guid volumeId, Exception exception);

    [LoggerMessage(3016, LogLevel.Error, "Outcome record {Path} cannot be read ({Reason}): a crash tore it before it was durable, so its event never went out; the command runs again (it is idempotent) and a new record replaces it")]
    public static partial void UnreadableOutcome(ILogger logger, string path, string reason);

    [LoggerMessage(3017, LogLevel.Information, "{CommandType} {CommandId} of volume {VolumeId} finished earlier ({Outcome}); its terminal event was published again")]
    public static partial void Republished(ILogger logger, string commandType, Guid commandId, Guid volumeId, string outcome);

    [LoggerMessage(3018, LogLevel.Error, "Share {Share} is not available; its commands wait (new ones fail with ShareUnavailable) until it is back: {Reason}")]
    public static partial void ShareUnavailable(ILogger logger, string share, string reason);

    [LoggerMessage(3019, LogLevel.Information, "Share {Share} is available again; its waiting commands run")]
    public static partial void ShareAvailableAgain(ILogger logger, string share);

    [LoggerMessage(3022, LogLevel.Information, "Stopped while starting: what had started (partition consumers, the bus) was stopped as at any stop; the other instances take the partitions over")]
    public static partial void StoppedWhileStarting(ILogger logger);

    [LoggerMessage(3023, LogLevel.Critical, "Could not start, so stopped what had started and exits with 1: {Reason}")]
    public static partial void StartFailed(ILogger logger, string reason);

    [LoggerMessage(3024, LogLevel.Error, "Stopping after a failed start failed too: {Reason}")]
    public static partial void StopAfterFailedStartFailed(ILogger logger, string reason);

    [LoggerMessage(3030, LogLevel.Information, "Removed {Count} empty inbox directories on {Share} ({Left} more to go): the sweep's cost falls to the volumes with waiting work")]
    public static partial void RemovedEmptyInboxes(ILogger logger, int count, string share, int left);

    [LoggerMessage(3040, LogLevel.Information, "Running {CommandType} {CommandId} of volume {VolumeId} from partition {Partition} inline: nothing of its volume waits or runs, so no inbox entry")]
    public static partial void RunningInline(ILogger logger, string commandType, Guid commandId, Guid volumeId, int partition);

    [LoggerMessage(3041, LogLevel.Information, "{CommandType} {CommandId} of volume {VolumeId} failed inline with transient {Code}; queued in its inbox, whose drain loop retries it: {Reason}")]
    public static partial void InlineDeferred(ILogger logger, string commandType, Guid commandId, Guid volumeId, string code, string reason);

    [LoggerMessage(3042, LogLevel.Debug, "{CommandType} {CommandId} of volume {VolumeId} would move data, so it does not run inline; queued in its inbox")]
    public static partial void InlineNotStarted(ILogger logger, string commandType, Guid commandId, Guid volumeId);

    [LoggerMessage(3050, LogLevel.Debug, "Outcome record of {CommandId} on share {Share} kept no sticky bit (the share drops it, or another user owns the record): marked published with a {CommandId}.published file instead, one more new file")]
    public static partial void PublishedMarkAsFile(ILogger logger, Guid commandId, string share);

    [LoggerMessage(3020, LogLevel.Information, "oslo adapter for {Host} is a standby: another instance serves it ({Reason}); taking over when that one stops or dies (lease on {Share})")]
    public static partial void AdapterStandby(ILogger logger, string host, string share, string reason);

    [LoggerMessage(3021, LogLevel.Information, "oslo adapter for {Host} holds the lease on {Share} (took over from another instance: {TookOver}); serving its queues")]
    public static partial void AdapterLeaseTaken(ILogger logger, string host, string share, bool tookOver);
}
