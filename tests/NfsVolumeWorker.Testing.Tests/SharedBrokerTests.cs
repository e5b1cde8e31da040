using System.Diagnostics;
using System.Text;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;
using RabbitMQ.Client.Exceptions;
using Xunit.Abstractions;

namespace NfsVolumeWorker.Testing.Tests;

public sealed class SharedBrokerTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(20);

    [Fact]
    public async Task The_shared_broker_starts_once_and_is_private_on_a_machine_without_a_url_or_docker()
    {
        var broker = await RabbitMqBroker.SharedAsync();
        output.WriteLine($"{broker.Description}; obtained in {broker.StartupTime.TotalSeconds:0.0} s");
        output.WriteLine(broker.StartupLog);

        Assert.Same(broker, await RabbitMqBroker.SharedAsync());
        await broker.CheckConnectsAsync();

        var (dockerAnswers, _) = await DockerProbe.ProbeAsync(TimeSpan.FromSeconds(1));
        if (Environment.GetEnvironmentVariable(RabbitMqBrokerOptions.UrlVariable) is null or "" && !dockerAnswers)
        {
            Assert.Equal(RabbitMqBrokerMode.Private, broker.Mode);
            Assert.NotNull(broker.BrokerProcessId);
            Assert.Equal("beam.smp", ProcessInfo.Command(broker.BrokerProcessId.Value));
            Assert.NotNull(broker.ManagementUri);
            Assert.Equal("127.0.0.1", broker.AmqpUri.Host);
        }
    }

    [Fact]
    public async Task A_connection_publishes_with_publisher_confirms_and_consumes_on_a_fresh_vhost()
    {
        var broker = await RabbitMqBroker.SharedAsync();
        await using var vhost = await broker.CreateVirtualHostAsync("confirms");
        Assert.EndsWith("/" + Uri.EscapeDataString(vhost.Name), vhost.AmqpUri.AbsoluteUri, StringComparison.Ordinal);

        await using var connection = await vhost.ConnectAsync();
        Assert.Equal(vhost.Name, vhost.CreateConnectionFactory().VirtualHost);
        await using var channel = await connection.CreateChannelAsync(
            new CreateChannelOptions(publisherConfirmationsEnabled: true, publisherConfirmationTrackingEnabled: true));
        await channel.QueueDeclareAsync("work", durable: true, exclusive: false, autoDelete: false);

        for (var i = 0; i < 10; i++)
        {
            // With confirmation tracking, this returns once the broker has confirmed the message (it throws on a nack).
            await channel.BasicPublishAsync("", "work", mandatory: true,
                new BasicProperties { Persistent = true, MessageId = $"m{i}" }, Encoding.UTF8.GetBytes($"body {i}"));
        }

        Assert.Equal(10, await vhost.MessageCountAsync("work"));

        var received = new List<string>();
        var all = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var consumer = new AsyncEventingBasicConsumer(channel);
        consumer.ReceivedAsync += async (_, ea) =>
        {
            received.Add(Encoding.UTF8.GetString(ea.Body.Span));
            await channel.BasicAckAsync(ea.DeliveryTag, multiple: false);
            if (received.Count == 10)
            {
                all.TrySetResult();
            }
        };
        await channel.BasicConsumeAsync("work", autoAck: false, consumer);
        await all.Task.WaitAsync(Wait);

        Assert.Equal(Enumerable.Range(0, 10).Select(i => $"body {i}"), received);
        var queue = await Eventually.WaitAsync(
            async () => (await vhost.ListQueuesAsync()).Single(q => q.Name == "work"),
            q => q.Messages == 0 && q.Consumers == 1, Wait);
        Assert.Equal(0, queue.Messages);
        Assert.Equal("classic", queue.Type);
    }

    [Fact]
    public async Task Two_vhosts_are_isolated_from_each_other()
    {
        var broker = await RabbitMqBroker.SharedAsync();
        await using var a = await broker.CreateVirtualHostAsync("iso-a");
        await using var b = await broker.CreateVirtualHostAsync("iso-b");
        Assert.NotEqual(a.Name, b.Name);

        await using (var connection = await a.ConnectAsync())
        await using (var channel = await connection.CreateChannelAsync(
                         new CreateChannelOptions(publisherConfirmationsEnabled: true, publisherConfirmationTrackingEnabled: true)))
        {
            await channel.QueueDeclareAsync("only-in-a", durable: true, exclusive: false, autoDelete: false);
            await channel.BasicPublishAsync("", "only-in-a", Encoding.UTF8.GetBytes("a"));
        }

        Assert.Equal(1, await a.MessageCountAsync("only-in-a"));
        var missing = await Assert.ThrowsAsync<OperationInterruptedException>(() => b.MessageCountAsync("only-in-a"));
        Assert.Equal((ushort)404, missing.ShutdownReason?.ReplyCode);
        Assert.Contains(await a.ListQueuesAsync(), q => q.Name == "only-in-a");
        Assert.DoesNotContain(await b.ListQueuesAsync(), q => q.Name == "only-in-a");
    }

    [Fact]
    public async Task A_quorum_queue_with_single_active_consumer_has_exactly_one_active_consumer_of_two()
    {
        var broker = await RabbitMqBroker.SharedAsync();
        await using var vhost = await broker.CreateVirtualHostAsync("sac");
        await using var connection = await vhost.ConnectAsync();
        await using var first = await connection.CreateChannelAsync(
            new CreateChannelOptions(publisherConfirmationsEnabled: true, publisherConfirmationTrackingEnabled: true));
        await using var second = await connection.CreateChannelAsync();
        var arguments = new Dictionary<string, object?> { ["x-queue-type"] = "quorum", ["x-single-active-consumer"] = true };
        await first.QueueDeclareAsync("partition-0", durable: true, exclusive: false, autoDelete: false, arguments);

        var deliveries = new List<string>();
        AsyncEventingBasicConsumer Consumer(IChannel channel, string who)
        {
            var consumer = new AsyncEventingBasicConsumer(channel);
            consumer.ReceivedAsync += async (_, ea) =>
            {
                lock (deliveries)
                {
                    deliveries.Add(who);
                }

                await channel.BasicAckAsync(ea.DeliveryTag, multiple: false);
            };
            return consumer;
        }

        await first.BasicQosAsync(0, 10, global: false);
        await second.BasicQosAsync(0, 10, global: false);
        var firstTag = await first.BasicConsumeAsync("partition-0", autoAck: false, "first", Consumer(first, "first"));
        var secondTag = await second.BasicConsumeAsync("partition-0", autoAck: false, "second", Consumer(second, "second"));

        var queue = await Eventually.WaitAsync(
            async () => (await vhost.ListQueuesAsync()).Single(q => q.Name == "partition-0"),
            q => q.ConsumerDetails.Count == 2, Wait);
        foreach (var c in queue.ConsumerDetails)
        {
            output.WriteLine($"{c.ConsumerTag}: active={c.Active} status={c.ActivityStatus}; queue sac tag={queue.SingleActiveConsumerTag}");
        }

        Assert.Equal("quorum", queue.Type);
        Assert.True(queue.IsSingleActiveConsumer);
        Assert.Equal(2, queue.ConsumerDetails.Count);
        var active = Assert.Single(queue.ActiveConsumers);
        Assert.Equal(firstTag, active.ConsumerTag);
        Assert.Equal("single_active", active.ActivityStatus);
        Assert.Equal("waiting", queue.ConsumerDetails.Single(c => c.ConsumerTag == secondTag).ActivityStatus);

        for (var i = 0; i < 5; i++)
        {
            await first.BasicPublishAsync("", "partition-0", Encoding.UTF8.GetBytes($"{i}"));
        }

        await Eventually.WaitAsync(() => Task.FromResult(deliveries.Count), n => n >= 5, Wait);
        Assert.All(deliveries, who => Assert.Equal("first", who));

        // The active one leaves: the waiting one takes over at once.
        await first.BasicCancelAsync(firstTag);
        queue = await Eventually.WaitAsync(
            async () => (await vhost.ListQueuesAsync()).Single(q => q.Name == "partition-0"),
            q => q.ConsumerDetails.Count == 1 && q.ActiveConsumers.Count == 1, Wait);
        Assert.Equal(secondTag, Assert.Single(queue.ActiveConsumers).ConsumerTag);
    }

    [Fact]
    public async Task Message_counts_are_exact_at_once_and_count_ready_messages_only()
    {
        var broker = await RabbitMqBroker.SharedAsync();
        await using var vhost = await broker.CreateVirtualHostAsync("count");
        await using var connection = await vhost.ConnectAsync();
        await using var channel = await connection.CreateChannelAsync(
            new CreateChannelOptions(publisherConfirmationsEnabled: true, publisherConfirmationTrackingEnabled: true));
        await channel.QueueDeclareAsync("q", durable: true, exclusive: false, autoDelete: false,
            new Dictionary<string, object?> { ["x-queue-type"] = "quorum" });
        Assert.Equal(0, await vhost.MessageCountAsync("q"));
        for (var i = 0; i < 3; i++)
        {
            await channel.BasicPublishAsync("", "q", Encoding.UTF8.GetBytes("x"));
        }

        Assert.Equal(3, await vhost.MessageCountAsync("q"));
        var got = await channel.BasicGetAsync("q", autoAck: false);
        Assert.NotNull(got);
        Assert.Equal(2, await vhost.MessageCountAsync("q"));
    }

    [Fact]
    public async Task A_deleted_vhost_refuses_connections()
    {
        var broker = await RabbitMqBroker.SharedAsync();
        var vhost = await broker.CreateVirtualHostAsync("gone");
        await (await vhost.ConnectAsync()).DisposeAsync();
        await vhost.DeleteAsync();
        await vhost.DeleteAsync(); // idempotent

        // RabbitMQ.Client 7.2.2 may return an open connection before the broker's refusal arrives
        // (connection.close 530 in answer to connection.open): either way it ends closed by the peer.
        ushort? code;
        try
        {
            var connection = await vhost.ConnectAsync();
            await using (connection)
            {
                await Eventually.WaitAsync(() => Task.FromResult(connection.IsOpen), open => !open, TimeSpan.FromSeconds(10));
                code = connection.CloseReason?.ReplyCode;
                output.WriteLine($"connect returned, then: {connection.CloseReason}");
            }
        }
        catch (BrokerUnreachableException e)
        {
            output.WriteLine($"connect threw: {e.InnerException?.Message}");
            code = 530;
        }

        Assert.Equal((ushort)530, code); // NOT_ALLOWED - vhost ... not found
    }
}
