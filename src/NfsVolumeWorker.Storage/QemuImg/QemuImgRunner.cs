using System.Collections.Concurrent;
using System.ComponentModel;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Storage.Diagnostics;
using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Storage.Layout;

namespace NfsVolumeWorker.Storage.QemuImg;

/// <summary>
/// Typed wrapper around the qemu-img binary: argument vectors (no shell), explicit formats on every
/// image, JSON output parsed into records, failures turned into <see cref="QemuImgException"/>,
/// timeouts and cancellation that kill the process.
/// </summary>
public sealed class QemuImgRunner
{
    // qemu-img's errors are one or two lines; a cap only matters for a runaway child.
    private const int MaxStandardErrorChars = 64 * 1024;

    // info --backing-chain is ~1 KiB per image; anything near this is not qemu-img talking to us.
    private const int MaxStandardOutputChars = 4 * 1024 * 1024;

    private static readonly string[] PreallocationModes = ["off", "metadata", "falloc", "full"];

    private readonly QemuImgOptions _options;
    private readonly ILogger<QemuImgRunner> _logger;
    private readonly Lazy<string?> _dieWithParent;
    private readonly Lazy<string?> _idleIo;
    private readonly ConcurrentDictionary<string, string> _resolved = new(StringComparer.Ordinal);

    public QemuImgRunner(IOptions<QemuImgOptions> options, ILogger<QemuImgRunner> logger)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(logger);
        _options = options.Value;
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

    /// <summary><c>qemu-img info --force-share -f fmt --output=json</c> under resource limits.</summary>
    public async Task<ImageInfo> InfoAsync(string path, ImageFormat format, CancellationToken cancellationToken = default)
    {
        var command = new QemuImgCommand(
            "info",
            QemuImgCallKind.Inspect,
            ["info", "-U", "-f", format.ToQemuName(), "--output=json", QemuImgCommand.ImagePath(path)],
            [new("qemu_img.path", path)]);
        return await RunAsync(command, progress: null, r => ParseOutput(command, EnsureSuccess(command, r), QemuImgJson.ParseInfo), cancellationToken)
            .ConfigureAwait(false);
    }

    /// <summary><c>qemu-img info --backing-chain</c>: the image first, then each backing file.</summary>
    public async Task<IReadOnlyList<ImageInfo>> InfoChainAsync(string path, ImageFormat format, CancellationToken cancellationToken = default)
    {
        // -f applies to the top image only; backing files are opened with the format their parent's
        // header records, so the caller must have checked those (qemu-img would probe a missing one).
        var command = new QemuImgCommand(
            "info",
            QemuImgCallKind.Inspect,
            ["info", "-U", "-f", format.ToQemuName(), "--output=json", "--backing-chain", QemuImgCommand.ImagePath(path)],
            [new("qemu_img.path", path), new("qemu_img.backing_chain", true)]);
        return await RunAsync(command, progress: null, r => ParseOutput(command, EnsureSuccess(command, r), QemuImgJson.ParseInfoChain), cancellationToken)
            .ConfigureAwait(false);
    }

