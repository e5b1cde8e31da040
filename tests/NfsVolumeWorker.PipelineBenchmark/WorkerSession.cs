using NfsVolumeWorker.Testing;

namespace NfsVolumeWorker.PipelineBenchmark;

/// <summary>One worker under test with everything of its own: a vhost on the private broker, a share directory,
/// and a client (publishers and an event subscriber).</summary>
internal sealed class WorkerSession : IAsyncDisposable
{
    private WorkerSession(VirtualHost vhost, WorkerUnderTest worker, CommandDriver driver, string sharePath, string backingPath)
    {
        VirtualHost = vhost;
        Worker = worker;
        Driver = driver;
        SharePath = sharePath;
        BackingPath = backingPath;
    }

    public VirtualHost VirtualHost { get; }

    public WorkerUnderTest Worker { get; }

    public CommandDriver Driver { get; }

    /// <summary>The share as the worker sees it (through the FUSE mount on that column).</summary>
    public string SharePath { get; }

    /// <summary>The same directory without the delay, for setting up files.</summary>
    public string BackingPath { get; }

    /// <summary>Starts a worker on <paramref name="sharePath"/>; <paramref name="name"/> also names its vhost and log.</summary>
    public static async Task<WorkerSession> StartAsync(RabbitMqBroker broker, string name, string sharePath, string backingPath,
        string logDir, PipelineSettings settings, CancellationToken cancellationToken, int? publishers = null)
    {
        var vhost = await broker.CreateVirtualHostAsync("bench-" + name, cancellationToken);
        WorkerUnderTest? worker = null;
        try
        {
            worker = await WorkerUnderTest.StartAsync(name, vhost.AmqpUri, broker.ManagementUri, sharePath, logDir, settings.WorkerArgs, cancellationToken);
            var driver = await CommandDriver.OpenAsync(vhost.AmqpUri, publishers ?? settings.Publishers, cancellationToken);
            return new WorkerSession(vhost, worker, driver, sharePath, backingPath);
        }
        catch
        {
            if (worker is not null)
            {
                await worker.DisposeAsync();
            }
            await vhost.DisposeAsync();
            throw;
        }
    }

    public async ValueTask DisposeAsync()
    {
        await Driver.DisposeAsync();
        await Worker.DisposeAsync();
        await VirtualHost.DisposeAsync();
    }
}
