using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Storage.Diagnostics;
using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Storage.Layout;

namespace NfsVolumeWorker.Storage.QemuImg;

/// <summary>
/// Typed wrapper around the qemu-img binary: argument vectors (no shell), explicit formats on every
/// image, JSON output parsed into records, failures turned into <see cref="QemuImgException"/>, each
/// call traced and measured. The process itself (limits, timeouts, kill) is <see cref="QemuImgProcess"/>'s.
/// </summary>
public sealed class QemuImgRunner
{
    private static readonly string[] PreallocationModes = ["off", "metadata", "falloc", "full"];

    private readonly ILogger<QemuImgRunner> _logger;
    private readonly QemuImgProcess _process;

    public QemuImgRunner(IOptions<QemuImgOptions> options, ILogger<QemuImgRunner> logger)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(logger);
        _logger = logger;
        _process = new QemuImgProcess(options.Value, logger);
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
    /// backing file below the old one, qemu-img reads only what the images in between hold. Progress as 0..1.
    /// <para>Runs with <c>-t writethrough</c>: the image is rebased in place, under a name a chain reads, and with
    /// qemu's default write-back cache qemu-img writes the new reference (and flushes the file) before the cluster
    /// tables of what it copied, which it keeps in memory until close. A kill in between leaves the image naming the new
    /// backing file without those clusters, so it reads wrong. Write-through makes each copy durable, tables included,
    /// before the write completes, so the reference is never rewritten ahead of the data (docs/merges.md).</para></summary>
    public async Task RebaseAsync(string path, string? backingFile, ImageFormat? backingFormat, IProgress<double>? progress = null, CancellationToken cancellationToken = default)
    {
        if (backingFile is { Length: 0 } || backingFile is null != backingFormat is null)
        {
            throw new ArgumentException("Give a backing file with its format, or neither (standalone).", nameof(backingFile));
        }
        List<string> args = ["rebase", progress is null ? "-q" : "-p", "-f", "qcow2", "-t", "writethrough", "-b", backingFile ?? ""];
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

    private static CheckResult InterpretCheck(QemuImgCommand command, QemuImgResult result)
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

    /// <summary>
    /// Runs one call to completion and lets <paramref name="interpret"/> judge the exit code and read
    /// the output, inside the call's activity so a failure is traced and logged as one.
    /// </summary>
    private async Task<T> RunAsync<T>(QemuImgCommand command, IProgress<double>? progress, Func<QemuImgResult, T> interpret, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();

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
            var result = await _process.RunAsync(command, progress, cancellationToken).ConfigureAwait(false);
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
            QemuImgLog.Failed(_logger, command.Verb, errorCode, ex.ExitCode, elapsedMs, ex.StandardError, ex.CommandLine);
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

    private static QemuImgResult EnsureSuccess(QemuImgCommand command, QemuImgResult result) =>
        result.ExitCode == 0 ? result : throw Failure(command, result);

    /// <summary>A non-zero exit turned into the exception that says what went wrong and whether a retry may help.</summary>
    private static QemuImgException Failure(QemuImgCommand command, QemuImgResult result)
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

    private static T ParseOutput<T>(QemuImgCommand command, QemuImgResult result, Func<string, T> parse)
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
}
