using System.Diagnostics;
using System.Globalization;
using System.Text;

namespace NfsVolumeWorker.Testing;

/// <summary>The worker as a real child process (<see cref="WorkerCommandLine"/>), as operators run it: everything it
/// writes kept, stopped with the signals systemd or an operator would send.</summary>
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

    /// <summary>Starts <paramref name="start"/> (its output must be redirected) as the worker named <paramref name="instanceName"/>.</summary>
    public static WorkerProcess Start(string instanceName, ProcessStartInfo start)
    {
        ArgumentNullException.ThrowIfNull(start);
        var process = Process.Start(start) ?? throw new InvalidOperationException("cannot start the worker");
        var worker = new WorkerProcess(process, instanceName);
        process.OutputDataReceived += (_, e) => worker.Append(e.Data);
        process.ErrorDataReceived += (_, e) => worker.Append(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return worker;
    }

    /// <summary>After a test: the warnings and errors the worker logged (its last 40) to <paramref name="writeLine"/>
    /// (the test's output), and everything it wrote to <c>$TMPDIR/nfsvol-worker-RUN-INSTANCE.log</c>, for the
    /// failure that needs more.</summary>
    public async Task ReportAsync(Action<string> writeLine, string run)
    {
        ArgumentNullException.ThrowIfNull(writeLine);
        var log = Output;
        var problems = log.Split('\n').Where(l => l.Contains("warn", StringComparison.Ordinal)
            || l.Contains("fail", StringComparison.Ordinal) || l.Contains("crit", StringComparison.Ordinal)).TakeLast(40);
        var path = Path.Combine(Path.GetTempPath(), $"nfsvol-worker-{run}-{InstanceName}.log");
        await File.WriteAllTextAsync(path, log).ConfigureAwait(false);
        writeLine($"--- {InstanceName} (whole log: {path}) ---{Environment.NewLine}{string.Join(Environment.NewLine, problems)}");
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

    /// <summary>SIGKILL: no clean-up of any kind, as a power loss or the OOM killer would do it; the instance dies
    /// without a word to the broker.</summary>
    public void KillHard()
    {
        if (!_process.HasExited)
        {
            SignalAsync("KILL").GetAwaiter().GetResult();
            _process.WaitForExit(10_000);
        }
    }

    /// <summary>Sends SIGTERM (as systemd stops it) without waiting.</summary>
    public Task SignalTermAsync() => SignalAsync("TERM");

    /// <summary>Sends a signal by name (<c>TERM</c>, <c>STOP</c>, <c>CONT</c>, <c>KILL</c>) to the worker process.</summary>
    public async Task SignalAsync(string signal)
    {
        using var kill = Process.Start("kill", [$"-{signal}", _process.Id.ToString(CultureInfo.InvariantCulture)]);
        await kill.WaitForExitAsync().ConfigureAwait(false);
    }

    /// <summary>Waits for the process to end; its exit code.</summary>
    public async Task<int> WaitForExitAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await _process.WaitForExitAsync(cts.Token).ConfigureAwait(false);
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
        await SignalTermAsync().ConfigureAwait(false);
        return await WaitForExitAsync(timeout).ConfigureAwait(false);
    }

    /// <summary>SIGTERM, up to 20 s for the worker's own stop, then SIGKILL.</summary>
    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            await SignalTermAsync().ConfigureAwait(false);
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
            try
            {
                await _process.WaitForExitAsync(cts.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                _process.Kill(entireProcessTree: true);
            }
        }
        _process.Dispose();
    }
}
