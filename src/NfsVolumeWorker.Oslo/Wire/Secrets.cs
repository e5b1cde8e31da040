using System.Text.Json.Nodes;

namespace NfsVolumeWorker.Oslo.Wire;

/// <summary>Removes secrets from oslo messages before they are logged: the request context's auth token
/// (and every other key that names a token, password or secret), at any depth.</summary>
public static class Secrets
{
    public const string Mask = "***";

    public static bool IsSecretKey(string key)
    {
        var k = key.ToUpperInvariant();
        return k.Contains("TOKEN", StringComparison.Ordinal) || k.Contains("PASSWORD", StringComparison.Ordinal)
            || k.Contains("SECRET", StringComparison.Ordinal) || k.Contains("AUTH_PASS", StringComparison.Ordinal)
            || k is "_CONTEXT_SERVICE_CATALOG" || k.EndsWith("CREDENTIALS", StringComparison.Ordinal);
    }

    /// <summary>A deep copy of <paramref name="node"/> with every secret value replaced by <see cref="Mask"/>.</summary>
    public static JsonNode? Redact(JsonNode? node)
    {
        switch (node)
        {
            case JsonObject o:
                var copy = new JsonObject();
                foreach (var (k, v) in o)
                {
                    copy[k] = IsSecretKey(k) && v is not null ? JsonValue.Create(Mask) : Redact(v);
                }
                return copy;
            case JsonArray a:
                var arr = new JsonArray();
                foreach (var v in a)
                {
                    arr.Add(Redact(v));
                }
                return arr;
            default:
                return node?.DeepClone();
        }
    }

    /// <summary>JSON text of <paramref name="node"/> without secrets.</summary>
    public static string ToLogString(JsonNode? node) => Redact(node)?.ToJsonString() ?? "null";
}
