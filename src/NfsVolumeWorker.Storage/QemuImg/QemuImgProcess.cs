using System.Collections.Concurrent;
using System.ComponentModel;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using Microsoft.Extensions.Logging;
using NfsVolumeWorker.Storage.Errors;

namespace NfsVolumeWorker.Storage.QemuImg;

/// <summary>How one qemu-img process ended: its exit code and output, with the command line it ran.</summary>
internal sealed record QemuImgResult(string CommandLine, int ExitCode, string StandardOutput, string StandardError, bool ViaPrlimit);

/// <summary>
/// Runs the process of one <see cref="QemuImgCommand"/>: under prlimit when it reads an image a guest could
/// have written, under setpriv and ionice when configured, both pipes drained, progress parsed, killed on
/// timeout or cancellation. What the exit code means is for <see cref="QemuImgRunner"/> to judge.
/// </summary>
internal sealed class QemuImgProcess
{
    // qemu-img's errors are one or two lines; a cap only matters for a runaway child.
    private const int MaxStandardErrorChars = 64 * 1024;

    // info --backing-chain is ~1 KiB per image; anything near this is not qemu-img talking to us.
    private const int MaxStandardOutputChars = 4 * 1024 * 1024;

    private readonly QemuImgOptions _options;
    private readonly ILogger _logger;
    private readonly Lazy<string?> _dieWithParent;
    private readonly Lazy<string?> _idleIo;
    private readonly ConcurrentDictionary<string, string> _resolved = new(StringComparer.Ordinal);

    /// <param name="logger">The runner's, so these events keep the category that log filters know them by.</param>
    public QemuImgProcess(QemuImgOptions options, ILogger logger)
    {
        _options = options;
        _logger = logger;
        _dieWithParent = new(() => _options.KillWithWorker ? ProcessLauncher.Resolve("setpriv") : null);
        _idleIo = new(() => _options.LongCallsAtIdleIoPriority ? ProcessLauncher.Resolve("ionice") : null);
    }

    /// <summary>The absolute path of a program named on PATH, looked up once: setpriv and prlimit exec what they are
    /// given with execvp, which tries every PATH directory before the right one (a failed execve each, per call).
    /// A program not found is not remembered, so installing it later works and a missing one still says so.</summary>
    private string Resolved(string program)
    {
        if (program.Contains('/', StringComparison.Ordinal))
        {
            return program;
        }
        if (_resolved.TryGetValue(program, out var path))
        {
            return path;
        }
        return ProcessLauncher.Resolve(program) is { } found ? _resolved.GetOrAdd(program, found) : program;
    }

    /// <summary>
    /// Runs <paramref name="command"/> until it exits. Throws <see cref="QemuImgException"/> when it cannot be
    /// started or outlives its timeout, <see cref="OperationCanceledException"/> when cancelled; either way it is killed.
    /// </summary>
    public Task<QemuImgResult> RunAsync(QemuImgCommand command, IProgress<double>? progress, CancellationToken cancellationToken)
    {
        var viaPrlimit = command.Kind == QemuImgCallKind.Inspect;
        var timeout = command.Kind == QemuImgCallKind.Long ? _options.LongCallTimeout : _options.ShortCallTimeout;
        var fileName = Resolved(viaPrlimit ? _options.PrlimitExecutable : _options.Executable);
        List<string> argv = [];
        if (viaPrlimit)
        {
            // The image may be hostile (a guest wrote it): cap what parsing it can cost, as Cinder does.
            argv.Add("--as=" + _options.InspectAddressSpaceBytes.ToString(CultureInfo.InvariantCulture));
            argv.Add("--cpu=" + _options.InspectCpuSeconds.ToString(CultureInfo.InvariantCulture));
            argv.Add("--");
            argv.Add(Resolved(_options.Executable));
        }
        argv.AddRange(command.Arguments);
        var commandLine = QemuImgCommand.Display(fileName, argv);

        return ExecuteAsync(command, fileName, argv, commandLine, viaPrlimit, timeout, progress, cancellationToken);
    }

