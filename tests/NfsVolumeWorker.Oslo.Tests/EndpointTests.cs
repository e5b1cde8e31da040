using System.Text.Json.Nodes;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Oslo;
using NfsVolumeWorker.Oslo.Rpc;
using NfsVolumeWorker.Oslo.Wire;

namespace NfsVolumeWorker.Oslo.Tests;

public sealed class EndpointTests
{
    private const string Share = "127.0.0.1:/export";
    private readonly FakeLocator _locator = new();
    private readonly CinderVolumeEndpoint _endpoint;

    public EndpointTests() =>
        _endpoint = new CinderVolumeEndpoint(new OsloOptions { Host = "hostA@nfs", Enabled = true }, _locator, new FakeConnections(), TimeProvider.System);

    internal static JsonObject Vol(Guid id, string? snapshotId = null, string? source = null, string? providerLocation = null) => new()
    {
        ["versioned_object.name"] = "Volume",
        ["versioned_object.version"] = "1.9",
        ["versioned_object.data"] = new JsonObject
        {
            ["id"] = id.ToString(), ["size"] = 2, ["host"] = "hostA@nfs#nfs", ["snapshot_id"] = snapshotId, ["source_volid"] = source,
            ["provider_location"] = providerLocation, ["project_id"] = "p", ["user_id"] = "u", ["display_name"] = "v",
        },
    };

    private static OsloRequest Request(string method, JsonObject args, string version = "3.0", string? unique = null) => new()
    {
        Method = method, Args = args, Version = version, UniqueId = unique ?? Guid.NewGuid().ToString("N"), Context = new JsonObject { ["user_id"] = "u" },
    };

    [Fact]
    public void A_duplicate_delivery_maps_to_the_same_command_id()
    {
        Assert.Equal(CinderVolumeEndpoint.CommandIdOf("abc"), CinderVolumeEndpoint.CommandIdOf("abc"));
        Assert.NotEqual(CinderVolumeEndpoint.CommandIdOf("abc"), CinderVolumeEndpoint.CommandIdOf("abd"));
        var v = Guid.NewGuid();
        var a = Assert.IsType<SubmitPlan>(_endpoint.Plan(Request("create_volume", new JsonObject { ["volume"] = Vol(v) }, unique: "u1")));
        var b = Assert.IsType<SubmitPlan>(_endpoint.Plan(Request("create_volume", new JsonObject { ["volume"] = Vol(v) }, unique: "u1")));
        Assert.Equal(a.Command.CommandId, b.Command.CommandId);
    }

    [Fact]
    public void Create_volume_from_a_snapshot_is_partitioned_by_the_source_volume_found_through_the_snapshot()
    {
        var source = Guid.NewGuid();
        var snapshot = Guid.NewGuid();
        _locator.RememberSnapshot(snapshot, source, Share);
        var newVolume = Guid.NewGuid();
        var plan = Assert.IsType<SubmitPlan>(_endpoint.Plan(Request("create_volume", new JsonObject { ["volume"] = Vol(newVolume, snapshotId: snapshot.ToString()) })));
        var c = Assert.IsType<CreateVolumeFromSnapshot>(plan.Command);
        Assert.Equal(source, c.VolumeId);
        Assert.Equal(newVolume, c.NewVolumeId);
        Assert.Equal(2L << 30, c.NewSizeBytes);
        Assert.Equal("volume.hostA@nfs#nfs", $"{plan.Notification.Resource}.{plan.Notification.PublisherHost}");
    }

    [Fact]
    public void Create_snapshot_without_a_share_finds_the_volume_and_indexes_the_snapshot()
    {
        var volume = Guid.NewGuid();
        _locator.RememberVolume(volume, Share);
        var snapshot = Guid.NewGuid();
        var plan = Assert.IsType<SubmitPlan>(_endpoint.Plan(Request("create_snapshot", new JsonObject
        {
            ["snapshot"] = new JsonObject
            {
                ["versioned_object.name"] = "Snapshot",
                ["versioned_object.data"] = new JsonObject { ["id"] = snapshot.ToString(), ["volume_id"] = volume.ToString(), ["volume_size"] = 2 },
            },
        })));
        Assert.Equal(Share, Assert.IsType<CreateSnapshot>(plan.Command).Share);
        Assert.Equal("snapshot.hostA@nfs", $"{plan.Notification.Resource}.{plan.Notification.PublisherHost}");
        plan.OnAccepted!();
        Assert.Equal((volume, Share), _locator.VolumeOfSnapshot(snapshot));
    }

