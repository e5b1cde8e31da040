using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Testing;

namespace NfsVolumeWorker.Tests.Support;

/// <summary>A fresh vhost on the shared broker, a fresh share directory, the worker in-process on them,
/// a producer and an event subscriber.</summary>
public sealed class WorkerTestBed : IAsyncDisposable
{
    public const long MiB = 1024 * 1024;

    private readonly TempDirectory _root;

    private WorkerTestBed(TempDirectory root, VirtualHost vhost, InProcessWorker worker, EventCollector events, CommandBus producer)
    {
        _root = root;
        VirtualHost = vhost;
        Worker = worker;
        Events = events;
        Producer = producer;
    }

    public VirtualHost VirtualHost { get; }

    public InProcessWorker Worker { get; }

    public EventCollector Events { get; }

    public CommandBus Producer { get; }

    public string Share => Path.Combine(_root.Path, "share");

    public string Root => _root.Path;

    public string PathOf(string name) => Path.Combine(Share, name);

    public static async Task<WorkerTestBed> StartAsync(ITestOutputHelper output, string prefix, IDictionary<string, string?>? settings = null, RabbitMqBroker? broker = null,
        Action<Microsoft.Extensions.DependencyInjection.IServiceCollection>? services = null)
    {
        broker ??= await RabbitMqBroker.SharedAsync();
        var root = new TempDirectory();
        Directory.CreateDirectory(Path.Combine(root.Path, "share"));
        var vhost = await broker.CreateVirtualHostAsync(prefix);
        var events = await EventCollector.StartAsync(vhost.AmqpUri);
        var worker = await InProcessWorker.StartAsync(vhost.AmqpUri, Path.Combine(root.Path, "share"), output, settings, services: services);
        var producer = await CommandBus.StartAsync(vhost.AmqpUri);
        return new WorkerTestBed(root, vhost, worker, events, producer);
    }

    /// <summary>Publishes a command and waits for its terminal event.</summary>
    public async Task<ReceivedEvent> RunAsync<T>(T command, TimeSpan? timeout = null)
        where T : VolumeCommand
    {
        await Producer.PublishAsync(command);
        return await Events.WaitForAsync(command.CommandId, timeout);
    }

    public async Task<ReceivedEvent> RunOkAsync<T>(T command, string expectedEvent, TimeSpan? timeout = null)
        where T : VolumeCommand
    {
        var e = await RunAsync(command, timeout);
        Assert.True(e.Type == expectedEvent, $"{typeof(T).Name} {command.CommandId}: expected {expectedEvent}, got {e}");
        Assert.Equal(EventIds.TerminalEventId(command.CommandId), e.MessageId);
        Assert.Equal(command.VolumeId, e.VolumeId);
        return e;
    }

    public async ValueTask DisposeAsync()
    {
        await Producer.DisposeAsync();
        await Worker.DisposeAsync();
        await Events.DisposeAsync();
        await VirtualHost.DisposeAsync();
        _root.Dispose();
    }
}

internal static class Ids
{
    /// <summary>Two fresh volume ids in the same partition.</summary>
    public static (Guid A, Guid B) SamePartition(int partitions = WorkerSettings.Partitions)
    {
        var a = Guid.NewGuid();
        while (true)
        {
            var b = Guid.NewGuid();
            if (PartitionKey.PartitionOf(a, partitions) == PartitionKey.PartitionOf(b, partitions))
            {
                return (a, b);
            }
        }
    }

    /// <summary><paramref name="count"/> fresh volume ids in partition <paramref name="partition"/>.</summary>
    public static IEnumerable<Guid> InPartition(int partition, int count, int partitions = WorkerSettings.Partitions)
    {
        var found = 0;
        while (found < count)
        {
            var id = Guid.NewGuid();
            if (PartitionKey.PartitionOf(id, partitions) == partition)
            {
                found++;
                yield return id;
            }
        }
    }
}
