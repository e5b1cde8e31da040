using System.Text.Json.Nodes;

namespace NfsVolumeWorker.Oslo.Wire;

/// <summary>
/// The messages a cinder-volume sends, as oslo.messaging builds them (before <see cref="OsloEnvelope.Encode"/>): a
/// call's reply, a notification, and the capabilities cast to the schedulers. Built here once, for the adapter and
/// for the fuzz target that checks that no request can make them throw.
/// </summary>
public static class OsloMessages
{
    /// <summary>The one reply to a call (oslo's <c>_send_reply</c> with <c>ending</c>): a result or a failure.</summary>
    public static JsonObject Reply(OsloRequest request, JsonNode? result, RemoteFailure? failure)
    {
        ArgumentNullException.ThrowIfNull(request);
        return new JsonObject
        {
            ["result"] = result?.DeepClone(),
            ["failure"] = failure?.ToJsonString(),
            ["ending"] = true,
            ["_msg_id"] = request.MsgId,
            ["_unique_id"] = NewUniqueId(),
        };
    }

    /// <summary>A notification as oslo's messagingv2 driver sends it; the request context is flattened into the
    /// message with its <c>_context_</c> keys, as oslo does.</summary>
    public static JsonObject Notification(string publisherId, string eventType, string priority, JsonObject payload, JsonObject context, DateTimeOffset at)
    {
        ArgumentNullException.ThrowIfNull(payload);
        ArgumentNullException.ThrowIfNull(context);
        var message = new JsonObject
        {
            ["message_id"] = Guid.NewGuid().ToString(),
            ["publisher_id"] = publisherId,
            ["event_type"] = eventType,
            ["priority"] = priority,
            ["payload"] = payload.DeepClone(),
            ["timestamp"] = OsloTime.Notification(at),
            ["_unique_id"] = NewUniqueId(),
        };
        foreach (var (k, v) in context)
        {
            message[k] = v?.DeepClone();
        }
        return message;
    }

    /// <summary>What a cinder-volume casts on publish_service_capabilities: update_service_capabilities to the
    /// schedulers (cinder/scheduler/rpcapi.py, version 3.3), in the context of the request that asked for it.</summary>
    public static JsonObject CapabilitiesUpdate(string host, JsonObject capabilities, JsonObject context, DateTimeOffset at)
    {
        ArgumentNullException.ThrowIfNull(capabilities);
        ArgumentNullException.ThrowIfNull(context);
        var message = new JsonObject
        {
            ["method"] = "update_service_capabilities",
            ["args"] = new JsonObject
            {
                ["service_name"] = "volume",
                ["host"] = host,
                ["capabilities"] = capabilities.DeepClone(),
                ["cluster_name"] = null,
                ["timestamp"] = OsloTime.Iso(at),
            },
            ["version"] = "3.3",
            ["_unique_id"] = NewUniqueId(),
        };
        foreach (var (k, v) in context)
        {
            message[k] = v?.DeepClone();
        }
        return message;
    }

    private static string NewUniqueId() => Guid.NewGuid().ToString("N");
}
