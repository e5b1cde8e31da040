using System.Text;
using NfsVolumeWorker.Messaging;
using NfsVolumeWorker.Oslo.Wire;
using NfsVolumeWorker.Partitions;
using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Storage.Info;

namespace NfsVolumeWorker.Fuzz.Tests;

/// <summary>Hostile inputs afl-fuzz does not reach: nesting far deeper than its mutations build, bodies over
/// its 1 MiB input limit, numbers at and past the edges of their types. Each is refused with the decoder's
/// documented exception (a dead-lettered message, an oslo message logged and acked, a corrupt info file), and
/// none costs memory out of proportion to its size.</summary>
public sealed class HostileInputSpecs
{
    private const string Command = "55555555-6666-4777-8888-999999999999";
    private const string Volume = "11111111-2222-4333-8444-555555555555";

    private static string Envelope(string type, string message) =>
        $$"""{"messageType":["urn:message:NfsVolumeWorker.Contracts:{{type}}"],"message":{{message}}}""";

    private static string Nested(int depth) => new string('[', depth) + new string(']', depth);

    [Theory]
    [InlineData(65)]
    [InlineData(100_000)]
    public void A_command_nested_deeper_than_64_levels_is_undecodable_not_a_stack_overflow(int depth)
    {
        // System.Text.Json's default MaxDepth is 64: deeper input fails while parsing, before anything recurses.
        var body = Envelope("DeleteVolume", $$"""{"commandId":"{{Command}}","volumeId":"{{Volume}}","extra":{{Nested(depth)}}}""");
        var e = Assert.Throws<CommandDecodeException>(() => CommandEnvelope.Decode(Encoding.UTF8.GetBytes(body), null));
        Assert.Contains("not JSON", e.Message, StringComparison.Ordinal);
        Assert.False(e.NamesNoCommand); // the error queue, not the skipped queue
    }

    [Fact]
    public void Nesting_within_the_limit_in_a_field_the_command_does_not_have_is_ignored()
    {
        var body = Envelope("DeleteVolume", $$"""{"commandId":"{{Command}}","volumeId":"{{Volume}}","extra":{{Nested(60)}}}""");
        var decoded = CommandEnvelope.Decode(Encoding.UTF8.GetBytes(body), null);
        Assert.Equal(Guid.Parse(Volume), decoded.Command.VolumeId);
    }

    [Fact]
    public void An_oversized_command_body_is_decoded_or_refused_with_memory_in_proportion_to_it()
    {
        // 32 MiB: past AFL's 1 MiB inputs, under RabbitMQ's 128 MiB default max_message_size.
        var filler = new string('x', 32 << 20);
        var huge = Encoding.UTF8.GetBytes(Envelope("DeleteVolume", $$"""{"commandId":"{{Command}}","volumeId":"{{Volume}}","junk":"{{filler}}"}"""));
        var decoded = Bounded(huge.Length, () => CommandEnvelope.Decode(huge, null));
        Assert.Equal(Guid.Parse(Volume), decoded.Command.VolumeId);

        var hugeShare = Encoding.UTF8.GetBytes(Envelope("DeleteVolume", $$"""{"commandId":"{{Command}}","volumeId":"{{Volume}}","share":"{{filler}}"}"""));
        var withShare = Bounded(hugeShare.Length, () => CommandEnvelope.Decode(hugeShare, null));
        Assert.Equal(32 << 20, withShare.Command.Share!.Length); // no share has that name: the acceptor answers CommandFailed

        var manyTypes = Encoding.UTF8.GetBytes("""{"messageType":[""" + string.Join(',', Enumerable.Repeat("\"urn:message:X:Y\"", 1 << 20)) + "]}");
        var e = Assert.Throws<CommandDecodeException>(() => Bounded(manyTypes.Length, () => CommandEnvelope.Decode(manyTypes, null)));
        Assert.True(e.NamesNoCommand);
    }

