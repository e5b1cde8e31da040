using System.Collections.Concurrent;
using MassTransit;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using NfsVolumeWorker.Hosting;
using NfsVolumeWorker.Storage.Engine;

namespace NfsVolumeWorker.Tests.Support;

/// <summary>Settings every test worker shares.</summary>
public static class WorkerSettings
{
    /// <summary>Fewer partitions than the default 16: quicker to start, and the same function.</summary>
    public const int Partitions = 8;

    public static Dictionary<string, string?> For(Uri brokerUri, string shareDirectory, string instanceName, IDictionary<string, string?>? extra = null)
    {
        var settings = new Dictionary<string, string?>(StringComparer.OrdinalIgnoreCase)
        {
            ["Broker:Url"] = brokerUri.ToString(),
            ["Shares:Items:0:Export"] = shareDirectory,
            ["Shares:MountPointBase"] = Path.Combine(Path.GetTempPath(), "nfsvol-unused-mnt"),
            ["Http:Urls"] = "http://127.0.0.1:0",
            ["Worker:PartitionCount"] = Partitions.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["Worker:SweepInterval"] = "00:00:00.500",
            ["Worker:InstanceName"] = instanceName,
            ["Worker:ShutdownTimeout"] = "00:00:05",
            ["Worker:TransientBackoff"] = "00:00:00.200",
            ["Engine:LockTimeout"] = "00:02:00",
            ["Logging:LogLevel:Default"] = "Warning",
            ["Logging:LogLevel:NfsVolumeWorker"] = "Information",
            ["Logging:LogLevel:MassTransit"] = "Warning",
        };
        foreach (var (k, v) in extra ?? new Dictionary<string, string?>())
        {
            settings[k] = v;
        }
        return settings;
    }
}

/// <summary>The worker host built exactly as Program.cs builds it (AddNfsVolumeWorker), with in-memory
/// configuration, running inside the test process.</summary>
public sealed class InProcessWorker : IAsyncDisposable
{
    private readonly WebApplication _app;

    private InProcessWorker(WebApplication app, CapturingLoggerProvider logs)
    {
        _app = app;
        Logs = logs;
    }

    public CapturingLoggerProvider Logs { get; }

    public IServiceProvider Services => _app.Services;

    public VolumeEngine Engine => _app.Services.GetRequiredService<VolumeEngine>();

    public static async Task<InProcessWorker> StartAsync(Uri brokerUri, string shareDirectory, ITestOutputHelper? output,
        IDictionary<string, string?>? extra = null, string instanceName = "in-process", Action<IServiceCollection>? services = null)
    {
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = [], ContentRootPath = AppContext.BaseDirectory, EnvironmentName = "Production" });
        builder.Configuration.AddInMemoryCollection(WorkerSettings.For(brokerUri, shareDirectory, instanceName, extra));
        var logs = new CapturingLoggerProvider(output);
        builder.Logging.ClearProviders();
        builder.Logging.AddProvider(logs);
        builder.AddNfsVolumeWorker();
        services?.Invoke(builder.Services); // a test's fault injection (an IStepObserver, say)
        // Start returns once the receive endpoints are bound, so a test may publish at once.
        builder.Services.Configure<MassTransitHostOptions>(o =>
        {
            o.WaitUntilStarted = true;
            o.StartTimeout = TimeSpan.FromSeconds(60);
        });
        var app = builder.Build();
        app.MapWorkerEndpoints();
        await app.StartAsync();
        return new InProcessWorker(app, logs);
    }

    public async ValueTask DisposeAsync()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        try
        {
            await _app.StopAsync(cts.Token);
        }
        finally
        {
            await _app.DisposeAsync();
            Logs.Detach();
        }
    }
}

/// <summary>Keeps every log entry (for assertions) and copies warnings and above, plus the worker's own
/// entries, to the test output.</summary>
public sealed class CapturingLoggerProvider(ITestOutputHelper? output) : ILoggerProvider
{
    private volatile ITestOutputHelper? _output = output;

    public ConcurrentQueue<(string Category, LogLevel Level, EventId Id, string Message)> Entries { get; } = new();

    public void Detach() => _output = null;

    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

    public int Count(int eventId) => Entries.Count(e => e.Id.Id == eventId);

    public void Dispose()
    {
    }

    private sealed class Logger(CapturingLoggerProvider owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel != LogLevel.None;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            var message = formatter(state, exception) + (exception is null ? "" : " " + exception);
            owner.Entries.Enqueue((category, logLevel, eventId, message));
            if (logLevel >= LogLevel.Warning && owner._output is { } o)
            {
                try
                {
                    o.WriteLine($"{DateTime.UtcNow:HH:mm:ss.fff} {logLevel} {category}: {message}");
                }
                catch (InvalidOperationException)
                {
                    // the test has ended
                }
            }
        }
    }
}
