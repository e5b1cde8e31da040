using System.Text;
using System.Text.Json;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Messaging;

namespace NfsVolumeWorker.Partitions;

/// <summary>A command decoded from a partition queue message.</summary>
/// <param name="Command">The command.</param>
/// <param name="TraceParent">W3C trace context of the message, when it carried one.</param>
public sealed record DecodedCommand(VolumeCommand Command, string? TraceParent);

/// <summary>Why a queue message is not a command the worker can accept.</summary>
public sealed class CommandDecodeException(string reason, Exception? inner = null, bool namesNoCommand = false) : Exception(reason, inner)
{
    /// <summary>True when the message is a readable envelope of a type that is not a command (MassTransit's
    /// "skipped" case), false when it cannot be read as one.</summary>
    public bool NamesNoCommand { get; } = namesNoCommand;
}

/// <summary>
/// Reads MassTransit's JSON envelope (<c>application/vnd.masstransit+json</c>), which is what native producers
/// publish to the ingress queue, and what the ingress router, the oslo bridge and producers routing directly put
/// on a partition queue: the command type
/// is the first <c>urn:message:NfsVolumeWorker.Contracts:&lt;Type&gt;</c> of <c>messageType</c> that names a
/// command, the command is <c>message</c>.
/// </summary>
public static class CommandEnvelope
{
    private const string UrnPrefix = MassTransitEnvelope.UrnPrefix;

    /// <summary>Why a message could not be decoded, for the dead letter and the log: the decoder's own reason, or the
    /// type and message of an exception it did not expect (a defect: the message is dead-lettered all the same).</summary>
    public static string Reason(Exception e) =>
        e is CommandDecodeException ? e.Message : $"unexpected {e.GetType().Name} while decoding: {e.Message}";

    /// <summary>Decodes <paramref name="body"/>; throws <see cref="CommandDecodeException"/> with a reason an
    /// operator can act on.</summary>
    public static DecodedCommand Decode(ReadOnlySpan<byte> body, IDictionary<string, object?>? headers)
    {
        JsonDocument document;
        try
        {
            var reader = new Utf8JsonReader(body);
            document = JsonDocument.ParseValue(ref reader);
        }
        catch (JsonException e)
        {
            throw new CommandDecodeException($"the body is not JSON: {e.Message}", e);
        }
        using (document)
        {
            try
            {
                return Read(document.RootElement, headers);
            }
            catch (InvalidOperationException e)
            {
                // JsonDocument checks structure, not the text of strings and names: one that is not UTF-8, or
                // escapes half a surrogate pair, fails only when read.
                throw new CommandDecodeException($"the envelope holds a string that is not valid Unicode text: {e.Message}", e);
            }
        }
    }

    private static DecodedCommand Read(JsonElement root, IDictionary<string, object?>? headers)
    {
        if (root.ValueKind != JsonValueKind.Object)
        {
            throw new CommandDecodeException("the body is not a JSON object (expected a MassTransit envelope)");
        }
        var type = CommandTypeOf(root)
            ?? throw new CommandDecodeException("messageType names no NfsVolumeWorker.Contracts command (expected e.g. \"" + UrnPrefix + "CreateSnapshot\")",
                namesNoCommand: true);
        if (!TryGet(root, "message", out var message) || message.ValueKind != JsonValueKind.Object)
        {
            throw new CommandDecodeException("the envelope has no \"message\" object");
        }
        VolumeCommand command;
        try
        {
            command = (VolumeCommand)(message.Deserialize(type, InboxRecord.Json) ?? throw new JsonException("null message"));
        }
        catch (Exception e) when (e is JsonException or NotSupportedException or InvalidOperationException)
        {
            throw new CommandDecodeException($"the message is not a valid {type.Name}: {e.Message}", e);
        }
        return new DecodedCommand(command, TraceParentOf(headers, root));
    }

    private static Type? CommandTypeOf(JsonElement root)
    {
        if (!TryGet(root, "messageType", out var types) || types.ValueKind != JsonValueKind.Array)
        {
            return null;
        }
        foreach (var t in types.EnumerateArray())
        {
            var urn = t.ValueKind == JsonValueKind.String ? t.GetString() : null;
            if (urn is not null && urn.StartsWith(UrnPrefix, StringComparison.Ordinal)
                && CommandCatalog.ByName.TryGetValue(urn[UrnPrefix.Length..], out var type))
            {
                return type;
            }
        }
        return null;
    }

    /// <summary>Headers that carry a W3C trace context: MassTransit 8 writes <c>Diagnostic-Id</c> (and
    /// <c>MT-Activity-Id</c>); other producers, as eShop does, <c>traceparent</c>.</summary>
    private static readonly string[] TraceHeaders = ["traceparent", "Diagnostic-Id", "MT-Activity-Id"];

    /// <summary>The trace context from the AMQP headers, else from the envelope's own headers.</summary>
    private static string? TraceParentOf(IDictionary<string, object?>? headers, JsonElement root)
    {
        foreach (var name in TraceHeaders)
        {
            if (headers is not null && headers.TryGetValue(name, out var value))
            {
                var text = value switch
                {
                    byte[] bytes => Encoding.UTF8.GetString(bytes),
                    string s => s,
                    _ => null,
                };
                if (!string.IsNullOrEmpty(text))
                {
                    return text;
                }
            }
        }
        if (TryGet(root, "headers", out var envelopeHeaders) && envelopeHeaders.ValueKind == JsonValueKind.Object)
        {
            foreach (var name in TraceHeaders)
            {
                if (TryGet(envelopeHeaders, name, out var tp) && tp.ValueKind == JsonValueKind.String)
                {
                    return tp.GetString();
                }
            }
        }
        return null;
    }

    private static bool TryGet(JsonElement e, string name, out JsonElement value)
    {
        foreach (var p in e.EnumerateObject())
        {
            if (string.Equals(p.Name, name, StringComparison.OrdinalIgnoreCase))
            {
                value = p.Value;
                return true;
            }
        }
        value = default;
        return false;
    }
}
