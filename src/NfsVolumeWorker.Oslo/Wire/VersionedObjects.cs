using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace NfsVolumeWorker.Oslo.Wire;

/// <summary>An oslo.versionedobjects primitive: name, namespace, version, data. Decoding is tolerant: fields
/// that are unknown are kept but ignored, a newer minor or major version is read by field name, missing
/// fields read as null, and a field of an unexpected JSON kind reads as null instead of failing.</summary>
public sealed record VersionedObject(string Name, string? Namespace, string? Version, JsonObject Data)
{
    public const string NameKey = "versioned_object.name";
    public const string DataKey = "versioned_object.data";

    /// <summary>The object in <paramref name="node"/>, or null when it is not a versioned-object primitive.</summary>
    public static VersionedObject? From(JsonNode? node)
    {
        if (node is not JsonObject o || OsloRequest.Str(o, NameKey) is not { } name)
        {
            return null;
        }
        return new VersionedObject(name, OsloRequest.Str(o, "versioned_object.namespace"), OsloRequest.Str(o, "versioned_object.version"),
            o[DataKey] as JsonObject ?? []);
    }

    public string? Text(string field) => OsloRequest.Str(Data, field);

    public Guid? Uuid(string field) => Guid.TryParse(Text(field), out var g) ? g : null;

    public long? Number(string field) =>
        Data[field] is JsonValue v && v.GetValueKind() == JsonValueKind.Number && v.TryGetValue<long>(out var l) ? l
        : long.TryParse(Text(field), NumberStyles.Integer, CultureInfo.InvariantCulture, out var p) ? p : null;

    public bool? Boolean(string field) => Data[field]?.GetValueKind() switch
    {
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        _ => null,
    };

    public VersionedObject? Nested(string field) => From(Data[field]);

    /// <summary>A dict field (e.g. admin_metadata); a list of {key, value} items (older primitives of
    /// metadata) is read as a dict too.</summary>
    public IReadOnlyDictionary<string, string?> Dict(string field)
    {
        var result = new Dictionary<string, string?>(StringComparer.Ordinal);
        switch (Data[field])
        {
            case JsonObject o:
                foreach (var (k, v) in o)
                {
                    result[k] = v is JsonValue ? (v.GetValueKind() == JsonValueKind.String ? v.GetValue<string>() : v.ToJsonString()) : v?.ToJsonString();
                }
                break;
            case JsonArray a:
                foreach (var item in a.OfType<JsonObject>())
                {
                    if (OsloRequest.Str(item, "key") is { } k)
                    {
                        result[k] = OsloRequest.Str(item, "value");
                    }
                }
                break;
        }
        return result;
    }
}

/// <summary>The fields of Cinder's Volume object this worker uses (any version).</summary>
public sealed record CinderVolume
{
    public required Guid Id { get; init; }
    public long? SizeGb { get; init; }
    public string? ProviderLocation { get; init; }
    public string? Host { get; init; }
    public string? Status { get; init; }
    public string? AttachStatus { get; init; }
    public Guid? SnapshotId { get; init; }
    public Guid? SourceVolumeId { get; init; }
    public string? EncryptionKeyId { get; init; }
    public string? ProjectId { get; init; }
    public string? UserId { get; init; }
    public string? DisplayName { get; init; }
    public string? AvailabilityZone { get; init; }
    public string? VolumeTypeId { get; init; }
    public string? CreatedAt { get; init; }
    public string? LaunchedAt { get; init; }
    public IReadOnlyDictionary<string, string?> AdminMetadata { get; init; } = new Dictionary<string, string?>();
    public IReadOnlyDictionary<string, string?> Metadata { get; init; } = new Dictionary<string, string?>();
    public required VersionedObject Source { get; init; }

    /// <summary>The format recorded by Cinder (admin metadata <c>format</c>), if any.</summary>
    public string? Format => AdminMetadata.TryGetValue("format", out var f) ? f : null;

