using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace NfsVolumeWorker.Oslo.Wire;

/// <summary>An RPC request (call or cast) as oslo.messaging's AMQP driver sends it.</summary>
public sealed record OsloRequest
{
    public required string Method { get; init; }
    public required JsonObject Args { get; init; }
    public string? Version { get; init; }
    public string? Namespace { get; init; }

    /// <summary>Set on calls: the id the reply must echo.</summary>
    public string? MsgId { get; init; }

    /// <summary>Set on calls: the queue the reply goes to (default exchange).</summary>
    public string? ReplyQueue { get; init; }

    public string? UniqueId { get; init; }

    /// <summary>The request context: the <c>_context_</c> entries without their prefix.</summary>
    public required JsonObject Context { get; init; }

    public bool IsCall => MsgId is not null && ReplyQueue is not null;

    public static OsloRequest From(JsonObject message)
    {
        var method = Str(message, "method");
        if (string.IsNullOrEmpty(method))
        {
            throw new OsloFormatException("The message names no method.");
        }
        var context = new JsonObject();
        foreach (var (key, value) in message)
        {
            if (key.StartsWith("_context_", StringComparison.Ordinal))
            {
                context[key["_context_".Length..]] = value?.DeepClone();
            }
        }
        return new OsloRequest
        {
            Method = method,
            Args = message["args"] as JsonObject ?? [],
            Version = Str(message, "version"),
            Namespace = Str(message, "namespace"),
            MsgId = Str(message, "_msg_id"),
            ReplyQueue = Str(message, "_reply_q"),
            UniqueId = Str(message, "_unique_id"),
            Context = context,
        };
    }

    internal static string? Str(JsonObject o, string name) =>
        o.TryGetPropertyValue(name, out var n) && n is not null
            ? n.GetValueKind() switch
            {
                JsonValueKind.String => n.GetValue<string>(),
                JsonValueKind.Number => n.ToJsonString(),
                JsonValueKind.True => "True",
                JsonValueKind.False => "False",
                _ => null,
            }
            : null;

    /// <summary>The context as <c>_context_*</c> entries again (notifications carry it, like oslo's notifier).</summary>
    public JsonObject PackedContext()
    {
        var o = new JsonObject();
        foreach (var (k, v) in Context)
        {
            o["_context_" + k] = v?.DeepClone();
        }
        return o;
    }

    /// <summary>Cinder's request id (<c>req-…</c>) from the context: what its own logs are searched by.</summary>
    public string? RequestId => Str(Context, "request_id");

    /// <summary>A one-line description for logs: method, version, ids, user/project, with every secret removed.</summary>
    public string Describe() => string.Create(CultureInfo.InvariantCulture,
        $"{(IsCall ? "call" : "cast")} {Method} v{Version ?? "?"} unique_id={UniqueId} msg_id={MsgId} request_id={RequestId} user={Str(Context, "user_id")} project={Str(Context, "project_id")}");
}
