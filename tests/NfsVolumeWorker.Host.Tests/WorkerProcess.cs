using System.Diagnostics;
using System.Globalization;
using System.Text;
using NfsVolumeWorker.Testing;

namespace NfsVolumeWorker.Host.Tests;

/// <summary>A worker host run as its own process (dotnet NfsVolumeWorker.dll), as operators run it.</summary>
internal sealed class WorkerProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _output = new();

    private WorkerProcess(string name, Process process)
    {
        Name = name;
        _process = process;
    }

    public string Name { get; }

    public int Id => _process.Id;

    public bool HasExited => _process.HasExited;

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

    /// <summary>The worker's dll, built in the same configuration as the tests.</summary>
    public static string DllPath =>
        WorkerCommandLine.DllPath(AppContext.BaseDirectory.Contains("/Release/", StringComparison.Ordinal) ? "Release" : "Debug");

    public static WorkerProcess Start(string name, Uri brokerUrl, Uri? managementUrl, string share, params string[] extra)
    {
        var start = WorkerCommandLine.StartInfo(DllPath, brokerUrl, managementUrl, share, name, "http://127.0.0.1:0", extra);
        var process = new Process { StartInfo = start };
        var worker = new WorkerProcess(name, process);
        process.OutputDataReceived += (_, e) => worker.Append(e.Data);
        process.ErrorDataReceived += (_, e) => worker.Append(e.Data);
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return worker;
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

    /// <summary>SIGTERM, as systemd stops it; returns the exit code.</summary>
    public async Task<int> TerminateAsync(TimeSpan timeout)
    {
        using (var kill = Process.Start("kill", ["-TERM", Id.ToString(CultureInfo.InvariantCulture)]))
        {
            await kill.WaitForExitAsync();
        }
        using var cts = new CancellationTokenSource(timeout);
        await _process.WaitForExitAsync(cts.Token);
        return _process.ExitCode;
    }

    /// <summary>SIGKILL: the instance dies without a word to the broker.</summary>
    public async Task KillAsync()
    {
        _process.Kill(entireProcessTree: true);
        await _process.WaitForExitAsync();
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            await KillAsync();
        }
        _process.Dispose();
    }
}