    public bool Attached => string.Equals(AttachStatus, "attached", StringComparison.Ordinal)
        || string.Equals(Status, "in-use", StringComparison.Ordinal);

    /// <summary>The volume in <paramref name="node"/>.</summary>
    /// <exception cref="OsloFormatException">Not a Volume primitive, or without a UUID id.</exception>
    public static CinderVolume From(JsonNode? node, string what = "volume")
    {
        var o = VersionedObject.From(node) ?? throw new OsloFormatException($"'{what}' is not a versioned object.");
        if (!string.Equals(o.Name, "Volume", StringComparison.Ordinal))
        {
            throw new OsloFormatException($"'{what}' is a {o.Name}, not a Volume.");
        }
        return new CinderVolume
        {
            Id = o.Uuid("id") ?? throw new OsloFormatException($"'{what}' has no UUID id."),
            SizeGb = o.Number("size"),
            ProviderLocation = o.Text("provider_location"),
            Host = o.Text("host"),
            Status = o.Text("status"),
            AttachStatus = o.Text("attach_status"),
            SnapshotId = o.Uuid("snapshot_id"),
            SourceVolumeId = o.Uuid("source_volid"),
            EncryptionKeyId = o.Text("encryption_key_id"),
            ProjectId = o.Text("project_id"),
            UserId = o.Text("user_id"),
            DisplayName = o.Text("display_name"),
            AvailabilityZone = o.Text("availability_zone"),
            VolumeTypeId = o.Text("volume_type_id"),
            CreatedAt = o.Text("created_at"),
            LaunchedAt = o.Text("launched_at"),
            AdminMetadata = o.Dict("admin_metadata"),
            Metadata = o.Dict("metadata"),
            Source = o,
        };
    }
}

/// <summary>The fields of Cinder's Snapshot object this worker uses (any version).</summary>
public sealed record CinderSnapshot
{
    public required Guid Id { get; init; }
    public required Guid VolumeId { get; init; }
    public long? VolumeSizeGb { get; init; }
    public string? Status { get; init; }
    public string? DisplayName { get; init; }
    public string? ProjectId { get; init; }
    public string? UserId { get; init; }
    public string? CreatedAt { get; init; }
    public string? ProviderLocation { get; init; }
    public IReadOnlyDictionary<string, string?> Metadata { get; init; } = new Dictionary<string, string?>();

    /// <summary>The snapshot's volume, when Cinder loaded it into the primitive.</summary>
    public CinderVolume? Volume { get; init; }

    public static CinderSnapshot From(JsonNode? node, string what = "snapshot")
    {
        var o = VersionedObject.From(node) ?? throw new OsloFormatException($"'{what}' is not a versioned object.");
        if (!string.Equals(o.Name, "Snapshot", StringComparison.Ordinal))
        {
            throw new OsloFormatException($"'{what}' is a {o.Name}, not a Snapshot.");
        }
        CinderVolume? volume = null;
        if (o.Nested("volume") is { Name: "Volume" })
        {
            try
            {
                volume = CinderVolume.From(o.Data["volume"], what + ".volume");
            }
            catch (OsloFormatException)
            {
                volume = null; // a partial nested volume is no reason to refuse the snapshot
            }
        }
        var volumeId = o.Uuid("volume_id") ?? volume?.Id ?? throw new OsloFormatException($"'{what}' has no UUID volume_id.");
        return new CinderSnapshot
        {
            Id = o.Uuid("id") ?? throw new OsloFormatException($"'{what}' has no UUID id."),
            VolumeId = volumeId,
            VolumeSizeGb = o.Number("volume_size"),
            Status = o.Text("status"),
            DisplayName = o.Text("display_name"),
            ProjectId = o.Text("project_id"),
            UserId = o.Text("user_id"),
            CreatedAt = o.Text("created_at"),
            ProviderLocation = o.Text("provider_location"),
            Metadata = o.Dict("metadata"),
            Volume = volume,
        };
    }
}
