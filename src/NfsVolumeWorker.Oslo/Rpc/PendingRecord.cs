using System.Text.Json;
using System.Text.Json.Nodes;
using NfsVolumeWorker.Oslo.Wire;

namespace NfsVolumeWorker.Oslo.Rpc;

/// <summary>What the adapter keeps on the share for one accepted command until its <c>.end</c>/<c>.error</c>
/// notification is sent: the notification's details and where the command runs. The request context is kept
/// without its secrets (auth token, service catalog, ...): a notification sent from this record carries them as
/// null.</summary>
public sealed record PendingRecord(Guid CommandId, Guid VolumeId, string? Share, DateTimeOffset AcceptedAt, PendingNotification Notification)
{
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    public static PendingRecord For(Guid commandId, Guid volumeId, string? share, DateTimeOffset acceptedAt, PendingNotification n) =>
        new(commandId, volumeId, share, acceptedAt, n with { Context = WithoutSecrets(n.Context) });

    public byte[] ToBytes() => JsonSerializer.SerializeToUtf8Bytes(this, Json);

    public static PendingRecord FromBytes(byte[] bytes) => JsonSerializer.Deserialize<PendingRecord>(bytes, Json) ?? throw new JsonException("empty pending record");

    private static JsonObject WithoutSecrets(JsonObject context)
    {
        var copy = new JsonObject();
        foreach (var (k, v) in context)
        {
            copy[k] = Secrets.IsSecretKey(k) ? null : v?.DeepClone();
        }
        return copy;
    }
}
