using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Oslo.Wire;

namespace NfsVolumeWorker.Oslo.Rpc;

/// <summary>A Cinder notification to publish for a command: .start now, .end or .error when its terminal event comes.</summary>
public sealed record PendingNotification(
    string Resource, string Action, string PublisherHost, JsonObject Payload, JsonObject Context,
    string StartStatus, string EndStatus, string ErrorStatus)
{
    public JsonObject? EndExtra { get; init; }

    /// <summary>oslo's publisher id: <c>volume.HOST</c>, <c>snapshot.HOST</c>.</summary>
    public string PublisherId => $"{Resource}.{PublisherHost}";

    /// <summary>The event type of one phase (start, end, error): <c>snapshot.create.end</c>.</summary>
    public string EventType(string phase) => $"{Resource}.{Action}.{phase}";

    public JsonObject PayloadWith(string status, JsonObject? extra = null)
    {
        var p = (JsonObject)Payload.DeepClone();
        p["status"] = status;
        foreach (var (k, v) in extra ?? [])
        {
            p[k] = v?.DeepClone();
        }
        return p;
    }
}

/// <summary>What to do with one request.</summary>
public abstract record Plan;

/// <summary>Put a command in the pipeline; notify .start now and .end/.error from its terminal event.</summary>
public sealed record SubmitPlan(VolumeCommand Command, PendingNotification Notification, Action? OnAccepted = null) : Plan;

/// <summary>Answer a call.</summary>
public sealed record ReplyPlan(JsonNode? Result) : Plan;

/// <summary>Refuse: a failure reply on a call, an error notification on a cast. Nothing is touched.</summary>
public sealed record FailPlan(RemoteFailure Failure, string EventType, string PublisherId, JsonObject Payload) : Plan;

/// <summary>Nothing to do on disk (e.g. deleting a volume no share holds): notify .start and .end.</summary>
public sealed record NothingToDoPlan(PendingNotification Notification) : Plan;

/// <summary>publish_service_capabilities: send the backend's capabilities to the schedulers.</summary>
public sealed record PublishCapabilitiesPlan(JsonObject Capabilities) : Plan;

/// <summary>Maps Cinder's volume RPC API (cinder/volume/manager.py, API 3.x) to native commands.</summary>
public sealed class CinderVolumeEndpoint(OsloOptions options, IVolumeLocator locator, IConnectionInfoProvider connections, TimeProvider time)
{
    public const long GiB = 1L << 30;

    private static readonly Guid OsloNamespace = new("5d4f3c1e-8a6b-4f1d-9c2e-7b0a1e3d5f60");

    /// <summary>The native command id of an oslo message: a name-based UUID (SHA-1, version 5) of its
    /// <c>_unique_id</c>, so a duplicate delivery maps to the same command and runs once.</summary>
    public static Guid CommandIdOf(string uniqueId)
    {
        var name = Encoding.UTF8.GetBytes("oslo:" + uniqueId);
        var input = new byte[16 + name.Length];
        OsloNamespace.TryWriteBytes(input, bigEndian: true, out _);
        name.CopyTo(input, 16);
#pragma warning disable CA5350 // name-based UUID, not a security use
        var hash = SHA1.HashData(input);
#pragma warning restore CA5350
        hash[6] = (byte)((hash[6] & 0x0F) | 0x50);
        hash[8] = (byte)((hash[8] & 0x3F) | 0x80);
        return new Guid(hash.AsSpan(0, 16), bigEndian: true);
    }

