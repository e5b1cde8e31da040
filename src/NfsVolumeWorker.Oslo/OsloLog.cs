using Microsoft.Extensions.Logging;

namespace NfsVolumeWorker.Oslo;

/// <summary>Log lines of the adapter. Requests are described by <see cref="Wire.OsloRequest.Describe"/> (no
/// secrets); payloads only after <see cref="Wire.Secrets.Redact"/>. Event ids 4000-4099.</summary>
internal static partial class OsloLog
{
    [LoggerMessage(4001, LogLevel.Information, "oslo adapter serving {Host} on control exchange {Exchange}: queues {Queues}, fanout {Fanouts}, broker {Broker}")]
    public static partial void Serving(ILogger logger, string host, string exchange, string queues, string fanouts, string broker);

    [LoggerMessage(4002, LogLevel.Information, "oslo {Request} -> {Command} {CommandId} for volume {VolumeId} (accepted)")]
    public static partial void Accepted(ILogger logger, string request, string command, Guid commandId, Guid volumeId);

    [LoggerMessage(4003, LogLevel.Warning, "oslo {Request} refused: {FailureClass}: {Message}")]
    public static partial void Refused(ILogger logger, string request, string failureClass, string message);

    [LoggerMessage(4004, LogLevel.Warning, "oslo message on {Queue} is unreadable and was dropped: {Message}")]
    public static partial void Unreadable(ILogger logger, string queue, string message);

    [LoggerMessage(4006, LogLevel.Debug, "oslo {Request} answered")]
    public static partial void Answered(ILogger logger, string request);

    [LoggerMessage(4007, LogLevel.Information, "oslo notification {EventType} from {PublisherId} for command {CommandId}")]
    public static partial void Notified(ILogger logger, string eventType, string publisherId, Guid commandId);

    [LoggerMessage(4008, LogLevel.Error, "oslo {Request} failed unexpectedly")]
    public static partial void Failed(ILogger logger, Exception exception, string request);

    [LoggerMessage(4009, LogLevel.Warning, "oslo adapter cannot reach the broker {Broker}; retrying")]
    public static partial void BrokerUnreachable(ILogger logger, Exception exception, string broker);

    [LoggerMessage(4010, LogLevel.Debug, "oslo request body (redacted): {Body}")]
    public static partial void Body(ILogger logger, string body);

    [LoggerMessage(4011, LogLevel.Warning, "oslo adapter: unreadable native event on {Exchange}: {Message}")]
    public static partial void UnreadableEvent(ILogger logger, string exchange, string message);

    [LoggerMessage(4012, LogLevel.Debug, "oslo duplicate {Request}: same _unique_id as an earlier delivery, command {CommandId} runs once")]
    public static partial void Duplicate(ILogger logger, string request, Guid commandId);

    [LoggerMessage(4013, LogLevel.Warning, "oslo {Request}: the notification record of command {CommandId} could not be written to its share; its .end/.error is sent only if this instance lives until the command ends")]
    public static partial void NotPersisted(ILogger logger, Exception exception, string request, Guid commandId);

    [LoggerMessage(4014, LogLevel.Information, "oslo notification for command {CommandId} sent from its record on share {Share} ({How})")]
    public static partial void SentFromShare(ILogger logger, Guid commandId, string share, string how);

    [LoggerMessage(4015, LogLevel.Warning, "oslo notification record of command {CommandId} on share {Share} is unreadable and was left in place: {Message}")]
    public static partial void UnreadablePending(ILogger logger, Guid commandId, string share, string message);

    [LoggerMessage(4016, LogLevel.Warning, "oslo adapter: looking for notification records of finished commands failed")]
    public static partial void RecoveryFailed(ILogger logger, Exception exception);

    [LoggerMessage(4017, LogLevel.Information, "oslo adapter at start: {Waiting} notification records on the shares, {Sent} of finished commands sent")]
    public static partial void Recovered(ILogger logger, int waiting, int sent);

    /// <summary>Replaces 4005 (the message went back to the queue, where a later one could pass it).</summary>
    [LoggerMessage(4018, LogLevel.Warning, "oslo {Request} failed (attempt {Attempt}); its queue waits {Seconds} s and tries it again, before any later message: {Reason}")]
    public static partial void Retrying(ILogger logger, string request, int attempt, double seconds, string reason);
}
