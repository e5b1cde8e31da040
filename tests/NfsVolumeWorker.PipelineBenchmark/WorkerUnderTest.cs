using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using NfsVolumeWorker.Benchmarks;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Testing;

namespace NfsVolumeWorker.PipelineBenchmark;

/// <summary>The worker as operators run it: <c>dotnet NfsVolumeWorker.dll</c> (Release build) in a process of its own,
/// on one share and one vhost; read from outside through <c>/metrics</c>, <c>/health</c> and <c>/proc</c>.</summary>
internal sealed class WorkerUnderTest : IAsyncDisposable
{
    /// <summary>Set explicitly so the benchmark's partition arithmetic matches the worker's.</summary>
    public const int PartitionCount = PartitionKey.DefaultPartitionCount;

    private static readonly HttpClient Http = new() { Timeout = TimeSpan.FromSeconds(10) };

    private readonly Process _process;
    private readonly Uri _http;
    private readonly string _logPath;

    private WorkerUnderTest(Process process, Uri http, string logPath)
    {
        _process = process;
        _http = http;
        _logPath = logPath;
    }

    public int Pid => _process.Id;

    public static string DllPath
    {
        get
        {
            try
            {
                return WorkerCommandLine.DllPath("Release");
            }
            catch (FileNotFoundException e)
            {
                throw new HarnessException($"build the worker first (ops/bench/run-pipeline does): {e.FileName}");
            }
        }
    }

    /// <summary>Starts a worker and waits until <c>/health</c> answers 200 (connected, share usable).</summary>
    public static async Task<WorkerUnderTest> StartAsync(string name, Uri vhost, Uri? management, string share, string logDir,
        IReadOnlyList<string> extra, CancellationToken cancellationToken)
    {
        var port = FreeLoopbackPort();
        var logPath = Path.Combine(logDir, $"worker-{name}.log");
        // Warnings only: a log line per command would be part of the cost measured, and the console is not what runs in production.
        var start = WorkerCommandLine.StartInfo(DllPath, vhost, management, share, $"bench-{name}", $"http://127.0.0.1:{port}",
            [$"--Worker:PartitionCount={PartitionCount}", "--Logging:LogLevel:Default=Warning", .. extra]);
        var process = new Process { StartInfo = start };
        var log = new StreamWriter(logPath) { AutoFlush = true };
        process.OutputDataReceived += (_, e) => WriteLine(log, e.Data);
        process.ErrorDataReceived += (_, e) => WriteLine(log, e.Data);
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        var worker = new WorkerUnderTest(process, new Uri($"http://127.0.0.1:{port}/"), logPath);
        try
        {
            await worker.WaitHealthyAsync(TimeSpan.FromMinutes(3), cancellationToken);
            return worker;
        }
        catch
        {
            await worker.DisposeAsync();
            throw;
        }
    }

    private static void WriteLine(StreamWriter log, string? line)
    {
        if (line is null)
        {
            return;
        }
        lock (log)
        {
            log.WriteLine(line);
        }
    }

    private async Task WaitHealthyAsync(TimeSpan timeout, CancellationToken cancellationToken)
    {
        var deadline = DateTime.UtcNow + timeout;
        string last = "no answer";
        while (DateTime.UtcNow < deadline)
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (_process.HasExited)
            {
                throw new HarnessException($"the worker exited with {_process.ExitCode} at start; its log: {_logPath}\n{Tail()}");
            }
            try
            {
                using var response = await Http.GetAsync(new Uri(_http, "health"), cancellationToken);
                if (response.StatusCode == HttpStatusCode.OK)
                {
                    return;
                }
                last = $"{(int)response.StatusCode}: {await response.Content.ReadAsStringAsync(cancellationToken)}";
            }
            catch (HttpRequestException e)
            {
                last = e.Message;
            }
            await Task.Delay(250, cancellationToken);
        }
        throw new HarnessException($"the worker did not become healthy in {timeout.TotalSeconds:F0} s (last: {last}); its log: {_logPath}\n{Tail()}");
    }

    public string Tail(int lines = 20)
    {
        try
        {
            using var stream = new FileStream(_logPath, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            using var reader = new StreamReader(stream);
            var all = reader.ReadToEnd().Split('\n');
            return string.Join('\n', all.TakeLast(lines));
        }
        catch (IOException)
        {
            return "";
        }
    }

    /// <summary>The sum of every series of a counter on <c>/metrics</c> (all tags), 0 when it has none yet.</summary>
    public async Task<double> CounterAsync(string prometheusName, CancellationToken cancellationToken)
    {
        var text = await Http.GetStringAsync(new Uri(_http, "metrics"), cancellationToken);
        double sum = 0;
        foreach (var line in text.Split('\n'))
        {
            if (line.StartsWith(prometheusName, StringComparison.Ordinal)
                && line.Length > prometheusName.Length && line[prometheusName.Length] is '{' or ' ')
            {
                var value = line[(line.LastIndexOf('}') is var brace and > 0 ? brace + 1 : prometheusName.Length)..].Trim().Split(' ')[0];
                sum += double.Parse(value, CultureInfo.InvariantCulture);
            }
        }
        return sum;
    }

    /// <summary>A histogram's sum and count on <c>/metrics</c> (<c>&lt;name&gt;_sum</c>, <c>&lt;name&gt;_count</c>, all tags).</summary>
    public async Task<HistogramTotals> HistogramAsync(string prometheusName, CancellationToken cancellationToken) =>
        new(await CounterAsync(prometheusName + "_sum", cancellationToken), await CounterAsync(prometheusName + "_count", cancellationToken));

    /// <summary>CPU time (user + system) the worker process has used so far, in seconds (/proc/&lt;pid&gt;/stat).</summary>
    public double CpuSeconds()
    {
        var stat = File.ReadAllText($"/proc/{Pid}/stat");
        // Fields after the command name, which is in parentheses and may hold spaces: utime and stime are the 14th and 15th.
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        var ticks = long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture);
        return ticks / (double)Machine.ClockTicksPerSecond;
    }

    /// <summary>Resident set size now and at its highest so far (VmRSS, VmHWM of /proc/&lt;pid&gt;/status), in bytes.</summary>
    public (long Rss, long Peak) Memory()
    {
        long rss = 0, peak = 0;
        foreach (var line in File.ReadLines($"/proc/{Pid}/status"))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
            {
                rss = KiB(line) * 1024;
            }
            else if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
            {
                peak = KiB(line) * 1024;
            }
        }
        return (rss, peak);

        static long KiB(string line) => long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);
    }

    private static int FreeLoopbackPort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    /// <summary>Kills the worker and its children (a qemu-img it runs): what it leaves on the share is not measured again.</summary>
    public async ValueTask DisposeAsync()
    {
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
                await _process.WaitForExitAsync();
            }
        }
        catch (InvalidOperationException)
        {
            // never started or already reaped
        }
        _process.Dispose();
    }
}

/// <summary>A histogram's sum (seconds) and count over all its series; subtracting two gives the mean between them.</summary>
internal readonly record struct HistogramTotals(double Sum, double Count)
{
    public TimeSpan Mean => Count > 0 ? TimeSpan.FromSeconds(Sum / Count) : TimeSpan.Zero;

    public static HistogramTotals operator -(HistogramTotals a, HistogramTotals b) => new(a.Sum - b.Sum, a.Count - b.Count);
}