    [Fact]
    public void Unknown_methods_versions_and_unreadable_objects_are_refused_without_a_command()
    {
        var unknown = Assert.IsType<FailPlan>(_endpoint.Plan(Request("frobnicate", [])));
        Assert.Equal("NoSuchMethod", unknown.Failure.Class);
        Assert.Equal(ErrorCodes.UnsupportedRequest, unknown.Failure.Code);
        Assert.Equal("UnsupportedRequest", (string?)unknown.Payload[RemoteFailure.ErrorCodeKey]);
        Assert.Equal("UnsupportedVersion", Assert.IsType<FailPlan>(_endpoint.Plan(Request("get_capabilities", [], "4.0"))).Failure.Class);
        Assert.Equal("UnsupportedVersion", Assert.IsType<FailPlan>(_endpoint.Plan(Request("get_capabilities", [], "3.19"))).Failure.Class);
        var bad = Assert.IsType<FailPlan>(_endpoint.Plan(Request("create_volume", new JsonObject { ["volume"] = "nope" })));
        Assert.Equal("volume.create.error", bad.EventType);
        Assert.Equal("InvalidRequest", (string?)bad.Payload[RemoteFailure.ErrorCodeKey]);
        var nowhere = Assert.IsType<FailPlan>(_endpoint.Plan(Request("extend_volume", new JsonObject { ["volume"] = Vol(Guid.NewGuid()), ["new_size"] = 3 })));
        Assert.Equal("volume.resize.error", nowhere.EventType);
    }

    [Theory]
    [InlineData("create_volume", 17179869185L)] // 2^34 + 1 GiB: unchecked, 1 GiB
    [InlineData("create_volume", 8589934592L)] // 2^33 GiB: unchecked, long.MinValue
    [InlineData("extend_volume", 17179869185L)]
    [InlineData("initialize_connection", 9223372036854775807L)]
    [InlineData("create_snapshot", 17179869185L)] // the overlay's declared size (the snapshot's volume)
    public void A_size_in_GiB_that_is_more_bytes_than_a_long_holds_is_refused_not_wrapped(string method, long gib)
    {
        var v = Guid.NewGuid();
        _locator.RememberVolume(v, Share);
        var volume = Vol(v, providerLocation: Share);
        var args = method == "create_snapshot"
            ? new JsonObject
            {
                ["snapshot"] = new JsonObject
                {
                    ["versioned_object.name"] = "Snapshot",
                    ["versioned_object.data"] = new JsonObject { ["id"] = Guid.NewGuid().ToString(), ["volume_id"] = v.ToString(), ["volume"] = volume },
                },
            }
            : new JsonObject { ["volume"] = volume };
        if (method == "extend_volume")
        {
            args["new_size"] = gib;
        }
        else
        {
            volume["versioned_object.data"]!["size"] = gib;
        }
        var refused = Assert.IsType<FailPlan>(_endpoint.Plan(Request(method, args)));
        Assert.Equal("InvalidInput", refused.Failure.Class);
        Assert.Contains($"{gib} GiB is more bytes than a 64-bit size holds", refused.Failure.Message, StringComparison.Ordinal);

        volume["versioned_object.data"]!["size"] = 8589934591L; // the largest that fits: 8 EiB - 1 GiB
        args["new_size"] = 8589934591L;
        Assert.IsNotType<FailPlan>(_endpoint.Plan(Request(method, args)));
    }

    [Fact]
    public void Initialize_connection_answers_what_the_nfs_driver_returns()
    {
        var v = Guid.NewGuid();
        _locator.RememberVolume(v, Share);
        var reply = Assert.IsType<ReplyPlan>(_endpoint.Plan(Request("initialize_connection", new JsonObject { ["volume"] = Vol(v), ["connector"] = new JsonObject() })));
        Assert.Equal("nfs", (string?)reply.Result!["driver_volume_type"]);
        Assert.Equal($"volume-{v}", (string?)reply.Result["data"]!["name"]);
        Assert.Equal("rw", (string?)reply.Result["data"]!["access_mode"]);
    }

    internal sealed class FakeLocator : IVolumeLocator
    {
        private readonly Dictionary<Guid, string> _volumes = [];
        private readonly Dictionary<Guid, (Guid, string)> _snapshots = [];
        public IReadOnlyList<string> Shares => [Share];
        public string? ShareOfVolume(Guid volumeId) => _volumes.GetValueOrDefault(volumeId);
        public (Guid VolumeId, string Share)? VolumeOfSnapshot(Guid snapshotId) => _snapshots.TryGetValue(snapshotId, out var s) ? s : null;
        public void RememberVolume(Guid volumeId, string share) => _volumes[volumeId] = share;
        public void RememberSnapshot(Guid snapshotId, Guid volumeId, string share) => _snapshots[snapshotId] = (volumeId, share);
        public string ChooseShareForNewVolume(long sizeBytes) => Share;
    }

    internal sealed class FakeConnections : IConnectionInfoProvider
    {
        public OsloConnectionInfo Connect(string share, Guid volumeId, long expectedSizeBytes, VolumeFormat? baseFormat) =>
            new(share, $"volume-{volumeId}", "raw", null, "/mnt");
        public (double TotalGb, double FreeGb) Capacity() => (10, 5);
    }
}
