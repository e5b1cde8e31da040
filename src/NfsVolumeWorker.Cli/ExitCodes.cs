using System.Globalization;
using NfsVolumeWorker.Contracts;

namespace NfsVolumeWorker.Cli;

/// <summary>nfsvol's exit codes: the numbers of <see cref="NfsvolExitCode"/>, and for a failure the exit code its
/// <see cref="ErrorCode"/> maps to in the contract's table (listed in the root --help and docs/error-codes.md).</summary>
public static class ExitCodes
{
    /// <summary>Success; for check: healthy, or every problem repaired.</summary>
    public const int Ok = (int)NfsvolExitCode.Ok;

    /// <summary>check: problems found (or left after --repair).</summary>
    public const int ProblemsFound = (int)NfsvolExitCode.ProblemsFound;

    /// <summary>Usage error: bad arguments, an id that is not a UUID, no share or an unknown share.</summary>
    public const int Usage = (int)NfsvolExitCode.Usage;

    /// <summary>The operation failed (the error code on stderr says why).</summary>
    public const int Failed = (int)NfsvolExitCode.Failed;

    /// <summary>The volume is busy: another operation held its lock longer than --lock-timeout.</summary>
    public const int Busy = (int)NfsvolExitCode.Busy;

    /// <summary>The exit code of a failure with <paramref name="code"/>.</summary>
    public static int For(ErrorCode code) => (int)code.ExitCode;

    /// <summary>The exit code of a failure the worker reported by name (a <c>CommandFailed</c>); a code this nfsvol
    /// does not know (from a newer worker) is a plain failure.</summary>
    public static int ForReported(string? code) => code is not null && ErrorCodes.Named(code) is { } known ? For(known) : Failed;

    /// <summary>Every exit code with its meaning and, for failures, the codes nfsvol reports with it.</summary>
    public static readonly string HelpText = "Exit codes: " + string.Join("; ", Enum.GetValues<NfsvolExitCode>().Select(exit =>
    {
        var codes = ErrorCodes.All.Where(c => c.ExitCode == exit && c.Source != ErrorCodeSource.OsloAdapter).Select(c => c.Name).ToList();
        var meaning = ErrorCodes.ExitCodeMeanings[exit];
        return string.Create(CultureInfo.InvariantCulture, $"{(int)exit} {meaning}")
            + (codes.Count == 0 || exit == NfsvolExitCode.Failed ? "" : $" ({string.Join(", ", codes)})");
    })) + ". Every error code: docs/error-codes.md.";
}

/// <summary>A usage error found by nfsvol itself (exit code 2).</summary>
public sealed class CliUsageException : Exception
{
    public CliUsageException(string message) : base(message) { }

    public CliUsageException() { }

    public CliUsageException(string message, Exception innerException) : base(message, innerException) { }
}
