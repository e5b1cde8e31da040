using System.Text;
using System.Text.Json.Nodes;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Oslo;
using NfsVolumeWorker.Oslo.Rpc;
using NfsVolumeWorker.Oslo.Wire;

namespace NfsVolumeWorker.Oslo.Tests;

public sealed class WireTests
{
    private const string Token = "gAAAAAB-very-secret-token";

    private static string Volume(string id, string version = "1.9", string extra = "") => $$$$"""
        {"versioned_object.name": "Volume", "versioned_object.namespace": "cinder", "versioned_object.version": "{{{{version}}}}",
         "versioned_object.data": {"id": "{{{{id}}}}", "size": 1, "host": "hostA@nfs#nfs", "status": "available", "attach_status": "detached",
          "admin_metadata": {"format": "qcow2"}, "provider_location": null {{{{extra}}}}},
         "versioned_object.changes": ["size"]}
        """;

    private static byte[] Envelope(string inner) =>
        Encoding.UTF8.GetBytes(new JsonObject { ["oslo.version"] = "2.0", ["oslo.message"] = inner }.ToJsonString());

    [Fact]
    public void The_envelope_is_decoded_from_its_json_string_and_encoded_back_the_same_way()
    {
        var inner = """{"method": "ping", "args": {"a": 1}, "version": "3.0", "_unique_id": "u1", "_context_user_id": "u"}""";
        var message = OsloEnvelope.Decode(Envelope(inner));
        Assert.Equal("ping", (string?)message["method"]);

        var encoded = JsonNode.Parse(OsloEnvelope.Encode(message))!.AsObject();
        Assert.Equal("2.0", (string?)encoded["oslo.version"]);
        Assert.Equal(System.Text.Json.JsonValueKind.String, encoded["oslo.message"]!.GetValueKind());
        Assert.Equal("ping", (string?)JsonNode.Parse((string)encoded["oslo.message"]!)!["method"]);
    }

    [Fact]
    public void A_body_without_an_envelope_is_the_message_itself_and_garbage_is_refused()
    {
        Assert.Equal("ping", (string?)OsloEnvelope.Decode("""{"method": "ping"}"""u8)["method"]);
        Assert.Throws<OsloFormatException>(() => OsloEnvelope.Decode("not json"u8));
        Assert.Throws<OsloFormatException>(() => OsloEnvelope.Decode("""{"oslo.version": "3.0", "oslo.message": "{}"}"""u8));
        Assert.Throws<OsloFormatException>(() => OsloEnvelope.Decode("""{"oslo.version": "2.0", "oslo.message": "[1]"}"""u8));
    }

    [Fact]
    public void A_request_separates_method_args_call_fields_and_the_flattened_context()
    {
        var r = OsloRequest.From(OsloEnvelope.Decode(Envelope(
            $$$$"""{"method": "initialize_connection", "args": {"connector": {}}, "version": "3.0", "_msg_id": "m1", "_reply_q": "reply_x", "_timeout": null, "_unique_id": "u1", "_context_user_id": "u", "_context_auth_token": "{{{{Token}}}}"}""")));
        Assert.True(r.IsCall);
        Assert.Equal("reply_x", r.ReplyQueue);
        Assert.Equal("u", (string?)r.Context["user_id"]);
        Assert.Equal(Token, (string?)r.PackedContext()["_context_auth_token"]);
        Assert.False(OsloRequest.From(new JsonObject { ["method"] = "x", ["_unique_id"] = "u" }).IsCall);
    }

    [Fact]
    public void Secrets_never_reach_a_log_line_even_nested()
    {
        var r = OsloRequest.From(OsloEnvelope.Decode(Envelope(
            $$$$"""{"method": "create_volume", "args": {"volume": {"password": "pw1", "x": {"auth_token": "{{{{Token}}}}"}}}, "_unique_id": "u1", "_context_auth_token": "{{{{Token}}}}", "_context_user_id": "u"}""")));
        Assert.DoesNotContain(Token, r.Describe(), StringComparison.Ordinal);
        var redacted = Secrets.ToLogString(OsloEnvelope.Decode(Envelope(
            $$$$$"""{"_context_auth_token": "{{{{{Token}}}}}", "args": {"volume": {"password": "pw1", "x": {"auth_token": "{{{{{Token}}}}}"}}}}""")));
        Assert.DoesNotContain(Token, redacted, StringComparison.Ordinal);
        Assert.DoesNotContain("pw1", redacted, StringComparison.Ordinal);
        Assert.Contains(Secrets.Mask, redacted, StringComparison.Ordinal);
        Assert.DoesNotContain(Token, Secrets.ToLogString(r.Args), StringComparison.Ordinal);
    }

    [Fact]
    public void A_volume_decodes_with_unknown_fields_and_a_newer_object_version()
    {
        var id = Guid.NewGuid();
        var v = CinderVolume.From(JsonNode.Parse(Volume(id.ToString(), "9.42", """, "brand_new_field": {"deep": [1, 2]}, "size_in_furlongs": "x" """)));
        Assert.Equal(id, v.Id);
        Assert.Equal(1, v.SizeGb);
        Assert.Equal("qcow2", v.Format);
        Assert.Equal("9.42", v.Source.Version);
        Assert.Null(v.ProviderLocation);
        Assert.False(v.Attached);
    }