    public async Task CreateAsync(CreateImageRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(request.SizeBytes, nameof(request));
        if (request.BackingFile is null != request.BackingFormat is null)
        {
            throw new ArgumentException("BackingFile and BackingFormat go together: give both or neither.", nameof(request));
        }
        if (request.BackingFile is { Length: 0 })
        {
            throw new ArgumentException("BackingFile is empty.", nameof(request));
        }
        if (request.Preallocation is not null && !PreallocationModes.Contains(request.Preallocation, StringComparer.Ordinal))
        {
            // Also keeps a comma from smuggling more -o options in.
            throw new ArgumentException(
                $"Preallocation '{request.Preallocation}' is not one of {string.Join(", ", PreallocationModes)}.", nameof(request));
        }

        List<string> args = ["create", "-q", "-f", request.Format.ToQemuName()];
        List<KeyValuePair<string, object?>> tags = [new("qemu_img.path", request.Path)];
        if (request.BackingFile is not null)
        {
            // -u: the reference is relative to the image's directory and is stored as given; qemu-img
            // must not try to open it (it would resolve it from elsewhere or fail for a file not yet there).
            args.AddRange(["-b", request.BackingFile, "-F", request.BackingFormat!.Value.ToQemuName(), "-u"]);
            tags.Add(new("qemu_img.backing_file", request.BackingFile));
        }
        if (request.Preallocation is not null)
        {
            args.AddRange(["-o", "preallocation=" + request.Preallocation]);
        }
        args.Add(QemuImgCommand.ImagePath(request.Path));
        args.Add(request.SizeBytes.ToString(CultureInfo.InvariantCulture));

        var command = new QemuImgCommand("create", QemuImgCallKind.Short, args, tags);
        await RunAsync(command, progress: null, r => EnsureSuccess(command, r), cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Commit with <c>-p</c>; progress is reported as a fraction 0..1.</summary>
    public async Task CommitAsync(CommitRequest request, IProgress<double>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        // -d: the overlay stays as it is (the engine deletes or reuses it itself).
        var command = new QemuImgCommand(
            "commit",
            QemuImgCallKind.Long,
            ["commit", "-f", "qcow2", "-d", progress is null ? "-q" : "-p",
                .. (request.Base is { } commitBase ? new[] { "-b", QemuImgCommand.ImagePath(commitBase) } : []), QemuImgCommand.ImagePath(request.Overlay)],
            [new("qemu_img.path", request.Overlay)]);
        await RunAsync(command, progress, r => EnsureSuccess(command, r), cancellationToken).ConfigureAwait(false);
    }

    /// <summary><c>qemu-img rebase -u -f qcow2 -b backing -F backingFormat path</c>: rewrites the header's backing reference only.</summary>
    public async Task RebaseUnsafeAsync(string path, string backingFile, ImageFormat backingFormat, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(backingFile);
        var command = new QemuImgCommand(
            "rebase",
            QemuImgCallKind.Short,
            ["rebase", "-q", "-u", "-f", "qcow2", "-b", backingFile, "-F", backingFormat.ToQemuName(), QemuImgCommand.ImagePath(path)],
            [new("qemu_img.path", path), new("qemu_img.backing_file", backingFile)]);
        await RunAsync(command, progress: null, r => EnsureSuccess(command, r), cancellationToken).ConfigureAwait(false);
    }

    /// <summary><c>qemu-img rebase -f qcow2 -b backing -F backingFormat path</c> in safe mode: copies into the image
    /// every cluster it does not hold whose contents differ between its old and its new backing chain, then rewrites
    /// the reference. A null <paramref name="backingFile"/> (<c>-b ""</c>) makes the image standalone. With the new
    /// backing file below the old one, qemu-img reads only what the images in between hold. Progress as 0..1.</summary>
    public async Task RebaseAsync(string path, string? backingFile, ImageFormat? backingFormat, IProgress<double>? progress = null, CancellationToken cancellationToken = default)
    {
        if (backingFile is { Length: 0 } || backingFile is null != backingFormat is null)
        {
            throw new ArgumentException("Give a backing file with its format, or neither (standalone).", nameof(backingFile));
        }
        List<string> args = ["rebase", progress is null ? "-q" : "-p", "-f", "qcow2", "-b", backingFile ?? ""];
        if (backingFormat is { } format)
        {
            args.AddRange(["-F", format.ToQemuName()]);
        }
        args.Add(QemuImgCommand.ImagePath(path));
        var command = new QemuImgCommand("rebase", QemuImgCallKind.Long, args,
            [new("qemu_img.path", path), new("qemu_img.backing_file", backingFile ?? "")]);
        await RunAsync(command, progress, r => EnsureSuccess(command, r), cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Convert with <c>-p</c>; progress is reported as a fraction 0..1.</summary>
    public async Task ConvertAsync(ConvertRequest request, IProgress<double>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (request.Coroutines is { } m && (m < 1 || m > 16))
        {
            throw new ArgumentOutOfRangeException(nameof(request), m, "Coroutines must be 1..16 (qemu-img -m).");
        }
        if (request.BytesPerSecond is <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(request), request.BytesPerSecond, "BytesPerSecond must be positive (qemu-img -r), or null for no limit.");
        }

        List<string> args = ["convert", "-f", request.SourceFormat.ToQemuName(), "-O", request.TargetFormat.ToQemuName()];
        if (request.DirectIo)
        {
            args.AddRange(["-t", "none"]);
        }
        if (request.OutOfOrderWrites)
        {
            args.Add("-W");
        }
        if (request.CopyOffload)
        {
            args.Add("-C"); // qemu-img refuses it with -c or -S; the engine passes neither
        }
        if (request.Coroutines is { } coroutines)
        {
            args.AddRange(["-m", coroutines.ToString(CultureInfo.InvariantCulture)]);
        }
        if (request.BytesPerSecond is { } rate)
        {
            args.AddRange(["-r", rate.ToString(CultureInfo.InvariantCulture)]);
        }
        args.Add(progress is null ? "-q" : "-p");
        args.Add(QemuImgCommand.ImagePath(request.Source));
        args.Add(QemuImgCommand.ImagePath(request.Target));

        var command = new QemuImgCommand(
            "convert",
            QemuImgCallKind.Long,
            args,
            [new("qemu_img.path", request.Source), new("qemu_img.target_path", request.Target)]);
        await RunAsync(command, progress, r => EnsureSuccess(command, r), cancellationToken).ConfigureAwait(false);
    }

    public async Task ResizeAsync(string path, ImageFormat format, long newSizeBytes, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(newSizeBytes);
        // Never --shrink: the engine refuses shrinking before it gets here, and without the flag
        // qemu-img refuses too, so a bug upstream cannot cut a volume short.
        var command = new QemuImgCommand(
            "resize",
            QemuImgCallKind.Long,
            ["resize", "-q", "-f", format.ToQemuName(), QemuImgCommand.ImagePath(path), newSizeBytes.ToString(CultureInfo.InvariantCulture)],
            [new("qemu_img.path", path)]);
        await RunAsync(command, progress: null, r => EnsureSuccess(command, r), cancellationToken).ConfigureAwait(false);
    }

    public async Task<CheckResult> CheckAsync(string path, ImageFormat format, CancellationToken cancellationToken = default)
    {
        var command = new QemuImgCommand(
            "check",
            QemuImgCallKind.Inspect,
            ["check", "-U", "-f", format.ToQemuName(), "--output=json", QemuImgCommand.ImagePath(path)],
            [new("qemu_img.path", path)]);
        return await RunAsync(command, progress: null, r => InterpretCheck(command, r), cancellationToken).ConfigureAwait(false);
    }

    private static CheckResult InterpretCheck(QemuImgCommand command, RunResult result)
    {
        switch (result.ExitCode)
        {
            case 63:
                // "This image format does not support checks" (raw): nothing to check, not a failure.
                return new CheckResult(63, 0, 0, 0);
            case 0 or 2 or 3:
                return ParseOutput(command, result, json => QemuImgJson.ParseCheck(json, result.ExitCode));
            case 1 when LooksLikeJson(result.StandardOutput):
                // The check ran but hit errors of its own; the counts are still worth having.
                return ParseOutput(command, result, json => QemuImgJson.ParseCheck(json, result.ExitCode));
            default:
                // Exit 1 without a report: the image could not even be opened.
                throw Failure(command, result);
        }
    }

    /// <summary><c>qemu-img map -U --output=json</c> of an image with its backing chain: which image provides each range.</summary>
    public async Task<IReadOnlyList<MapExtent>> MapAsync(string path, ImageFormat format, CancellationToken cancellationToken = default)
    {
        var command = new QemuImgCommand(
            "map",
            QemuImgCallKind.Inspect,
            ["map", "-U", "-f", format.ToQemuName(), "--output=json", QemuImgCommand.ImagePath(path)],
            [new("qemu_img.path", path)]);
        return await RunAsync(command, progress: null, r => ParseOutput(command, EnsureSuccess(command, r), QemuImgJson.ParseMap), cancellationToken)
            .ConfigureAwait(false);
    }

    /// <summary><c>qemu-img compare -f -F</c>: true when the guest-visible contents are identical.</summary>
    public async Task<bool> CompareAsync(string first, ImageFormat firstFormat, string second, ImageFormat secondFormat, CancellationToken cancellationToken = default)
    {
        // Not strict (-s): an area past the end of the shorter image that reads as zeroes counts as equal.
        var command = new QemuImgCommand(
            "compare",
            QemuImgCallKind.Inspect,
            ["compare", "-U", "-q", "-f", firstFormat.ToQemuName(), "-F", secondFormat.ToQemuName(),
                QemuImgCommand.ImagePath(first), QemuImgCommand.ImagePath(second)],
            [new("qemu_img.path", first), new("qemu_img.target_path", second)]);
        return await RunAsync(
            command,
            progress: null,
            r => r.ExitCode switch
            {
                0 => true,
                1 => false,
                _ => throw Failure(command, r),
            },
            cancellationToken).ConfigureAwait(false);
    }

    /// <summary>The version qemu-img reports, e.g. <c>7.2.22</c>.</summary>
    public async Task<string> VersionAsync(CancellationToken cancellationToken = default)
    {
        var command = new QemuImgCommand("version", QemuImgCallKind.Short, ["--version"], []);
        return await RunAsync(command, progress: null, r => ParseOutput(command, EnsureSuccess(command, r), ParseVersion), cancellationToken)
            .ConfigureAwait(false);
    }

    /// <summary>First line <c>qemu-img version 7.2.22 (Debian ...)</c> to <c>7.2.22</c>.</summary>
    internal static string ParseVersion(string output)
    {
        const string Prefix = "qemu-img version ";
        var firstLine = output.AsSpan().TrimStart();
        var newline = firstLine.IndexOfAny('\r', '\n');
        if (newline >= 0)
        {
            firstLine = firstLine[..newline];
        }
        if (!firstLine.StartsWith(Prefix, StringComparison.Ordinal))
        {
            throw new FormatException("the first line does not start with 'qemu-img version '");
        }
        var rest = firstLine[Prefix.Length..].TrimStart();
        var space = rest.IndexOf(' ');
        var version = (space < 0 ? rest : rest[..space]).ToString();
        return version.Length > 0 && char.IsAsciiDigit(version[0])
            ? version
            : throw new FormatException($"'{version}' is not a version number");
    }

    private sealed record RunResult(string CommandLine, int ExitCode, string StandardOutput, string StandardError, bool ViaPrlimit);

    /// <summary>
    /// Runs one call to completion and lets <paramref name="interpret"/> judge the exit code and read
    /// the output, inside the call's activity so a failure is traced and logged as one.
    /// </summary>
    private async Task<T> RunAsync<T>(QemuImgCommand command, IProgress<double>? progress, Func<RunResult, T> interpret, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();

        var options = _options;
        var viaPrlimit = command.Kind == QemuImgCallKind.Inspect;
        var timeout = command.Kind == QemuImgCallKind.Long ? options.LongCallTimeout : options.ShortCallTimeout;
        var fileName = Resolved(viaPrlimit ? options.PrlimitExecutable : options.Executable);
        List<string> argv = [];
        if (viaPrlimit)
        {
            // The image may be hostile (a guest wrote it): cap what parsing it can cost, as Cinder does.
            argv.Add("--as=" + options.InspectAddressSpaceBytes.ToString(CultureInfo.InvariantCulture));
            argv.Add("--cpu=" + options.InspectCpuSeconds.ToString(CultureInfo.InvariantCulture));
            argv.Add("--");
            argv.Add(Resolved(options.Executable));
        }
        argv.AddRange(command.Arguments);
        var commandLine = QemuImgCommand.Display(fileName, argv);

        using var activity = StorageTelemetry.ActivitySource.StartActivity("qemu-img " + command.Verb, ActivityKind.Internal);
        if (activity is not null)
        {
            activity.SetTag("qemu_img.verb", command.Verb);
            foreach (var tag in command.Tags)
            {
                activity.SetTag(tag.Key, tag.Value);
            }
        }

        var started = Stopwatch.GetTimestamp();
        var outcome = "error";
        try
        {
            var result = await ExecuteAsync(command, fileName, argv, commandLine, viaPrlimit, timeout, progress, cancellationToken)
                .ConfigureAwait(false);
            var elapsedMs = Stopwatch.GetElapsedTime(started).TotalMilliseconds;
            QemuImgLog.Finished(_logger, command.Verb, result.ExitCode, elapsedMs);
            activity?.SetTag("qemu_img.exit_code", result.ExitCode);
            var value = interpret(result);
            outcome = "ok";
            return value;
        }
        catch (OperationCanceledException)
        {
            outcome = "cancelled";
            activity?.SetStatus(ActivityStatusCode.Error, "cancelled");
            throw;
        }
        catch (QemuImgException ex)
        {
            outcome = ex.Code == StorageErrorCode.QemuImgTimeout ? "timeout" : "error";
            var elapsedMs = Stopwatch.GetElapsedTime(started).TotalMilliseconds;
            var errorCode = ex.Code.ToString();
            activity?.SetStatus(ActivityStatusCode.Error, errorCode);
            activity?.SetTag("error.type", errorCode);
            QemuImgLog.Failed(_logger, command.Verb, errorCode, ex.ExitCode, elapsedMs, ex.StandardError, commandLine);
            throw;
        }
        finally
        {
            StorageTelemetry.QemuImgDuration.Record(
                Stopwatch.GetElapsedTime(started).TotalSeconds,
                new KeyValuePair<string, object?>("qemu_img.verb", command.Verb),
                new KeyValuePair<string, object?>("qemu_img.outcome", outcome));
        }
    }

    private async Task<RunResult> ExecuteAsync(
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

        return new RunResult(commandLine, process.ExitCode, stdout.Text, TrimmedStandardError(stderr), viaPrlimit);
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

    private static RunResult EnsureSuccess(QemuImgCommand command, RunResult result) =>
        result.ExitCode == 0 ? result : throw Failure(command, result);

    /// <summary>A non-zero exit turned into the exception that says what went wrong and whether a retry may help.</summary>
    private static QemuImgException Failure(QemuImgCommand command, RunResult result)
    {
        var stderr = result.StandardError;
        if (result.ExitCode is 126 or 127
            && (stderr.Contains("prlimit: failed to execute", StringComparison.Ordinal) || stderr.Contains("setpriv: failed to execute", StringComparison.Ordinal) || stderr.Contains("ionice: failed to execute", StringComparison.Ordinal)))
        {
            return new QemuImgException(
                StorageErrorCode.QemuImgMissing,
                $"qemu-img could not be started: {stderr}. Install it with: apt-get install -y qemu-utils. Command: {result.CommandLine}",
                result.CommandLine,
                result.ExitCode,
                stderr);
        }

        var code = Classify(stderr);
        var signal = result.ExitCode is > 128 and < 128 + 65
            ? result.ViaPrlimit
                ? $" (killed by signal {result.ExitCode - 128}; the prlimit caps on address space or CPU time may have been hit)"
                : $" (killed by signal {result.ExitCode - 128})"
            : string.Empty;
        var detail = stderr.Length == 0 ? "nothing on stderr" : stderr;
        return new QemuImgException(
            code,
            $"qemu-img {command.Verb} failed with exit code {result.ExitCode}{signal}: {detail}. Command: {result.CommandLine}",
            result.CommandLine,
            result.ExitCode,
            stderr);
    }

    internal static StorageErrorCode Classify(string standardError)
    {
        if (standardError.Contains("No space left on device", StringComparison.Ordinal))
        {
            return StorageErrorCode.NoSpace;
        }
        // EAGAIN, a stale NFS handle, or another process holding the image's lock: all may pass.
        if (standardError.Contains("Resource temporarily unavailable", StringComparison.Ordinal)
            || standardError.Contains("Stale file handle", StringComparison.Ordinal)
            || standardError.Contains("Failed to get \"write\" lock", StringComparison.Ordinal)
            || standardError.Contains("Failed to get shared \"write\" lock", StringComparison.Ordinal))
        {
            return StorageErrorCode.TransientIo;
        }
        return StorageErrorCode.QemuImgFailed;
    }

    private static T ParseOutput<T>(QemuImgCommand command, RunResult result, Func<string, T> parse)
    {
        try
        {
            return parse(result.StandardOutput);
        }
        catch (Exception ex) when (ex is JsonException or FormatException or InvalidOperationException)
        {
            throw new QemuImgException(
                StorageErrorCode.QemuImgFailed,
                $"qemu-img {command.Verb} printed output that could not be read ({ex.Message}). Command: {result.CommandLine}",
                result.CommandLine,
                result.ExitCode,
                result.StandardError,
                ex);
        }
    }

    private static bool LooksLikeJson(string output) => output.TrimStart().StartsWith('{');

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