    private async Task<QemuImgResult> ExecuteAsync(
        QemuImgCommand command,
        string fileName,
        List<string> argv,
        string commandLine,
        bool viaPrlimit,
        TimeSpan timeout,
        IProgress<double>? progress,
        CancellationToken cancellationToken)
    {
        // A worker killed outright must not leave qemu-img running on the share: run it under
        // setpriv --pdeathsig (util-linux), started from the launcher thread.
        var dieWithParent = _dieWithParent.Value;
        var idleIo = command.Kind == QemuImgCallKind.Long ? _idleIo.Value : null;
        if ((dieWithParent ?? idleIo) is not null && ProcessLauncher.Resolve(fileName) is null)
        {
            // Through setpriv a missing binary would only show as exit 127; say it the way a failed start does.
            throw Missing(command, fileName, commandLine, viaPrlimit, new Win32Exception(2, "No such file or directory"));
        }
        // Each wrapper execs the next, so what it sets holds for qemu-img and every thread it starts. ionice -t: a
        // kernel that refuses the idle class still runs the copy.
        List<string> execChain = [];
        if (dieWithParent is not null)
        {
            execChain.AddRange([dieWithParent, "--pdeathsig", "KILL", "--"]);
        }
        if (idleIo is not null)
        {
            execChain.AddRange([idleIo, "-c", "3", "-t", "--"]);
        }
        execChain.Add(fileName);
        execChain.AddRange(argv);
        var startInfo = new ProcessStartInfo(execChain[0])
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            StandardOutputEncoding = Encoding.UTF8,
            StandardErrorEncoding = Encoding.UTF8,
        };
        foreach (var argument in execChain.Skip(1))
        {
            startInfo.ArgumentList.Add(argument);
        }
        // Messages we match on (ENOSPC, lock errors) must be the untranslated ones.
        startInfo.Environment["LC_ALL"] = "C";
        if (viaPrlimit)
        {
            // glibc gives each thread that allocates an arena of its own (64 MiB of address space each, up to 8 per
            // core), and qemu-img starts more I/O threads the busier the machine is: under load the arenas alone
            // exhausted the 1 GiB cap on a 2-core machine. One arena keeps the cap about the image, not the load.
            startInfo.Environment["MALLOC_ARENA_MAX"] = "1";
        }

        using var process = new Process { StartInfo = startInfo };
        QemuImgLog.Starting(_logger, commandLine);
        try
        {
            await ProcessLauncher.StartAsync(process).ConfigureAwait(false);
        }
        catch (Win32Exception ex)
        {
            throw Missing(command, fileName, commandLine, viaPrlimit, ex);
        }

        try
        {
            // qemu-img never needs input; an open stdin would let a prompt (e.g. a passphrase) hang the call.
            process.StandardInput.Close();
        }
        catch (IOException)
        {
            // Already gone; its exit code tells the rest.
        }

        ProgressLineParser? parser = null;
        SafeProgress? safeProgress = null;
        if (progress is not null)
        {
            parser = new ProgressLineParser();
            safeProgress = new SafeProgress(progress, _logger, command.Verb);
        }
        var stdout = OutputCapture.Start(process.StandardOutput, MaxStandardOutputChars, parser, safeProgress is null ? null : safeProgress.Report);
        var stderr = OutputCapture.Start(process.StandardError, MaxStandardErrorChars);