    [Fact]
    public void A_snapshot_decodes_with_its_nested_volume_or_without_it()
    {
        var volumeId = Guid.NewGuid();
        var snapshotId = Guid.NewGuid();
        var with = CinderSnapshot.From(JsonNode.Parse($$$$"""
            {"versioned_object.name": "Snapshot", "versioned_object.version": "1.99",
             "versioned_object.data": {"id": "{{{{snapshotId}}}}", "volume_id": "{{{{volumeId}}}}", "volume_size": 1, "display_name": "s",
               "metadata": [{"key": "k", "value": "v"}], "future": true,
               "volume": {{{{Volume(volumeId.ToString(), extra: ", \"provider_location\": \"127.0.0.1:/export\"")}}}} }}
            """.Replace("\"provider_location\": null ,", "", StringComparison.Ordinal)));
        Assert.Equal(volumeId, with.VolumeId);
        Assert.Equal("127.0.0.1:/export", with.Volume!.ProviderLocation);
        Assert.Equal("v", with.Metadata["k"]);

        var without = CinderSnapshot.From(JsonNode.Parse($$$$"""
            {"versioned_object.name": "Snapshot", "versioned_object.version": "1.6",
             "versioned_object.data": {"id": "{{{{snapshotId}}}}", "volume_id": "{{{{volumeId}}}}", "volume_size": 1}}
            """));
        Assert.Null(without.Volume);
        Assert.Equal(1, without.VolumeSizeGb);
    }

    [Fact]
    public void An_object_without_a_uuid_or_of_another_kind_is_refused_clearly()
    {
        Assert.Throws<OsloFormatException>(() => CinderVolume.From(JsonNode.Parse("""{"not": "an object"}""")));
        Assert.Throws<OsloFormatException>(() => CinderVolume.From(JsonNode.Parse(Volume("not-a-uuid"))));
        var e = Assert.Throws<OsloFormatException>(() => CinderSnapshot.From(JsonNode.Parse(Volume(Guid.NewGuid().ToString()))));
        Assert.Contains("not a Snapshot", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Failures_are_serialized_as_oslo_does_as_a_json_string()
    {
        var f = JsonNode.Parse(RemoteFailure.InvalidVolume("bad", ErrorCodes.SizeMismatch).ToJsonString())!;
        Assert.Equal("InvalidVolume", (string?)f["class"]);
        Assert.Equal("cinder.exception", (string?)f["module"]);
        Assert.Equal("bad", (string?)f["kwargs"]!["reason"]);
        Assert.IsType<JsonArray>(f["tb"]);
    }

    [Fact]
    public void A_failure_carries_its_error_code_in_the_message_and_for_cinder_classes_as_kwarg_error_code()
    {
        var cinder = JsonNode.Parse(RemoteFailure.InvalidVolume("too big", ErrorCodes.SizeMismatch).ToJsonString())!;
        Assert.Equal("Invalid volume: too big [error_code: SizeMismatch]", (string?)cinder["message"]);
        Assert.Equal((string?)cinder["message"], (string?)cinder["args"]![0]);
        Assert.Equal("SizeMismatch", (string?)cinder["kwargs"]![RemoteFailure.ErrorCodeKey]);
        Assert.Null(cinder["kwargs"]!["code"]); // CinderException's HTTP status: not ours to set

        // oslo's dispatcher exceptions take no kwargs: a client that rebuilds them would fail on an extra one.
        var oslo = JsonNode.Parse(RemoteFailure.NoSuchMethod("frobnicate").ToJsonString())!;
        Assert.EndsWith("[error_code: UnsupportedRequest]", (string?)oslo["message"], StringComparison.Ordinal);
        Assert.Empty(oslo["kwargs"]!.AsObject());
        Assert.Equal(ErrorCodes.VolumeNotFound, RemoteFailure.VolumeNotFound(Guid.NewGuid().ToString()).Code);
        Assert.Equal(ErrorCodes.InvalidRequest, RemoteFailure.InvalidInput("x").Code);
        Assert.Equal(ErrorCodes.InternalError, RemoteFailure.Unexpected(new InvalidOperationException("x")).Code);
    }

    [Fact]
    public void Timestamps_follow_oslo_and_python()
    {
        var t = new DateTimeOffset(2026, 11, 24, 22, 31, 5, TimeSpan.Zero).AddTicks(1_234_560);
        Assert.Equal("2026-11-24 22:31:05.123456", OsloTime.Notification(t));
        Assert.Equal("2026-11-24 22:31:05", OsloTime.Notification(t.AddTicks(-1_234_560)));
        Assert.Equal("2026-11-24T22:31:05.123456", OsloTime.Iso(t));
        Assert.Equal("2026-11-24T22:31:05.123456", CinderPayloads.IsoOf("2026-11-24T22:31:05.123456+00:00"));
    }

    [Fact]
    public void The_topology_is_what_cinder_volume_declares_for_host_at_backend()
    {
        var t = new OsloTopology(new OsloOptions { Host = "hostA@nfs" });
        Assert.Equal(["cinder-volume", "cinder-volume.hostA@nfs", "cinder-volume.hostA@nfs.hostA"], t.TopicQueues);
        Assert.Equal(["cinder-volume_fanout", "cinder-volume.hostA@nfs_fanout"], t.FanoutExchanges);
        Assert.False(t.Durable);
        Assert.Empty(t.TopicQueueArguments());
        Assert.Equal(1_800_000, t.FanoutQueueArguments()["x-expires"]);
        Assert.Matches("^cinder-volume_fanout_[0-9a-f]{32}$", OsloTopology.FanoutQueueName("cinder-volume_fanout"));

        var q = new OsloTopology(new OsloOptions { Host = "hostA@nfs", QuorumQueues = true, TransientQueuesTtlSeconds = 0 });
        Assert.True(q.Durable);
        Assert.Equal("quorum", q.TopicQueueArguments()["x-queue-type"]);
        Assert.Empty(q.FanoutQueueArguments());
    }
}
