using System.Diagnostics;
using System.Text;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;
using Xunit.Abstractions;

namespace NfsVolumeWorker.Testing.Tests;

/// <summary>Each test starts a broker of its own: one at a time, next to the shared one.</summary>
[CollectionDefinition(nameof(DedicatedBrokers))]
public sealed class DedicatedBrokers;

[Collection(nameof(DedicatedBrokers))]
public sealed class DedicatedBrokerTests(ITestOutputHelper output)
{
    [Fact]
    public async Task A_dedicated_broker_with_a_5_s_consumer_timeout_closes_a_channel_that_holds_an_unacked_message_longer()
    {
        await using var broker = await RabbitMqBroker.StartDedicatedAsync(TimeSpan.FromSeconds(5));
        output.WriteLine(broker.StartupLog);
        Assert.NotSame(broker, await RabbitMqBroker.SharedAsync());

        var factory = new ConnectionFactory { Uri = broker.AmqpUri };
        await using var connection = await factory.CreateConnectionAsync("consumer-timeout");
        await using var channel = await connection.CreateChannelAsync(
            new CreateChannelOptions(publisherConfirmationsEnabled: true, publisherConfirmationTrackingEnabled: true));
        await channel.QueueDeclareAsync("slow", durable: true, exclusive: false, autoDelete: false);
        await channel.BasicPublishAsync("", "slow", Encoding.UTF8.GetBytes("long operation"));

        var closed = new TaskCompletionSource<ShutdownEventArgs>(TaskCreationOptions.RunContinuationsAsynchronously);
        channel.ChannelShutdownAsync += (_, reason) =>
        {
            closed.TrySetResult(reason);
            return Task.CompletedTask;
        };
        var delivered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var consumer = new AsyncEventingBasicConsumer(channel);
        consumer.ReceivedAsync += (_, _) =>
        {
            delivered.TrySetResult(); // and never acked
            return Task.CompletedTask;
        };
        await channel.BasicConsumeAsync("slow", autoAck: false, consumer);
        await delivered.Task.WaitAsync(TimeSpan.FromSeconds(10));
        var held = Stopwatch.StartNew();

        var reason = await closed.Task.WaitAsync(TimeSpan.FromSeconds(60));
        output.WriteLine($"closed after {held.Elapsed.TotalSeconds:0.0} s: {reason.ReplyCode} {reason.ReplyText}");

        Assert.Equal(ShutdownInitiator.Peer, reason.Initiator);
        Assert.Equal(406, reason.ReplyCode); // PRECONDITION_FAILED
        Assert.Contains("PRECONDITION_FAILED", reason.ReplyText, StringComparison.Ordinal);
        Assert.Contains("delivery acknowledgement", reason.ReplyText, StringComparison.Ordinal);
        Assert.Contains("timed out", reason.ReplyText, StringComparison.Ordinal);
        Assert.True(held.Elapsed >= TimeSpan.FromSeconds(4), $"closed after {held.Elapsed}");
        Assert.True(connection.IsOpen, "only the channel is closed, not the connection");

        // The broker puts the message back: another channel gets it again.
        // The requeue follows the channel's close asynchronously.
        Assert.Equal(1, await Eventually.WaitAsync(() => broker.MessageCountAsync("/", "slow"), n => n == 1, TimeSpan.FromSeconds(10)));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task The_scripts_stop_leaves_no_beam_or_epmd_process_of_that_broker(bool fast)
    {
        var broker = await RabbitMqBroker.StartDedicatedAsync();
        output.WriteLine(broker.StartupLog);
        var beam = broker.BrokerProcessId ?? throw new InvalidOperationException("no broker pid");
        var epmd = broker.EpmdProcessId ?? throw new InvalidOperationException("no epmd pid");
        Assert.Equal("beam.smp", ProcessInfo.Command(beam));
        Assert.Equal("epmd", ProcessInfo.Command(epmd));
        var shared = await RabbitMqBroker.SharedAsync();
        Assert.NotEqual(shared.BrokerProcessId, beam);
        Assert.NotEqual(shared.EpmdProcessId, epmd);

        var sw = Stopwatch.StartNew();
        await broker.StopAsync(fast);
        output.WriteLine($"stopped ({(fast ? "--fast" : "rabbitmqctl stop")}) in {sw.Elapsed.TotalSeconds:0.0} s");

        Assert.NotEqual("beam.smp", ProcessInfo.Command(beam));
        Assert.NotEqual("epmd", ProcessInfo.Command(epmd));
        Assert.False(Directory.Exists(broker.DataDirectory));
        // The shared broker and its epmd are untouched.
        if (shared.Mode == RabbitMqBrokerMode.Private)
        {
            Assert.Equal("beam.smp", ProcessInfo.Command(shared.BrokerProcessId!.Value));
            Assert.Equal("epmd", ProcessInfo.Command(shared.EpmdProcessId!.Value));
            await shared.CheckConnectsAsync();
        }

        await broker.StopAsync(fast); // idempotent
    }
}
