using NfsVolumeWorker.Storage.Errors;

namespace NfsVolumeWorker.Cli;

/// <summary>nfsvol's exit codes (documented in the root --help and docs/nfsvol.md, "Exit codes").</summary>
public static class ExitCodes
{
    /// <summary>Success; for check: healthy, or every problem repaired.</summary>
    public const int Ok = 0;

    /// <summary>check: problems found (or left after --repair).</summary>
    public const int ProblemsFound = 1;

    /// <summary>Usage error: bad arguments, an id that is not a UUID, no share or an unknown share.</summary>
    public const int Usage = 2;

    /// <summary>The operation failed (the error code on stderr says why).</summary>
    public const int Failed = 3;

    /// <summary>The volume is busy: another operation held its lock longer than --lock-timeout.</summary>
    public const int Busy = 4;

    public static int For(StorageErrorCode code) => code switch
    {
        StorageErrorCode.InvalidRequest or StorageErrorCode.ShareNotConfigured => Usage,
        StorageErrorCode.VolumeBusy => Busy,
        _ => Failed,
    };

    public const string HelpText =
        "Exit codes: 0 success (check: healthy or all repaired), 1 check found problems, " +
        "2 usage error (bad arguments, id not a UUID, no or unknown share), 3 operation failed, " +
        "4 volume busy (lock not acquired within --lock-timeout).";
}

/// <summary>A usage error found by nfsvol itself (exit code 2).</summary>
public sealed class CliUsageException : Exception
{
    public CliUsageException(string message) : base(message) { }

    public CliUsageException() { }

    public CliUsageException(string message, Exception innerException) : base(message, innerException) { }
}
