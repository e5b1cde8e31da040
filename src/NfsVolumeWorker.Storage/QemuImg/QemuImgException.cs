using NfsVolumeWorker.Storage.Errors;

namespace NfsVolumeWorker.Storage.QemuImg;

/// <summary>A qemu-img call that failed: carries the command line, exit code and stderr.</summary>
public sealed class QemuImgException : StorageException
{
    public QemuImgException(StorageErrorCode code, string message, string commandLine, int? exitCode, string standardError, Exception? inner = null)
        : base(code, message, inner)
    {
        CommandLine = commandLine;
        ExitCode = exitCode;
        StandardError = standardError;
    }

    /// <summary>The argument vector, joined for display.</summary>
    public string CommandLine { get; }

    /// <summary>Exit code, or null when the process did not exit (timeout, failed to start).</summary>
    public int? ExitCode { get; }

    /// <summary>What qemu-img wrote to stderr (trimmed).</summary>
    public string StandardError { get; }
}