    public Plan Plan(OsloRequest request)
    {
        if (!VersionSupported(request.Version) || request.Namespace is not null)
        {
            return Fail(request, RemoteFailure.UnsupportedVersion(request.Version, request.Method), "volume", "rpc", Unknown(request));
        }
        try
        {
            return request.Method switch
            {
                "create_volume" => CreateVolume(request),
                "delete_volume" => DeleteVolume(request),
                "create_snapshot" => CreateSnapshot(request),
                "delete_snapshot" => DeleteSnapshot(request),
                "revert_to_snapshot" => Revert(request),
                "extend_volume" => Extend(request),
                "initialize_connection" => InitializeConnection(request),
                "terminate_connection" => new ReplyPlan(null),
                "get_capabilities" => new ReplyPlan(Capabilities()),
                "publish_service_capabilities" => new PublishCapabilitiesPlan(Capabilities()),
                _ => Fail(request, RemoteFailure.NoSuchMethod(request.Method), "volume", "rpc", Unknown(request)),
            };
        }
        catch (OsloFormatException e)
        {
            var (resource, action) = ResourceOf(request.Method);
            return Fail(request, RemoteFailure.InvalidInput(e.Message), resource, action, BestEffortPayload(request, "error"));
        }
    }

    private static JsonObject Unknown(OsloRequest request) => new()
    {
        ["method"] = request.Method, ["version"] = request.Version, ["namespace"] = request.Namespace,
    };

    private FailPlan Fail(OsloRequest request, RemoteFailure failure, string resource, string action, JsonObject payload) =>
        new(failure, $"{resource}.{action}.error", $"{resource}.{options.Host}", WithError(payload, failure));

    private static JsonObject WithError(JsonObject payload, RemoteFailure failure)
    {
        payload["status"] ??= "error";
        payload[RemoteFailure.ErrorCodeKey] = failure.Code.Name;
        if (!payload.ContainsKey("volume_id") && !payload.ContainsKey("snapshot_id"))
        {
            payload["error"] = failure.Message;
        }
        return payload;
    }

    private static (string Resource, string Action) ResourceOf(string method) => method switch
    {
        "create_volume" => ("volume", "create"),
        "delete_volume" => ("volume", "delete"),
        "create_snapshot" => ("snapshot", "create"),
        "delete_snapshot" => ("snapshot", "delete"),
        "revert_to_snapshot" => ("volume", "revert"),
        "extend_volume" => ("volume", "resize"),
        "initialize_connection" => ("volume", "attach"),
        _ => ("volume", "rpc"),
    };

    private JsonObject BestEffortPayload(OsloRequest request, string status)
    {
        var now = time.GetUtcNow();
        try
        {
            if (request.Args["snapshot"] is { } s && request.Method.Contains("snapshot", StringComparison.Ordinal) && request.Method != "revert_to_snapshot")
            {
                return CinderPayloads.Snapshot(CinderSnapshot.From(s), status, options.AvailabilityZone, now);
            }
            if (request.Args["volume"] is { } v)
            {
                return CinderPayloads.Volume(CinderVolume.From(v), status, options.AvailabilityZone, now);
            }
        }
        catch (OsloFormatException)
        {
            // fall through: the payload cannot be built from what was sent
        }
        return Unknown(request);
    }

