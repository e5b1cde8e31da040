using NfsVolumeWorker.Testing;

namespace NfsVolumeWorker.Tests.Support;

/// <summary>A fresh vhost on the shared broker and a share directory, worker processes started on them, a producer
/// and an event subscriber. At the end every worker is stopped and reported (its warnings to the test's output, its
/// whole log to a file): the record a failure under load needs.</summary>
public sealed class WorkerProcessBed : IAsyncDisposable
{
    private readonly ITestOutputHelper _output;
    private readonly TempDirectory _root;
    private readonly List<WorkerProcess> _workers = [];

    private WorkerProcessBed(ITestOutputHelper output, TempDirectory root, VirtualHost vhost, EventCollector events, CommandBus producer)
    {
        _output = output;
        _root = root;
        VirtualHost = vhost;
        Events = events;
        Producer = producer;
        Share = Directory.CreateDirectory(Path.Combine(root.Path, "share")).FullName;
    }

    public VirtualHost VirtualHost { get; }

    /// <summary>The share directory (<c>share</c> under <see cref="Root"/>).</summary>
    public string Share { get; }

    /// <summary>A temporary directory for anything else a test needs beside the share.</summary>
    public string Root => _root.Path;

    public EventCollector Events { get; }

    public CommandBus Producer { get; }

    /// <summary>Every worker started on this bed, in order.</summary>
    public IReadOnlyList<WorkerProcess> Workers => _workers;

    public static async Task<WorkerProcessBed> CreateAsync(ITestOutputHelper output, string prefix)
    {
        var broker = await RabbitMqBroker.SharedAsync();
        var root = new TempDirectory();
        var vhost = await broker.CreateVirtualHostAsync(prefix);
        return new WorkerProcessBed(output, root, vhost, await EventCollector.StartAsync(vhost.AmqpUri), await CommandBus.StartAsync(vhost.AmqpUri));
    }

    public WorkerProcess Start(string instance, IDictionary<string, string?>? extra = null)
    {
        var worker = WorkerProcess.Start(VirtualHost.AmqpUri, Share, instance, extra);
        _workers.Add(worker);
        return worker;
    }

    public async ValueTask DisposeAsync()
    {
        await Task.WhenAll(_workers.Select(w => w.DisposeAsync().AsTask()));
        foreach (var w in _workers)
        {
            await w.ReportAsync(_output.WriteLine, VirtualHost.Name);
        }
        await Producer.DisposeAsync();
        await Events.DisposeAsync();
        await VirtualHost.DisposeAsync();
        _root.Dispose();
    }
}
