using System.Text.Json.Nodes;

namespace NfsVolumeWorker.Oslo.Wire;

/// <summary>An exception as oslo.messaging serializes it for a reply (<c>common.serialize_remote_exception</c>):
/// a JSON string of class, module, message, tb, args, kwargs.</summary>
public sealed record RemoteFailure(string Class, string Module, string Message, IReadOnlyDictionary<string, string>? Kwargs = null)
{
    public string ToJsonString()
    {
        var kwargs = new JsonObject();
        foreach (var (k, v) in Kwargs ?? new Dictionary<string, string>())
        {
            kwargs[k] = v;
        }
        return new JsonObject
        {
            ["class"] = Class,
            ["module"] = Module,
            ["message"] = Message,
            ["tb"] = new JsonArray($"Traceback (most recent call last):\n", $"{Module}.{Class}: {Message}\n"),
            ["args"] = new JsonArray(Message),
            ["kwargs"] = kwargs,
        }.ToJsonString();
    }

    public static RemoteFailure NoSuchMethod(string method) =>
        new("NoSuchMethod", "oslo_messaging.rpc.dispatcher", $"Endpoint does not support RPC method {method}");

    public static RemoteFailure UnsupportedVersion(string? version, string method) =>
        new("UnsupportedVersion", "oslo_messaging.rpc.dispatcher", $"Endpoint does not support RPC version {version}. Attempted method: {method}");

    public static RemoteFailure InvalidVolume(string reason) =>
        new("InvalidVolume", "cinder.exception", $"Invalid volume: {reason}", new Dictionary<string, string> { ["reason"] = reason });

    public static RemoteFailure VolumeNotFound(string volumeId) =>
        new("VolumeNotFound", "cinder.exception", $"Volume {volumeId} could not be found.", new Dictionary<string, string> { ["volume_id"] = volumeId });

    public static RemoteFailure InvalidInput(string reason) =>
        new("InvalidInput", "cinder.exception", $"Invalid input received: {reason}", new Dictionary<string, string> { ["reason"] = reason });
}