    private bool VersionSupported(string? version)
    {
        if (string.IsNullOrEmpty(version))
        {
            return true; // oslo treats a missing version as 1.0 compatible with any endpoint of major 1; Cinder always sends one
        }
        return TryParse(version, out var major, out var minor) && TryParse(options.MaxVersion, out var maxMajor, out var maxMinor)
            && major == maxMajor && minor <= maxMinor;

        static bool TryParse(string v, out int major, out int minor)
        {
            var parts = v.Split('.');
            minor = 0;
            return int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out major)
                && (parts.Length < 2 || int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out minor));
        }
    }

    /// <summary>A size in GiB, as Cinder sends it, in bytes. Over 8 EiB the product does not fit in a long, and
    /// unchecked it would wrap (2^34 + 1 GiB would become 1 GiB): refused instead.</summary>
    private static long Bytes(long gib, string what) => gib <= long.MaxValue / GiB
        ? gib * GiB
        : throw new OsloFormatException($"{what}: {gib} GiB is more bytes than a 64-bit size holds.");

    private static string CommandKey(OsloRequest r) => r.UniqueId ?? throw new OsloFormatException("The message has no _unique_id.");

    private string VolumePublisherHost(CinderVolume v) => v.Host ?? options.Host;

    private PendingNotification VolumeNotification(OsloRequest r, CinderVolume v, string action, string publisherHost, string start, string end, string error) =>
        new("volume", action, publisherHost, CinderPayloads.Volume(v, start, options.AvailabilityZone, time.GetUtcNow()), r.PackedContext(), start, end, error);

    private PendingNotification SnapshotNotification(OsloRequest r, CinderSnapshot s, string action, string start, string end, string error) =>
        new("snapshot", action, options.Host, CinderPayloads.Snapshot(s, start, s.Volume?.AvailabilityZone ?? options.AvailabilityZone, time.GetUtcNow()), r.PackedContext(), start, end, error);

    private static VolumeFormat? FormatOf(CinderVolume v) => v.Format switch
    {
        "raw" => VolumeFormat.Raw,
        "qcow2" => VolumeFormat.Qcow2,
        _ => null,
    };

    private string ShareOf(CinderVolume v, string method)
    {
        if (!string.IsNullOrWhiteSpace(v.ProviderLocation) && locator.Shares.Contains(v.ProviderLocation.Trim()))
        {
            return v.ProviderLocation.Trim();
        }
        if (!string.IsNullOrWhiteSpace(v.ProviderLocation))
        {
            throw new OsloFormatException($"{method}: volume {v.Id} is on share '{v.ProviderLocation}', which this backend does not serve.");
        }
        return locator.ShareOfVolume(v.Id) ?? throw new OsloFormatException($"{method}: volume {v.Id} has no provider_location and no configured share holds it.");
    }

    private SubmitPlan CreateVolume(OsloRequest r)
    {
        var v = CinderVolume.From(r.Args["volume"]);
        var id = CommandIdOf(CommandKey(r));
        var size = Bytes(v.SizeGb is > 0 ? v.SizeGb.Value : throw new OsloFormatException($"volume {v.Id} has no positive size"), $"volume {v.Id}");
        var note = VolumeNotification(r, v, "create", VolumePublisherHost(v), "creating", "available", "error");
        if (v.SnapshotId is { } snapshotId)
        {
            var source = locator.VolumeOfSnapshot(snapshotId)
                ?? throw new OsloFormatException($"create_volume: snapshot {snapshotId} (the source of volume {v.Id}) is not on any configured share.");
            return new SubmitPlan(new CreateVolumeFromSnapshot
            {
                CommandId = id, VolumeId = source.VolumeId, Share = source.Share, SnapshotId = snapshotId,
                NewVolumeId = v.Id, NewSizeBytes = size, EncryptionKeyId = v.EncryptionKeyId,
            }, note, () => locator.RememberVolume(v.Id, source.Share));
        }
        if (v.SourceVolumeId is { } sourceId)
        {
            var share = locator.ShareOfVolume(sourceId)
                ?? throw new OsloFormatException($"create_volume: source volume {sourceId} of volume {v.Id} is not on any configured share.");
            return new SubmitPlan(new CloneVolume
            {
                CommandId = id, VolumeId = sourceId, Share = share, NewVolumeId = v.Id, NewSizeBytes = size, EncryptionKeyId = v.EncryptionKeyId,
            }, note, () => locator.RememberVolume(v.Id, share));
        }
        var target = !string.IsNullOrWhiteSpace(v.ProviderLocation) && locator.Shares.Contains(v.ProviderLocation.Trim())
            ? v.ProviderLocation.Trim() : locator.ChooseShareForNewVolume(size);
        return new SubmitPlan(new CreateVolume
        {
            CommandId = id, VolumeId = v.Id, Share = target, SizeBytes = size, EncryptionKeyId = v.EncryptionKeyId,
            Format = FormatOf(v),
        }, note, () => locator.RememberVolume(v.Id, target));
    }

    private Plan DeleteVolume(OsloRequest r)
    {
        var v = CinderVolume.From(r.Args["volume"]);
        var note = VolumeNotification(r, v, "delete", options.Host, "deleting", "deleted", "error_deleting");
        var share = !string.IsNullOrWhiteSpace(v.ProviderLocation) && locator.Shares.Contains(v.ProviderLocation.Trim())
            ? v.ProviderLocation.Trim() : locator.ShareOfVolume(v.Id);
        if (share is null)
        {
            // Cinder's NFS driver: "Volume has no provider_location, skipping" — a success with nothing to delete.
            return new NothingToDoPlan(note);
        }
        return new SubmitPlan(new DeleteVolume { CommandId = CommandIdOf(CommandKey(r)), VolumeId = v.Id, Share = share, BaseFormat = FormatOf(v) }, note);
    }

    private SubmitPlan CreateSnapshot(OsloRequest r)
    {
        var s = CinderSnapshot.From(r.Args["snapshot"]);
        var share = s.Volume is { } nested && !string.IsNullOrWhiteSpace(nested.ProviderLocation)
            ? ShareOf(nested, "create_snapshot")
            : locator.ShareOfVolume(s.VolumeId) ?? throw new OsloFormatException($"create_snapshot: volume {s.VolumeId} of snapshot {s.Id} is not on any configured share.");
        var note = SnapshotNotification(r, s, "create", "creating", "available", "error");
        return new SubmitPlan(new CreateSnapshot
        {
            CommandId = CommandIdOf(CommandKey(r)), VolumeId = s.VolumeId, Share = share, SnapshotId = s.Id,
            // Cinder's driver: qemu-img create ... "%dG" % snapshot.volume.size (the Snapshot carries volume_size too).
            VolumeSizeBytes = (s.Volume?.SizeGb ?? s.VolumeSizeGb) is > 0 and var gb ? Bytes(gb, $"snapshot {s.Id}: volume size") : null,
            EncryptionKeyId = s.Volume?.EncryptionKeyId, Attached = s.Volume?.Attached ?? false, BaseFormat = s.Volume is { } vol ? FormatOf(vol) : null,
        }, note, () => locator.RememberSnapshot(s.Id, s.VolumeId, share));
    }

    private Plan DeleteSnapshot(OsloRequest r)
    {
        var s = CinderSnapshot.From(r.Args["snapshot"]);
        var note = SnapshotNotification(r, s, "delete", "deleting", "deleted", "error_deleting");
        var share = s.Volume is { } nested && !string.IsNullOrWhiteSpace(nested.ProviderLocation)
            ? ShareOf(nested, "delete_snapshot")
            : locator.ShareOfVolume(s.VolumeId);
        if (share is null)
        {
            return new NothingToDoPlan(note); // the volume is gone: nothing holds the snapshot
        }
        return new SubmitPlan(new DeleteSnapshot
        {
            CommandId = CommandIdOf(CommandKey(r)), VolumeId = s.VolumeId, Share = share, SnapshotId = s.Id,
            Attached = s.Volume?.Attached ?? false, BaseFormat = s.Volume is { } vol ? FormatOf(vol) : null,
        }, note);
    }

    private SubmitPlan Revert(OsloRequest r)
    {
        var v = CinderVolume.From(r.Args["volume"]);
        var s = CinderSnapshot.From(r.Args["snapshot"]);
        if (s.VolumeId != v.Id)
        {
            throw new OsloFormatException($"revert_to_snapshot: snapshot {s.Id} belongs to volume {s.VolumeId}, not {v.Id}.");
        }
        var note = VolumeNotification(r, v, "revert", options.Host, "reverting", "available", "error");
        return new SubmitPlan(new RevertToSnapshot
        {
            CommandId = CommandIdOf(CommandKey(r)), VolumeId = v.Id, Share = ShareOf(v, "revert_to_snapshot"), SnapshotId = s.Id,
            EncryptionKeyId = v.EncryptionKeyId, Attached = v.Attached, BaseFormat = FormatOf(v),
        }, note);
    }

    private SubmitPlan Extend(OsloRequest r)
    {
        var v = CinderVolume.From(r.Args["volume"]);
        var newSize = r.Args["new_size"] is JsonValue n && n.TryGetValue<long>(out var gb) && gb > 0 ? gb
            : throw new OsloFormatException("extend_volume: new_size must be a positive number of GiB.");
        var note = VolumeNotification(r, v, "resize", options.Host, "extending", "available", "error_extending") with
        {
            EndExtra = new JsonObject { ["size"] = newSize },
        };
        return new SubmitPlan(new ExtendVolume
        {
            CommandId = CommandIdOf(CommandKey(r)), VolumeId = v.Id, Share = ShareOf(v, "extend_volume"), NewSizeBytes = Bytes(newSize, "extend_volume: new_size"),
            EncryptionKeyId = v.EncryptionKeyId, Attached = v.Attached, BaseFormat = FormatOf(v),
        }, note);
    }

    private Plan InitializeConnection(OsloRequest r)
    {
        var v = CinderVolume.From(r.Args["volume"]);
        if (v.SizeGb is not > 0)
        {
            throw new OsloFormatException($"initialize_connection: volume {v.Id} has no positive size.");
        }
        OsloConnectionInfo info;
        try
        {
            info = connections.Connect(ShareOf(v, "initialize_connection"), v.Id, Bytes(v.SizeGb.Value, $"volume {v.Id}"), FormatOf(v));
        }
        catch (OsloServiceException e)
        {
            var failure = e.Code == ErrorCodes.VolumeNotFound
                ? RemoteFailure.VolumeNotFound(v.Id.ToString())
                : RemoteFailure.InvalidVolume(e.Message, e.Code);
            return new FailPlan(failure, "volume.attach.error", $"volume.{options.Host}", WithError(CinderPayloads.Volume(v, "error_attaching", options.AvailabilityZone, time.GetUtcNow()), failure));
        }
        var data = new JsonObject { ["export"] = info.Export, ["name"] = info.Name };
        if (info.MountOptions is not null)
        {
            data["options"] = info.MountOptions;
        }
        data["format"] = info.Format;
        data["qos_specs"] = null;
        data["access_mode"] = v.AdminMetadata.TryGetValue("attached_mode", out var mode) && mode is not null ? mode
            : v.AdminMetadata.TryGetValue("readonly", out var ro) && ro == "True" ? "ro" : "rw";
        data["encrypted"] = !string.IsNullOrEmpty(v.EncryptionKeyId);
        return new ReplyPlan(new JsonObject
        {
            ["driver_volume_type"] = "nfs",
            ["data"] = data,
            ["mount_point_base"] = info.MountPointBase,
        });
    }

    /// <summary>The backend's capabilities as Cinder's NFS driver reports them (RemoteFSDriver._update_volume_stats).</summary>
    public JsonObject Capabilities()
    {
        var (total, free) = connections.Capacity();
        return new JsonObject
        {
            ["volume_backend_name"] = options.BackendName,
            ["vendor_name"] = "Open Source",
            ["driver_version"] = "1.4.0",
            ["storage_protocol"] = "nfs",
            ["total_capacity_gb"] = Math.Round(total, 2),
            ["free_capacity_gb"] = Math.Round(free, 2),
            ["reserved_percentage"] = 0,
            ["QoS_support"] = false,
            ["sparse_copy_volume"] = true,
            ["thin_provisioning_support"] = true,
            ["thick_provisioning_support"] = false,
            ["max_over_subscription_ratio"] = "20.0",
            ["multiattach"] = false,
            ["pool_name"] = options.PoolName ?? options.BackendName,
            ["properties"] = new JsonObject(),
        };
    }
}