        var startedAt = Stopwatch.GetTimestamp();
        using var timeoutSource = new CancellationTokenSource();
        if (timeout != Timeout.InfiniteTimeSpan)
        {
            // Started only now, so the limit measures qemu-img, not our own start-up.
            timeoutSource.CancelAfter(timeout);
        }
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeoutSource.Token);

        try
        {
            await process.WaitForExitAsync(linked.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            var elapsedMs = Stopwatch.GetElapsedTime(startedAt).TotalMilliseconds;
            if (cancellationToken.IsCancellationRequested)
            {
                QemuImgLog.Cancelled(_logger, command.Verb, elapsedMs);
            }
            else
            {
                QemuImgLog.TimedOut(_logger, command.Verb, timeout, commandLine);
            }

            await KillAsync(process, command.Verb, stdout, stderr).ConfigureAwait(false);

            if (cancellationToken.IsCancellationRequested)
            {
                throw new OperationCanceledException($"qemu-img {command.Verb} was cancelled; the process was killed.", cancellationToken);
            }
            throw new QemuImgException(
                StorageErrorCode.QemuImgTimeout,
                $"qemu-img {command.Verb} did not finish within {timeout} and was killed. Command: {commandLine}",
                commandLine,
                null,
                TrimmedStandardError(stderr));
        }

        // Exited: both pipes reach end of file now, unless something the child spawned still holds them.
        await WaitQuietlyAsync(Task.WhenAll(stdout.Completion, stderr.Completion), _options.KillGracePeriod).ConfigureAwait(false);

        if (safeProgress is not null && process.ExitCode == 0 && parser!.LastFraction < 1.0)
        {
            // A call with nothing to copy may print no final 100%; callers are promised it ends at 1.
            safeProgress.Report(1.0);
        }

        return new QemuImgResult(commandLine, process.ExitCode, stdout.Text, TrimmedStandardError(stderr), viaPrlimit);
    }

    private async Task KillAsync(Process process, string verb, OutputCapture stdout, OutputCapture stderr)
    {
        try
        {
            // The tree: prlimit execs qemu-img in place, but a helper qemu-img may spawn must not outlive it.
            process.Kill(entireProcessTree: true);
        }
        catch (InvalidOperationException)
        {
            // Exited on its own in the meantime.
        }
        catch (Win32Exception)
        {
            // Could not signal it (it is exiting); the wait below tells whether it went.
        }

        var grace = _options.KillGracePeriod;
        using var graceSource = new CancellationTokenSource(grace);
        try
        {
            await process.WaitForExitAsync(graceSource.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            QemuImgLog.KillNotConfirmed(_logger, verb, process.Id, grace);
            return;
        }
        await WaitQuietlyAsync(Task.WhenAll(stdout.Completion, stderr.Completion), grace).ConfigureAwait(false);
    }

    private static async Task WaitQuietlyAsync(Task task, TimeSpan limit)
    {
        try
        {
            await task.WaitAsync(limit).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            // Take the output captured so far; the drains end when the pipes finally close.
        }
    }

    private static string TrimmedStandardError(OutputCapture stderr)
    {
        var text = stderr.Text.Trim();
        return stderr.Truncated ? text + " [stderr truncated]" : text;
    }

    private QemuImgException Missing(QemuImgCommand command, string fileName, string commandLine, bool viaPrlimit, Win32Exception ex)
    {
        QemuImgLog.StartFailed(_logger, ex, fileName, command.Verb);
        var message = viaPrlimit
            ? $"prlimit (util-linux) could not be started from '{fileName}': {ex.Message}. It caps what inspecting an untrusted image may cost; install it with: apt-get install -y util-linux"
            : $"qemu-img could not be started from '{fileName}': {ex.Message}. Install it with: apt-get install -y qemu-utils";
        return new QemuImgException(StorageErrorCode.QemuImgMissing, message, commandLine, null, string.Empty, ex);
    }

    /// <summary>Forwards progress, but a throwing handler must not abort an hours-long copy.</summary>
    private sealed class SafeProgress(IProgress<double> inner, ILogger logger, string verb)
    {
        private bool _failed;

        public void Report(double fraction)
        {
            if (_failed)
            {
                return;
            }
            try
            {
                inner.Report(fraction);
            }
#pragma warning disable CA1031 // Any handler exception is logged once and contained, by design.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                _failed = true;
                QemuImgLog.ProgressHandlerFailed(logger, ex, verb);
            }
        }
    }
}
