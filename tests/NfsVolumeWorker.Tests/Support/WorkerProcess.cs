using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace NfsVolumeWorker.Tests.Support;

/// <summary>The worker as a real child process: <c>dotnet NfsVolumeWorker.dll --Key=value ...</c>.</summary>
public sealed class WorkerProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _output = new();

    private WorkerProcess(Process process, string instanceName)
    {
        _process = process;
        InstanceName = instanceName;
    }

    public string InstanceName { get; }

    public int Pid => _process.Id;

    public bool HasExited => _process.HasExited;

    /// <summary>Everything the process wrote, stdout and stderr, one line per line.</summary>
    public string Output
    {
        get
        {
            lock (_output)
            {
                return _output.ToString();
            }
        }
    }

    /// <summary>The worker's dll: next to the test assembly (the project reference copies it), else in the
    /// worker project's own bin folder for the same configuration.</summary>
    public static string WorkerDll()
    {
        var here = Path.Combine(AppContext.BaseDirectory, "NfsVolumeWorker.dll");
        if (File.Exists(here) && File.Exists(Path.Combine(AppContext.BaseDirectory, "NfsVolumeWorker.runtimeconfig.json")))
        {
            return here;
        }
        var configuration = new DirectoryInfo(AppContext.BaseDirectory).Parent!.Name; // .../bin/<config>/net10.0/
        var root = NfsVolumeWorker.Testing.RepositoryRoot.TryFind() ?? throw new InvalidOperationException("no repository root above " + AppContext.BaseDirectory);
        var dll = Path.Combine(root, "src", "NfsVolumeWorker", "bin", configuration, "net10.0", "NfsVolumeWorker.dll");
        return File.Exists(dll) ? dll : throw new FileNotFoundException("the worker is not built", dll);
    }

    public static WorkerProcess Start(Uri brokerUri, string shareDirectory, string instanceName, IDictionary<string, string?>? extra = null)
    {
        var dll = WorkerDll();
        var psi = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = Path.GetDirectoryName(dll)!,
        };
        psi.ArgumentList.Add(dll);
        foreach (var (k, v) in WorkerSettings.For(brokerUri, shareDirectory, instanceName, extra))
        {
            psi.ArgumentList.Add($"--{k}={v}");
        }
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        if (extra?.ContainsKey("Logging:Console:FormatterName") != true)
        {
            psi.Environment["Logging__Console__FormatterName"] = "simple";
            psi.Environment["Logging__Console__FormatterOptions__SingleLine"] = "true";
            psi.Environment["Logging__Console__FormatterOptions__TimestampFormat"] = "HH:mm:ss.fff ";
        }
        var process = Process.Start(psi) ?? throw new InvalidOperationException("cannot start the worker");
        var worker = new WorkerProcess(process, instanceName);
        process.OutputDataReceived += (_, e) => worker.Append(e.Data);
        process.ErrorDataReceived += (_, e) => worker.Append(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return worker;
    }

    /// <summary>After a test: the warnings and errors the worker logged (its last 40) to the test's output, and
    /// everything it wrote to <c>$TMPDIR/nfsvol-worker-RUN-INSTANCE.log</c>, for the failure that needs more.</summary>
    public async Task ReportAsync(ITestOutputHelper output, string run)
    {
        var log = Output;
        var problems = log.Split('\n').Where(l => l.Contains("warn", StringComparison.Ordinal)
            || l.Contains("fail", StringComparison.Ordinal) || l.Contains("crit", StringComparison.Ordinal)).TakeLast(40);
        var path = Path.Combine(Path.GetTempPath(), $"nfsvol-worker-{run}-{InstanceName}.log");
        await File.WriteAllTextAsync(path, log);
        output.WriteLine($"--- {InstanceName} (whole log: {path}) ---{Environment.NewLine}{string.Join(Environment.NewLine, problems)}");
    }

    private void Append(string? line)
    {
        if (line is null)
        {
            return;
        }
        lock (_output)
        {
            _output.AppendLine(line);
        }
    }

    /// <summary>SIGKILL: no clean-up of any kind, as a power loss or the OOM killer would do it.</summary>
    public void KillHard()
    {
        if (!_process.HasExited)
        {
            _ = Tools.RunAsync("kill", "-9", _process.Id.ToString(CultureInfo.InvariantCulture)).GetAwaiter().GetResult();
            _process.WaitForExit(10_000);
        }
    }

    /// <summary>Sends SIGTERM (as systemd stops it) without waiting.</summary>
    public Task SignalTermAsync() => SignalAsync("TERM");

    /// <summary>Sends a signal by name (<c>TERM</c>, <c>STOP</c>, <c>CONT</c>) to the worker process.</summary>
    public Task SignalAsync(string signal) => Tools.RunAsync("kill", $"-{signal}", _process.Id.ToString(CultureInfo.InvariantCulture));

    /// <summary>Waits for the process to end; its exit code.</summary>
    public async Task<int> WaitForExitAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await _process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            throw new TimeoutException($"worker {InstanceName} did not exit within {timeout}:{Environment.NewLine}{Output}");
        }
        return _process.ExitCode;
    }

    /// <summary>SIGTERM and wait: the exit code.</summary>
    public async Task<int> TerminateAsync(TimeSpan timeout)
    {
        await SignalTermAsync();
        return await WaitForExitAsync(timeout);
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            await SignalTermAsync();
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
            try
            {
                await _process.WaitForExitAsync(cts.Token);
            }
            catch (OperationCanceledException)
            {
                _process.Kill(entireProcessTree: true);
            }
        }
        _process.Dispose();
    }
}
