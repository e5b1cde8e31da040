using System.Collections.Concurrent;
using System.Diagnostics;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using NfsVolumeWorker.Hosting;
using NfsVolumeWorker.Oslo.Rpc;
using NfsVolumeWorker.Testing;
using Xunit.Abstractions;

namespace NfsVolumeWorker.Oslo.Tests;

/// <summary>The worker, in-process, serving backend hostA@nfs with a temp directory as share 127.0.0.1:/export, on a vhost.
/// Given a <c>root</c>, it uses (and leaves) that directory's <c>export</c> as the share: a later worker can take over.</summary>
public sealed class OsloWorker : IAsyncDisposable
{
    private int _disposed;

    public const string Host = "hostA@nfs";
    public const string Export = "127.0.0.1:/export";

    private readonly WebApplication _app;
    private readonly DirectoryInfo _root;
    private readonly bool _ownsRoot;

    private OsloWorker(WebApplication app, DirectoryInfo root, bool ownsRoot, string shareDir, CapturingLoggerProvider logs)
    {
        _app = app;
        _root = root;
        _ownsRoot = ownsRoot;
        ShareDirectory = shareDir;
        Logs = logs;
    }

    public string ShareDirectory { get; }

    public CapturingLoggerProvider Logs { get; }

    public IServiceProvider Services => _app.Services;

    /// <param name="waitUntilServing">False for a standby: it waits for the adapter's lease and serves nothing yet.</param>
    public static async Task<OsloWorker> StartAsync(VirtualHost vhost, IDictionary<string, string?>? extra = null, DirectoryInfo? sharedRoot = null, bool waitUntilServing = true)
    {
        var root = sharedRoot ?? Directory.CreateTempSubdirectory("nfsvol-oslo-");
        var share = Directory.CreateDirectory(Path.Combine(root.FullName, "export")).FullName;
        var settings = new Dictionary<string, string?>
        {
            ["Broker:Url"] = vhost.AmqpUri.AbsoluteUri,
            ["Shares:Items:0:Export"] = Export,
            ["Shares:Items:0:Path"] = share,
            ["Shares:RequireMountedShares"] = "false", // a temp directory stands in for the NFS mount
            ["Shares:MountPointBase"] = Path.Combine(root.FullName, "mnt"),
            ["Worker:PartitionCount"] = "4",
            ["Worker:InstanceName"] = "oslo-test",
            ["Http:Urls"] = "http://127.0.0.1:0",
            ["Oslo:Enabled"] = "true",
            ["Oslo:Host"] = Host,
            ["Logging:LogLevel:Default"] = "Information",
            ["Logging:LogLevel:NfsVolumeWorker.Oslo"] = "Debug",
        };
        foreach (var (k, v) in extra ?? new Dictionary<string, string?>())
        {
            settings[k] = v;
        }
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { ContentRootPath = AppContext.BaseDirectory, Args = [] });
        builder.Configuration.AddInMemoryCollection(settings);
        var logs = new CapturingLoggerProvider();
        builder.Logging.ClearProviders();
        builder.Logging.AddProvider(logs);
        builder.AddNfsVolumeWorker();
        var app = builder.Build();
        await app.StartAsync();
        if (settings["Oslo:Enabled"] == "true" && waitUntilServing)
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            await app.Services.GetRequiredService<OsloRpcServer>().Ready.WaitAsync(cts.Token);
        }
        return new OsloWorker(app, root, sharedRoot is null, share, logs);
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1)
        {
            return; // stopped already (a failover test stops the active one first)
        }
        await _app.StopAsync();
        await _app.DisposeAsync();
        if (!_ownsRoot)
        {
            return;
        }
        try
        {
            _root.Delete(recursive: true);
        }
        catch (IOException)
        {
            // best effort
        }
    }
}

/// <summary>Keeps every log line (with exception text) so tests can check that secrets never appear.</summary>
public sealed class CapturingLoggerProvider : ILoggerProvider
{
    public ConcurrentQueue<string> Lines { get; } = new();

    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

    public void Dispose() { }

    public string All => string.Join('\n', Lines);

    private sealed class Logger(CapturingLoggerProvider owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(LogLevel logLevel) => true;
        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            owner.Lines.Enqueue($"{logLevel} {category}: {formatter(state, exception)} {exception}");
    }
}

/// <summary>Runs the interop scripts with /usr/bin/python3 (Debian's oslo.messaging and Cinder). A missing
/// package fails the test with the install line; nothing is skipped.</summary>
public static class Python
{
    public const string Interpreter = "/usr/bin/python3";

    public static async Task<string> RunAsync(ITestOutputHelper output, string script, params string[] args)
    {
        var dir = Path.Combine(AppContext.BaseDirectory, "python");
        var psi = new ProcessStartInfo(Interpreter) { WorkingDirectory = dir, RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add(Path.Combine(dir, script));
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }
        psi.Environment["PYTHONDONTWRITEBYTECODE"] = "1";
        psi.Environment["PYTHONUNBUFFERED"] = "1";
        using var process = Process.Start(psi) ?? throw new InvalidOperationException($"{Interpreter} did not start");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(5));
        try
        {
            await process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw;
        }
        var o = await stdout;
        var e = await stderr;
        output.WriteLine($"$ {Interpreter} {script} {string.Join(' ', args)}\n{o}");
        if (e.Length > 0)
        {
            output.WriteLine("stderr:\n" + e);
        }
        Assert.True(process.ExitCode != 3, $"A Python package is missing: {e}");
        Assert.True(process.ExitCode == 0, $"{script} failed (exit {process.ExitCode}):\n{e}\n{o}");
        Assert.EndsWith("PASS", o.TrimEnd(), StringComparison.Ordinal);
        return o;
    }

    public static string RabbitUrl(VirtualHost vhost) => "rabbit://" + vhost.AmqpUri.AbsoluteUri["amqp://".Length..];
}