    [Theory]
    [InlineData("9223372036854775808")] // long.MaxValue + 1
    [InlineData("-9223372036854775809")]
    [InlineData("1e999")]
    [InlineData("1.5")]
    [InlineData("\"12abc\"")] // a string that is no number (a numeric string is read: JsonSerializerDefaults.Web)
    [InlineData("\"9223372036854775808\"")]
    [InlineData("true")]
    [InlineData("null")]
    [InlineData("{}")]
    public void A_size_that_is_not_a_64_bit_integer_is_undecodable(string size)
    {
        var body = Envelope("CreateVolume", $$"""{"commandId":"{{Command}}","volumeId":"{{Volume}}","sizeBytes":{{size}}}""");
        var e = Assert.Throws<CommandDecodeException>(() => CommandEnvelope.Decode(Encoding.UTF8.GetBytes(body), null));
        Assert.Contains("not a valid CreateVolume", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("0", "sizeBytes must be positive")]
    [InlineData("-1", "sizeBytes must be positive")]
    [InlineData("-9223372036854775808", "sizeBytes must be positive")]
    public void A_size_that_decodes_but_is_not_positive_is_refused_by_the_acceptor(string size, string problem)
    {
        var body = Envelope("CreateVolume", $$"""{"commandId":"{{Command}}","volumeId":"{{Volume}}","sizeBytes":{{size}}}""");
        var decoded = CommandEnvelope.Decode(Encoding.UTF8.GetBytes(body), null);
        Assert.Equal(problem, CommandValidation.FieldProblem(decoded.Command));
    }

    [Theory]
    [InlineData("\"format\":7", "format 7 is not a format (raw or qcow2)")]
    [InlineData("\"format\":-1", "format -1 is not a format (raw or qcow2)")]
    [InlineData("\"baseFormat\":2147483647", "baseFormat 2147483647 is not a format (raw or qcow2)")]
    public void An_enum_number_out_of_range_decodes_and_is_refused_by_the_acceptor(string field, string problem)
    {
        var body = Envelope("CreateVolume", $$"""{"commandId":"{{Command}}","volumeId":"{{Volume}}","sizeBytes":1024,{{field}}}""");
        Assert.Equal(problem, CommandValidation.FieldProblem(CommandEnvelope.Decode(Encoding.UTF8.GetBytes(body), null).Command));
    }

    [Theory]
    [InlineData("\"format\":\"vmdk\"")]
    [InlineData("\"format\":2147483648")]
    [InlineData("\"commandId\":\"not-a-uuid\"")]
    [InlineData("\"volumeId\":12")]
    [InlineData("\"attached\":\"yes\"")]
    public void A_field_of_the_wrong_type_is_undecodable(string field)
    {
        var body = Envelope("CreateVolume", $$"""{"commandId":"{{Command}}","volumeId":"{{Volume}}","sizeBytes":1024,{{field}}}""");
        Assert.Throws<CommandDecodeException>(() => CommandEnvelope.Decode(Encoding.UTF8.GetBytes(body), null));
    }

    [Theory]
    [InlineData(65)]
    [InlineData(100_000)]
    public void An_oslo_message_nested_too_deep_is_refused_outside_and_inside_the_envelope(int depth)
    {
        var outside = Encoding.UTF8.GetBytes($$"""{"method":"create_volume","args":{{Nested(depth)}}}""");
        Assert.Throws<OsloFormatException>(() => OsloEnvelope.Decode(outside));

        // oslo.message is a JSON string holding JSON: parsed a second time, with the same limit.
        var inner = $$"""{"method":"create_volume","args":{{Nested(depth)}}}""";
        var wrapped = Encoding.UTF8.GetBytes(new System.Text.Json.Nodes.JsonObject { ["oslo.version"] = "2.0", ["oslo.message"] = inner }.ToJsonString());
        Assert.Throws<OsloFormatException>(() => OsloEnvelope.Decode(wrapped));
    }

    [Fact]
    public void An_oversized_oslo_message_is_read_with_memory_in_proportion_to_it()
    {
        var filler = new string('x', 16 << 20);
        var body = Encoding.UTF8.GetBytes($$"""{"method":"delete_volume","args":{"junk":"{{filler}}"},"_unique_id":"u"}""");
        var request = Bounded(body.Length, () => OsloRequest.From(OsloEnvelope.Decode(body)));
        Assert.Equal("delete_volume", request.Method);
    }

    [Theory]
    [InlineData(65)]
    [InlineData(100_000)]
    public void An_info_file_nested_too_deep_is_corrupt(int depth)
    {
        var e = Assert.Throws<StorageException>(() => InfoFile.Parse($$"""{"active":{{Nested(depth)}}}""", "volume-x.info"));
        Assert.Equal(StorageErrorCode.InfoFileCorrupt, e.Code);
    }

    [Theory]
    [InlineData("../../etc")]
    [InlineData("server:/export/../other")]
    [InlineData("server:/export/..")]
    [InlineData("/etc")]
    [InlineData("server:/export\u0000")]
    [InlineData("SERVER:/export")]
    public void A_share_name_that_is_not_configured_resolves_to_nothing_whatever_it_holds(string export)
    {
        // Commands and oslo requests name shares; only a configured export resolves, by exact name, and its
        // directory is <base>/<md5hex(export)> (or the configured path): no part of the name becomes a path.
        var configured = Storage.Shares.ShareMap.FromDefinition("/mnt/nfsvol", "server:/export", null, null);
        var map = new Storage.Shares.ShareMap([configured]);
        var e = Assert.Throws<StorageException>(() => map.Resolve(export));
        Assert.Equal(StorageErrorCode.ShareNotConfigured, e.Code);
        Assert.Same(configured, map.Resolve(" server:/export "));
        Assert.Equal("/mnt/nfsvol", Path.GetDirectoryName(Storage.Shares.ShareMap.FromDefinition("/mnt/nfsvol", "../../etc", null, null).LocalPath));
    }

    /// <summary>Runs <paramref name="decode"/> and asserts it allocated at most a small multiple of the input.</summary>
    private static T Bounded<T>(long inputBytes, Func<T> decode)
    {
        var before = GC.GetAllocatedBytesForCurrentThread();
        try
        {
            return decode();
        }
        finally
        {
            var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            Assert.True(allocated <= (8 * inputBytes) + (16 << 20), $"{allocated} bytes allocated for {inputBytes} bytes of input");
        }
    }
}
