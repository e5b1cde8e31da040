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
        var outer = Parse(body, "The message");
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
        return Parse(Encoding.UTF8.GetBytes(inner.GetValue<string>()), "oslo.message") as JsonObject
            ?? throw new OsloFormatException("oslo.message is not a JSON object.");
    }

    private static readonly JsonDocumentOptions Strict = new() { AllowDuplicateProperties = false };

    /// <summary>Parses <paramref name="json"/>, refusing up front what a JsonNode would only throw on when it is
    /// used, far from here: a key twice in one object (JsonObject throws ArgumentException on first access;
    /// Python keeps the last, so the sender's meaning is unclear), and a string or key that is not valid UTF-8
    /// or escapes half a surrogate pair (InvalidOperationException when read).</summary>
    private static JsonNode? Parse(ReadOnlySpan<byte> json, string what)
    {
        try
        {
            var reader = new Utf8JsonReader(json, new JsonReaderOptions { MaxDepth = Strict.MaxDepth });
            while (reader.Read())
            {
                if (reader.TokenType is JsonTokenType.PropertyName or JsonTokenType.String)
                {
                    _ = reader.GetString();
                }
            }
            return JsonNode.Parse(json, documentOptions: Strict);
        }
        catch (JsonException e)
        {
            throw new OsloFormatException($"{what} is not JSON: {e.Message}", e);
        }
        catch (InvalidOperationException e)
        {
            throw new OsloFormatException($"{what} holds a string that is not valid Unicode text: {e.Message}", e);
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
