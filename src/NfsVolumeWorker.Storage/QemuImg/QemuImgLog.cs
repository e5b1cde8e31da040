using Microsoft.Extensions.Logging;

namespace NfsVolumeWorker.Storage.QemuImg;

/// <summary>Source-generated log messages of <see cref="QemuImgRunner"/> and its <see cref="QemuImgProcess"/>
/// (logged under the runner's category); event ids 2000-2099.</summary>
internal static partial class QemuImgLog
{
    [LoggerMessage(EventId = 2000, Level = LogLevel.Debug, Message = "Running {CommandLine}")]
    public static partial void Starting(ILogger logger, string commandLine);

    [LoggerMessage(EventId = 2001, Level = LogLevel.Debug, Message = "qemu-img {Verb} exited with {ExitCode} after {ElapsedMs:F0} ms")]
    public static partial void Finished(ILogger logger, string verb, int exitCode, double elapsedMs);

    [LoggerMessage(EventId = 2002, Level = LogLevel.Warning, Message = "qemu-img {Verb} failed ({ErrorCode}) with exit code {ExitCode} after {ElapsedMs:F0} ms: {StandardError} [{CommandLine}]")]
    public static partial void Failed(ILogger logger, string verb, string errorCode, int? exitCode, double elapsedMs, string standardError, string commandLine);

    [LoggerMessage(EventId = 2003, Level = LogLevel.Warning, Message = "qemu-img {Verb} did not finish within {Timeout}; killing it [{CommandLine}]")]
    public static partial void TimedOut(ILogger logger, string verb, TimeSpan timeout, string commandLine);

    [LoggerMessage(EventId = 2004, Level = LogLevel.Debug, Message = "qemu-img {Verb} cancelled by the caller after {ElapsedMs:F0} ms; killing it")]
    public static partial void Cancelled(ILogger logger, string verb, double elapsedMs);

    [LoggerMessage(EventId = 2005, Level = LogLevel.Warning, Message = "qemu-img {Verb} (pid {ProcessId}) did not exit within {GracePeriod} after being killed")]
    public static partial void KillNotConfirmed(ILogger logger, string verb, int processId, TimeSpan gracePeriod);

    [LoggerMessage(EventId = 2006, Level = LogLevel.Error, Message = "Could not start {Executable} for qemu-img {Verb}")]
    public static partial void StartFailed(ILogger logger, Exception exception, string executable, string verb);

    [LoggerMessage(EventId = 2007, Level = LogLevel.Warning, Message = "A progress handler of qemu-img {Verb} threw; progress reports stop, the call goes on")]
    public static partial void ProgressHandlerFailed(ILogger logger, Exception exception, string verb);
}
