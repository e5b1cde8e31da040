using System.Text;
using System.Text.Json;

namespace NfsVolumeWorker.Contracts.Tests;

public sealed class MassTransitEnvelopeSpecs
{
    [Fact]
    public void An_encoded_command_reads_back_with_its_type_id_and_fields_as_MassTransit_writes_them()
    {
        var command = new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = Guid.NewGuid(), SnapshotId = Guid.NewGuid() };
        var messageId = Guid.NewGuid();

        var body = MassTransitEnvelope.Encode(command, messageId, "spec");

        Assert.True(MassTransitEnvelope.TryRead(body, out var read));
        Assert.Equal(nameof(CreateSnapshot), read.TypeName);
        Assert.Equal(messageId, read.MessageId);
        Assert.Equal(command.SnapshotId, read.Message["snapshotId"]!.GetValue<Guid>()); // camelCase, as MassTransit
        using var raw = JsonDocument.Parse(body);
        Assert.Equal("urn:message:NfsVolumeWorker.Contracts:CreateSnapshot", raw.RootElement.GetProperty("messageType")[0].GetString());
        Assert.Equal("NfsVolumeWorker.Contracts:CreateSnapshot", MassTransitEnvelope.ExchangeOf(typeof(CreateSnapshot)));
    }

    [Theory]
    [InlineData("")]
    [InlineData("not json")]
    [InlineData("[]")]
    [InlineData("{\"messageType\":[\"urn:message:Other.Namespace:CreateSnapshot\"],\"message\":{}}")]
    [InlineData("{\"messageType\":\"urn:message:NfsVolumeWorker.Contracts:CreateSnapshot\",\"message\":{}}")]
    [InlineData("{\"messageType\":[\"urn:message:NfsVolumeWorker.Contracts:CreateSnapshot\"],\"message\":7}")]
    [InlineData("{\"messageType\":[\"urn:message:NfsVolumeWorker.Contracts:\\ud800\"],\"message\":{}}")]
    public void Anything_that_is_not_an_envelope_of_a_contract_type_is_refused_without_an_exception(string body)
    {
        Assert.False(MassTransitEnvelope.TryRead(Encoding.UTF8.GetBytes(body), out _));
    }

    [Fact]
    public void A_message_id_that_is_not_a_guid_is_left_out_rather_than_refused()
    {
        var body = "{\"messageId\":\"abc\",\"messageType\":[\"urn:message:NfsVolumeWorker.Contracts:SnapshotCreated\"],\"message\":{}}"u8.ToArray();
        Assert.True(MassTransitEnvelope.TryRead(body, out var read));
        Assert.Null(read.MessageId);
    }
}
