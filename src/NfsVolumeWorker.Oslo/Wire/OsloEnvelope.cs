using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace NfsVolumeWorker.Oslo.Wire;

/// <summary>oslo.messaging's envelope: <c>{"oslo.version": "2.0", "oslo.message": "&lt;JSON string&gt;"}</c>
/// (<c>oslo_messaging/_drivers/common.py</c> serialize_msg / deserialize_msg). A body without the envelope
/// (version 1 senders) is taken as the message itself.</summary>
public static class OsloEnvelope
{
    public const string Version = "2.0";

    /// <summary>The inner message of <paramref name="body"/>.</summary>
    /// <exception cref="OsloFormatException">Not JSON, not an object, or an envelope of an unsupported major version.</exception>
    public static JsonObject Decode(ReadOnlySpan<byte> body)
    {
        JsonNode? outer;
        try
        {
            outer = JsonNode.Parse(body);
        }
        catch (JsonException e)
        {
            throw new OsloFormatException($"The message is not JSON: {e.Message}", e);
        }
        if (outer is not JsonObject o)
        {
            throw new OsloFormatException("The message is not a JSON object.");
        }
        if (!o.TryGetPropertyValue("oslo.version", out var versionNode))
        {
            return o; // oslo 1.0: no envelope
        }
        var version = versionNode?.GetValueKind() == JsonValueKind.String ? versionNode.GetValue<string>() : null;
        if (version is null || !version.StartsWith("2.", StringComparison.Ordinal))
        {
            throw new OsloFormatException($"Unsupported oslo envelope version '{version}'.");
        }
        var inner = o["oslo.message"];
        if (inner is null || inner.GetValueKind() != JsonValueKind.String)
        {
            throw new OsloFormatException("The envelope has no oslo.message string.");
        }
        try
        {
            return JsonNode.Parse(inner.GetValue<string>()) as JsonObject
                ?? throw new OsloFormatException("oslo.message is not a JSON object.");
        }
        catch (JsonException e)
        {
            throw new OsloFormatException($"oslo.message is not JSON: {e.Message}", e);
        }
    }

    /// <summary>The envelope around <paramref name="message"/>, UTF-8.</summary>
    public static byte[] Encode(JsonObject message)
    {
        var outer = new JsonObject
        {
            ["oslo.version"] = Version,
            ["oslo.message"] = message.ToJsonString(),
        };
        return Encoding.UTF8.GetBytes(outer.ToJsonString());
    }
}

/// <summary>A message that cannot be read as oslo.messaging.</summary>
public sealed class OsloFormatException : Exception
{
    public OsloFormatException() { }
    public OsloFormatException(string message) : base(message) { }
    public OsloFormatException(string message, Exception inner) : base(message, inner) { }
}
