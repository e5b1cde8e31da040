using System.Text.Json;
using System.Text.Json.Serialization;
using NfsVolumeWorker.Contracts;

namespace NfsVolumeWorker.Messaging;

/// <summary>What the worker keeps in a volume's inbox on the share for one accepted command.</summary>
/// <param name="CommandType">A <see cref="CommandCatalog"/> name.</param>
/// <param name="Command">The command as JSON.</param>
/// <param name="Partition">The partition it arrived on.</param>
/// <param name="ReceivedAt">When it was accepted.</param>
/// <param name="TraceParent">W3C trace context of the message, so the operation's trace continues the message's.</param>
public sealed record InboxRecord(string CommandType, JsonElement Command, int Partition, DateTimeOffset ReceivedAt, string? TraceParent)
{
    public static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web)
    {
        Converters = { new JsonStringEnumConverter() },
    };

    public static InboxRecord For(VolumeCommand command, int partition, string? traceParent) =>
        new(command.GetType().Name, JsonSerializer.SerializeToElement(command, command.GetType(), Json), partition, DateTimeOffset.UtcNow, traceParent);

    public VolumeCommand ToCommand() =>
        CommandCatalog.ByName.TryGetValue(CommandType, out var type)
            ? (VolumeCommand)(Command.Deserialize(type, Json) ?? throw new JsonException("empty command"))
            : throw new JsonException($"unknown command type '{CommandType}'");

    public byte[] ToBytes() => JsonSerializer.SerializeToUtf8Bytes(this, Json);

    public static InboxRecord FromBytes(byte[] bytes) => JsonSerializer.Deserialize<InboxRecord>(bytes, Json) ?? throw new JsonException("empty inbox record");
}

/// <summary>A command's recorded terminal event, kept so a repeated command gets the very same event.</summary>
/// <param name="EventType">The event's type name (a Contracts type).</param>
/// <param name="Event">The event as JSON.</param>
/// <param name="Published">True once the broker confirmed the event, in records of format 1; format 2 leaves it false
/// and marks the record with <see cref="Storage.Inbox.CommandOutcomes.MarkPublished"/> instead.</param>
public sealed record OutcomeRecord(string EventType, JsonElement Event, bool Published)
{
    public byte[] ToBytes() => JsonSerializer.SerializeToUtf8Bytes(this, InboxRecord.Json);

    public static OutcomeRecord FromBytes(byte[] bytes) => JsonSerializer.Deserialize<OutcomeRecord>(bytes, InboxRecord.Json) ?? throw new JsonException("empty outcome record");

    /// <summary>The record, or null when the bytes are not a readable record (damage on the share: the
    /// command then runs again, which its idempotence makes safe).</summary>
    public static OutcomeRecord? TryFromBytes(byte[] bytes)
    {
        try
        {
            var record = FromBytes(bytes);
            _ = record.ToEvent();
            return record;
        }
        catch (JsonException)
        {
            return null;
        }
    }

    /// <summary>The outcome as logs and metrics name it: the error code, <c>AlreadyDone</c> or <c>Completed</c>.</summary>
    public string Code => CodeOf(ToEvent());

    /// <summary>The outcome of <paramref name="e"/> as logs and metrics name it (see <see cref="Code"/>).</summary>
    public static string CodeOf(ITerminalEvent e) => e switch
    {
        CommandFailed f => f.ErrorCode,
        { AlreadyDone: true } => "AlreadyDone",
        _ => "Completed",
    };

    public static OutcomeRecord For(ITerminalEvent e) => new(e.GetType().Name, JsonSerializer.SerializeToElement(e, e.GetType(), InboxRecord.Json), false);

    public ITerminalEvent ToEvent() =>
        MessageCatalog.TerminalEventNamed(EventType) is { } type
            ? (ITerminalEvent)(Event.Deserialize(type, InboxRecord.Json) ?? throw new JsonException("empty event"))
            : throw new JsonException($"unknown event type '{EventType}'");
}
