using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Tests.Support;

namespace NfsVolumeWorker.Tests;

/// <summary>The test producer itself: a test must never lose a command unnoticed.</summary>
public sealed class CommandBusSpecs(ITestOutputHelper output)
{
    private const long MiB = WorkerTestBed.MiB;

    [Fact]
    public async Task The_test_producer_fails_loudly_on_a_command_no_queue_would_receive()
    {
        var broker = await NfsVolumeWorker.Testing.RabbitMqBroker.SharedAsync();
        await using var vhost = await broker.CreateVirtualHostAsync("unrouted");
        await using var producer = await CommandBus.StartAsync(vhost.AmqpUri);
        var publish = producer.PublishAsync(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = Guid.NewGuid(), SizeBytes = MiB });
        var e = await Record.ExceptionAsync(() => publish.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.NotNull(e);
        Assert.IsNotType<TimeoutException>(e);
        output.WriteLine($"{e.GetType().Name}: {e.Message}");
    }
}
