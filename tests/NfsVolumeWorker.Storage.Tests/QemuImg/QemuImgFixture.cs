using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Storage.QemuImg;
using NfsVolumeWorker.Storage.Tests.Support;

namespace NfsVolumeWorker.Storage.Tests.QemuImg;

/// <summary>Shared helpers for the qemu-img tests: runners, qemu-io writes, progress recording.</summary>
internal static class QemuImgFixture
{
    public const long MiB = 1024 * 1024;

    public static QemuImgRunner Runner(Action<QemuImgOptions>? configure = null, ILogger<QemuImgRunner>? logger = null)
    {
        _ = RequiredTool.QemuImg;
        var options = new QemuImgOptions();
        configure?.Invoke(options);
        return new QemuImgRunner(Options.Create(options), logger ?? NullLogger<QemuImgRunner>.Instance);
    }

    public static string QemuIo => RequiredTool.Find("qemu-io", "qemu-utils");

    /// <summary>Writes <paramref name="length"/> bytes of <paramref name="pattern"/> at <paramref name="offset"/> as a guest would.</summary>
    public static void Write(string image, string format, byte pattern, long offset, long length) =>
        RequiredTool.RunChecked(QemuIo, "-f", format, "-c", $"write -P 0x{pattern:x2} {offset} {length}", image);

    /// <summary>True when the range reads back as the pattern through the image's chain.</summary>
    public static bool Reads(string image, string format, byte pattern, long offset, long length) =>
        ReadsAll(image, format, [(pattern, offset, length)], out _);

    /// <summary>True when every range reads back as its pattern, checked by one qemu-io; <paramref name="output"/> says
    /// what qemu-io printed.</summary>
    public static bool ReadsAll(string image, string format, IEnumerable<(byte Pattern, long Offset, long Length)> ranges, out string output)
    {
        List<string> args = ["-f", format];
        foreach (var (pattern, offset, length) in ranges)
        {
            args.AddRange(["-c", $"read -P 0x{pattern:x2} {offset} {length}"]);
        }
        var (code, stdout, stderr) = RequiredTool.Run(QemuIo, [.. args, image]);
        output = stdout + stderr;
        return code == 0 && !stdout.Contains("Pattern verification failed", StringComparison.Ordinal);
    }

    /// <summary>Pids of running processes whose command line mentions <paramref name="text"/>.</summary>
    public static string[] ProcessesMentioning(string text)
    {
        var (_, stdout, _) = RequiredTool.Run(RequiredTool.Find("pgrep", "procps"), "-f", "--", text);
        var self = Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture);
        return stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Where(pid => pid != self)
            .ToArray();
    }
}

/// <summary>Records reports on the calling thread, in order (Progress&lt;T&gt; would post them to the pool, unordered).</summary>
internal sealed class RecordingProgress : IProgress<double>
{
    private readonly List<double> _reports = [];
    private readonly Action<double>? _onReport;

    public RecordingProgress(Action<double>? onReport = null) => _onReport = onReport;

    public IReadOnlyList<double> Reports
    {
        get { lock (_reports) { return _reports.ToArray(); } }
    }

    public void Report(double value)
    {
        lock (_reports)
        {
            _reports.Add(value);
        }
        _onReport?.Invoke(value);
    }
}

/// <summary>Keeps every log entry, to assert what the runner says and about which command.</summary>
internal sealed class RecordingLogger<T> : ILogger<T>
{
    private readonly List<(LogLevel Level, EventId EventId, string Message)> _entries = [];

    public IReadOnlyList<(LogLevel Level, EventId EventId, string Message)> Entries
    {
        get { lock (_entries) { return _entries.ToArray(); } }
    }

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        lock (_entries)
        {
            _entries.Add((logLevel, eventId, formatter(state, exception)));
        }
    }
}

/// <summary>An interactive qemu-io on an image: holds qemu's write lock until disposed.</summary>
internal sealed class ImageLockHolder : IDisposable
{
    private readonly Process _process;

    public ImageLockHolder(string image)
    {
        var psi = new ProcessStartInfo(QemuImgFixture.QemuIo)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in new[] { "-f", "qcow2", image })
        {
            psi.ArgumentList.Add(a);
        }
        _process = Process.Start(psi) ?? throw new InvalidOperationException("could not start qemu-io");
        // The prompt appears once the image is open, i.e. once the lock is held.
        var seen = new System.Text.StringBuilder();
        var buffer = new char[256];
        var deadline = Stopwatch.StartNew();
        while (!seen.ToString().Contains("qemu-io>", StringComparison.Ordinal))
        {
            var read = _process.StandardOutput.ReadAsync(buffer, 0, buffer.Length);
            if (!read.Wait(TimeSpan.FromSeconds(10)) || deadline.Elapsed > TimeSpan.FromSeconds(10))
            {
                throw new InvalidOperationException("qemu-io did not show its prompt in time");
            }
            if (read.Result == 0)
            {
                throw new InvalidOperationException("qemu-io exited: " + _process.StandardError.ReadToEnd());
            }
            seen.Append(buffer, 0, read.Result);
        }
    }

    public void Dispose()
    {
        _process.StandardInput.Close();
        if (!_process.WaitForExit(TimeSpan.FromSeconds(10)))
        {
            _process.Kill();
        }
        _process.Dispose();
    }
}
