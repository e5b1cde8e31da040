using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace NfsVolumeWorker.Contracts;

/// <summary>
/// MassTransit's JSON envelope (<c>application/vnd.masstransit+json</c>), written once for everything that
/// speaks it without MassTransit: <c>nfsvol send</c> and <c>nfsvol watch</c>, the worker's decoders, plain AMQP
/// producers, tests and benchmarks. A message of type <c>T</c> travels in the envelope's <c>message</c>, named by
/// <c>urn:message:NfsVolumeWorker.Contracts:T</c> in <c>messageType</c>, and is published to the fanout exchange
/// <c>NfsVolumeWorker.Contracts:T</c>, as MassTransit 8 does.
/// </summary>
public static class MassTransitEnvelope
{
    /// <summary>The content type MassTransit gives the envelope.</summary>
    public const string ContentType = "application/vnd.masstransit+json";

    /// <summary>What precedes a contract's type name in <c>messageType</c>.</summary>
    public const string UrnPrefix = "urn:message:" + ContractNamespace + ":";

    private const string ContractNamespace = "NfsVolumeWorker.Contracts";

    /// <summary>As MassTransit's System.Text.Json serializer writes messages: camelCase, enums as numbers, nulls left out.</summary>
    public static readonly JsonSerializerOptions Write = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    /// <summary>The exchange MassTransit publishes a contract type to: <c>NfsVolumeWorker.Contracts:CreateSnapshot</c>.</summary>
    public static string ExchangeOf(Type type)
    {
        ArgumentNullException.ThrowIfNull(type);
        return $"{ContractNamespace}:{type.Name}";
    }

    /// <summary>The message type URN of a contract type: <c>urn:message:NfsVolumeWorker.Contracts:CreateSnapshot</c>.</summary>
    public static string UrnOf(Type type)
    {
        ArgumentNullException.ThrowIfNull(type);
        return UrnPrefix + type.Name;
    }

    /// <summary>The envelope around <paramref name="message"/>, as UTF-8 bytes.</summary>
    /// <param name="message">A command or event.</param>
    /// <param name="messageId">The envelope's (and the AMQP message's) id.</param>
    /// <param name="processName">Who sends it, for the envelope's <c>host</c> block.</param>
    public static byte[] Encode(object message, Guid messageId, string processName)
    {
        ArgumentNullException.ThrowIfNull(message);
        var type = message.GetType();
        var envelope = new JsonObject
        {
            ["messageId"] = messageId.ToString(),
            ["sentTime"] = DateTime.UtcNow.ToString("O", CultureInfo.InvariantCulture),
            ["messageType"] = new JsonArray(UrnOf(type)),
            ["message"] = JsonSerializer.SerializeToNode(message, type, Write),
            ["headers"] = new JsonObject(),
            ["host"] = new JsonObject { ["machineName"] = Environment.MachineName, ["processName"] = processName, ["processId"] = Environment.ProcessId },
        };
        return JsonSerializer.SerializeToUtf8Bytes(envelope);
    }

    /// <summary>
    /// Reads an envelope leniently, for watching events: the first contract type named in <c>messageType</c>, the
    /// <c>messageId</c> when it is a GUID, and the <c>message</c> object. False, never an exception, for anything else
    /// (the worker's command decoder is the strict one: it says why a message is refused).
    /// </summary>
    public static bool TryRead(ReadOnlySpan<byte> body, out EnvelopeContents contents)
    {
        contents = default;
        try
        {
            if (JsonNode.Parse(body) is not JsonObject envelope || envelope["message"] is not JsonObject message
                || envelope["messageType"] is not JsonArray types)
            {
                return false;
            }
            var typeName = types.Select(t => t is JsonValue v && v.TryGetValue<string>(out var s) ? s : null)
                .Where(s => s is not null && s.StartsWith(UrnPrefix, StringComparison.Ordinal))
                .Select(s => s![UrnPrefix.Length..]).FirstOrDefault();
            if (typeName is null)
            {
                return false;
            }
            Guid? id = envelope["messageId"] is JsonValue idValue && idValue.TryGetValue<string>(out var idText) && Guid.TryParse(idText, out var g) ? g : null;
            contents = new EnvelopeContents(typeName, id, message);
            return true;
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException)
        {
            // Not JSON, or text that is not valid Unicode (read only when a string is taken).
            return false;
        }
    }
}

/// <summary>What <see cref="MassTransitEnvelope.TryRead"/> found in an envelope.</summary>
/// <param name="TypeName">The contract type's name (<c>SnapshotCreated</c>).</param>
/// <param name="MessageId">The envelope's message id, when it is a GUID.</param>
/// <param name="Message">The message itself.</param>
public readonly record struct EnvelopeContents(string TypeName, Guid? MessageId, JsonObject Message);
