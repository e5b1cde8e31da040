using System.Text;
using System.Text.Json.Nodes;
using NfsVolumeWorker.Oslo.Wire;

namespace NfsVolumeWorker.Oslo.Rpc;

/// <summary>Cinder's notification payloads (cinder/volume/volume_utils.py _usage_from_volume, _usage_from_snapshot).</summary>
public static class CinderPayloads
{
    public static JsonObject Volume(CinderVolume v, string status, string fallbackAz, DateTimeOffset now)
    {
        var nowIso = OsloTime.Iso(now);
        var metadata = new JsonObject();
        foreach (var (k, val) in v.Metadata)
        {
            metadata[k] = val;
        }
        return new JsonObject
        {
            ["tenant_id"] = v.ProjectId,
            ["host"] = v.Host,
            ["user_id"] = v.UserId,
            ["availability_zone"] = v.AvailabilityZone ?? fallbackAz,
            ["volume_id"] = v.Id.ToString(),
            ["volume_type"] = v.VolumeTypeId,
            ["display_name"] = v.DisplayName,
            ["launched_at"] = IsoOf(v.LaunchedAt) ?? nowIso,
            ["created_at"] = IsoOf(v.CreatedAt) ?? nowIso,
            ["status"] = status,
            ["snapshot_id"] = v.SnapshotId?.ToString(),
            ["size"] = v.SizeGb,
            ["replication_status"] = v.Source.Text("replication_status"),
            ["replication_extended_status"] = v.Source.Text("replication_extended_status"),
            ["replication_driver_data"] = v.Source.Text("replication_driver_data"),
            ["metadata"] = metadata,
            ["volume_attachment"] = new JsonArray(),
        };
    }

    public static JsonObject Snapshot(CinderSnapshot s, string status, string availabilityZone, DateTimeOffset now) => new()
    {
        ["tenant_id"] = s.ProjectId,
        ["user_id"] = s.UserId,
        ["availability_zone"] = availabilityZone,
        ["volume_id"] = s.VolumeId.ToString(),
        ["volume_size"] = s.VolumeSizeGb,
        ["snapshot_id"] = s.Id.ToString(),
        ["display_name"] = s.DisplayName,
        ["created_at"] = IsoOf(s.CreatedAt) ?? OsloTime.Iso(now),
        ["status"] = status,
        ["deleted"] = status == "deleted" ? "True" : "False",
        ["metadata"] = PythonDictRepr(s.Metadata),
    };

    /// <summary>oslo serializes datetimes as ISO text with a zone ("2026-11-24T22:31:05.000000+00:00" or with Z);
    /// Cinder's payload uses naive isoformat(). Normalise to the latter.</summary>
    public static string? IsoOf(string? serialized) =>
        serialized is null ? null
        : DateTimeOffset.TryParse(serialized, System.Globalization.CultureInfo.InvariantCulture, System.Globalization.DateTimeStyles.AssumeUniversal, out var t)
            ? OsloTime.Iso(t) : serialized;

    /// <summary>Python's str() of a dict of strings (Cinder's null_safe_str(snapshot.metadata)).</summary>
    public static string PythonDictRepr(IReadOnlyDictionary<string, string?> d)
    {
        var sb = new StringBuilder("{");
        var first = true;
        foreach (var (k, v) in d)
        {
            if (!first)
            {
                sb.Append(", ");
            }
            first = false;
            sb.Append(Repr(k)).Append(": ").Append(v is null ? "None" : Repr(v));
        }
        return sb.Append('}').ToString();

        static string Repr(string s) => "'" + s.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("'", "\\'", StringComparison.Ordinal) + "'";
    }
}
