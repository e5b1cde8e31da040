using System.Text.Json.Nodes;
using NfsVolumeWorker.Contracts;

namespace NfsVolumeWorker.Oslo.Wire;

/// <summary>An exception as oslo.messaging serializes it for a reply (<c>common.serialize_remote_exception</c>):
/// a JSON string of class, module, message, tb, args, kwargs. The class stays the one Cinder's client expects; the
/// worker's <see cref="ErrorCode"/> travels with it: at the end of the message (<c>[error_code: X]</c>, which every
/// client sees, a <c>RemoteError</c> too) and, for <c>cinder.exception</c> classes, as kwarg <c>error_code</c>.</summary>
public sealed record RemoteFailure(string Class, string Module, string Message, ErrorCode Code, IReadOnlyDictionary<string, string>? Kwargs = null)
{
    /// <summary>The kwarg (and <c>.error</c> notification payload key) that carries the code. Not <c>code</c>:
    /// CinderException keeps its HTTP status there.</summary>
    public const string ErrorCodeKey = "error_code";

    /// <summary>The module of Cinder's exceptions: their constructors take any kwargs (the oslo dispatcher's and the
    /// builtins' do not, and a client that allows their module would fail to rebuild them with an extra one).</summary>
    public const string CinderExceptionModule = "cinder.exception";

    /// <summary>The message as sent: <see cref="Message"/> and the code.</summary>
    public string WireMessage => $"{Message} [{ErrorCodeKey}: {Code.Name}]";

    public string ToJsonString()
    {
        var kwargs = new JsonObject();
        foreach (var (k, v) in Kwargs ?? new Dictionary<string, string>())
        {
            kwargs[k] = v;
        }
        if (Module == CinderExceptionModule)
        {
            kwargs[ErrorCodeKey] = Code.Name;
        }
        var message = WireMessage;
        return new JsonObject
        {
            ["class"] = Class,
            ["module"] = Module,
            ["message"] = message,
            ["tb"] = new JsonArray($"Traceback (most recent call last):\n", $"{Module}.{Class}: {message}\n"),
            ["args"] = new JsonArray(message),
            ["kwargs"] = kwargs,
        }.ToJsonString();
    }

    public static RemoteFailure NoSuchMethod(string method) =>
        new("NoSuchMethod", "oslo_messaging.rpc.dispatcher", $"Endpoint does not support RPC method {method}", ErrorCodes.UnsupportedRequest);

    public static RemoteFailure UnsupportedVersion(string? version, string method) =>
        new("UnsupportedVersion", "oslo_messaging.rpc.dispatcher", $"Endpoint does not support RPC version {version}. Attempted method: {method}", ErrorCodes.UnsupportedRequest);

    public static RemoteFailure InvalidVolume(string reason, ErrorCode code) =>
        new("InvalidVolume", CinderExceptionModule, $"Invalid volume: {reason}", code, new Dictionary<string, string> { ["reason"] = reason });

    public static RemoteFailure VolumeNotFound(string volumeId) =>
        new("VolumeNotFound", CinderExceptionModule, $"Volume {volumeId} could not be found.", ErrorCodes.VolumeNotFound, new Dictionary<string, string> { ["volume_id"] = volumeId });

    public static RemoteFailure InvalidInput(string reason) =>
        new("InvalidInput", CinderExceptionModule, $"Invalid input received: {reason}", ErrorCodes.InvalidRequest, new Dictionary<string, string> { ["reason"] = reason });

    /// <summary>A failure nobody foresaw (a defect), named by its .NET type.</summary>
    public static RemoteFailure Unexpected(Exception e) => new(e.GetType().Name, "builtins", e.Message, ErrorCodes.InternalError);
}
