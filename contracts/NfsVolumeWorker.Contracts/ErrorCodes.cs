using System.Collections.Frozen;

namespace NfsVolumeWorker.Contracts;

/// <summary>nfsvol's exit status. The numbers are documented (<c>nfsvol --help</c>, docs/error-codes.md) and never change.</summary>
public enum NfsvolExitCode
{
    /// <summary>Success; for <c>check</c>: healthy, or every problem repaired.</summary>
    Ok = 0,
    /// <summary><c>check</c> found problems (or some remain after <c>--repair</c>).</summary>
    ProblemsFound = 1,
    /// <summary>The request itself is wrong: bad arguments, an id that is not a UUID, no share or an unknown share.</summary>
    Usage = 2,
    /// <summary>The operation failed (the error code says why); for <c>check</c>: a repair failed.</summary>
    Failed = 3,
    /// <summary>Another operation held the volume's lock longer than <c>--lock-timeout</c>.</summary>
    Busy = 4,
}

/// <summary>Who reports a code.</summary>
public enum ErrorCodeSource
{
    /// <summary>The storage engine (a <c>StorageErrorCode</c> of the same name): the worker's events, the oslo
    /// adapter's failure replies and notifications, and nfsvol all report it.</summary>
    Engine,
    /// <summary>The oslo adapter, for a request it cannot map to a command.</summary>
    OsloAdapter,
    /// <summary>nfsvol alone (its own argument checks and its talk with the broker).</summary>
    Nfsvol,
}

/// <summary>One stable error code.</summary>
/// <param name="Name">The code as it travels on the wire (<see cref="CommandFailed.ErrorCode"/>, the oslo failure
/// reply's <c>error_code</c>, nfsvol's stderr and <c>--json</c>): never renamed.</param>
/// <param name="IsTransient">True when the same request may succeed later without any change; the worker retried it
/// with back-off before reporting it.</param>
/// <param name="ExitCode">nfsvol's exit status when it ends with this code.</param>
/// <param name="Source">Who reports it.</param>
/// <param name="Description">What it means, for operators.</param>
public sealed record ErrorCode(string Name, bool IsTransient, NfsvolExitCode ExitCode, ErrorCodeSource Source, string Description)
{
    /// <inheritdoc/>
    public override string ToString() => Name;
}

/// <summary>
/// The one table of error codes. Events, oslo failure replies and <c>.error</c> notifications carry a code from
/// here, and nfsvol takes its exit status from it. The <see cref="ErrorCodeSource.Engine"/> rows are the storage
/// engine's <c>StorageErrorCode</c> names, one to one (a test proves it); docs/error-codes.md is this table
/// (a test compares them).
/// </summary>
public static class ErrorCodes
{
    private const NfsvolExitCode ExitUsage = NfsvolExitCode.Usage;
    private const NfsvolExitCode ExitFailed = NfsvolExitCode.Failed;
    private const ErrorCodeSource Engine = ErrorCodeSource.Engine;

    /// <summary>An id is not a UUID, or a request field is missing or out of range.</summary>
    public static readonly ErrorCode InvalidRequest = new(nameof(InvalidRequest), false, ExitUsage, Engine,
        "An id is not a UUID, or a request field is missing or out of range. Nothing was touched.");

    /// <summary>The share named by the request is not one this process serves.</summary>
    public static readonly ErrorCode ShareNotConfigured = new(nameof(ShareNotConfigured), false, ExitUsage, Engine,
        "The share named by the request is not one this process serves (not in its share list).");

    /// <summary>The share's directory is missing, not a directory, or not writable.</summary>
    public static readonly ErrorCode ShareUnavailable = new(nameof(ShareUnavailable), true, ExitFailed, Engine,
        "The share's directory is missing, not mounted, not a directory, or not writable.");

    /// <summary>The volume has no files on the share.</summary>
    public static readonly ErrorCode VolumeNotFound = new(nameof(VolumeNotFound), false, ExitFailed, Engine,
        "The volume has no files on the share.");

    /// <summary>A different volume already has the target name.</summary>
    public static readonly ErrorCode VolumeExists = new(nameof(VolumeExists), false, ExitFailed, Engine,
        "A different volume already has the target name.");

    /// <summary>The snapshot is not recorded for the volume.</summary>
    public static readonly ErrorCode SnapshotNotFound = new(nameof(SnapshotNotFound), false, ExitFailed, Engine,
        "The snapshot is not recorded in the volume's .info file.");

    /// <summary>The operation needs the newest snapshot and this one is not.</summary>
    public static readonly ErrorCode SnapshotNotNewest = new(nameof(SnapshotNotNewest), false, ExitFailed, Engine,
        "The operation (revert) needs the volume's newest snapshot, and this one is not.");

    /// <summary>The volume is encrypted.</summary>
    public static readonly ErrorCode VolumeEncrypted = new(nameof(VolumeEncrypted), false, ExitFailed, Engine,
        "The volume is encrypted; there is no key manager here.");

    /// <summary>The volume is attached to an instance.</summary>
    public static readonly ErrorCode VolumeAttached = new(nameof(VolumeAttached), false, ExitFailed, Engine,
        "The volume is attached to an instance; there is no hypervisor here to coordinate with.");

    /// <summary>An image names a backing file outside its volume.</summary>
    public static readonly ErrorCode InvalidBackingFile = new(nameof(InvalidBackingFile), false, ExitFailed, Engine,
        "An image names a backing file that is not a file of the same volume in the same directory: refused, investigate.");

    /// <summary>A path is a symbolic link or resolves outside the share.</summary>
    public static readonly ErrorCode UnsafePath = new(nameof(UnsafePath), false, ExitFailed, Engine,
        "A path is a symbolic link, or would resolve outside the share: refused, investigate.");

    /// <summary>The <c>.info</c> file is unreadable.</summary>
    public static readonly ErrorCode InfoFileCorrupt = new(nameof(InfoFileCorrupt), false, ExitFailed, Engine,
        "The .info file is empty, truncated, not JSON, or names files that are not the volume's (nfsvol check --repair rebuilds it).");

    /// <summary>The chain on disk does not match the <c>.info</c> file.</summary>
    public static readonly ErrorCode ChainBroken = new(nameof(ChainBroken), false, ExitFailed, Engine,
        "The chain on disk does not match the .info file (a missing or unexpected backing file); see nfsvol check.");

    /// <summary>An image header is malformed or marked corrupt.</summary>
    public static readonly ErrorCode ImageCorrupt = new(nameof(ImageCorrupt), false, ExitFailed, Engine,
        "An image header is malformed or marked corrupt.");

    /// <summary>An image is in a format the engine does not handle.</summary>
    public static readonly ErrorCode UnsupportedFormat = new(nameof(UnsupportedFormat), false, ExitFailed, Engine,
        "An image is in a format the engine does not handle (LUKS, an external data file, qcow1, ...).");

    /// <summary>The image's virtual size does not match the size the caller expects.</summary>
    public static readonly ErrorCode SizeMismatch = new(nameof(SizeMismatch), false, ExitFailed, Engine,
        "The image's virtual size does not match the volume size the caller expects.");

    /// <summary>A volume cannot shrink.</summary>
    public static readonly ErrorCode ShrinkNotAllowed = new(nameof(ShrinkNotAllowed), false, ExitFailed, Engine,
        "A volume cannot shrink: the new size is smaller than the current one.");

    /// <summary>Another operation holds the volume's lock.</summary>
    public static readonly ErrorCode VolumeBusy = new(nameof(VolumeBusy), true, NfsvolExitCode.Busy, Engine,
        "Another operation holds the volume's lock and did not release it in time.");

    /// <summary>qemu-img exited with an error.</summary>
    public static readonly ErrorCode QemuImgFailed = new(nameof(QemuImgFailed), false, ExitFailed, Engine,
        "qemu-img exited with an error (its command line and stderr are in the message and the log).");

    /// <summary>qemu-img did not finish in time.</summary>
    public static readonly ErrorCode QemuImgTimeout = new(nameof(QemuImgTimeout), true, ExitFailed, Engine,
        "qemu-img did not finish within its time limit.");

    /// <summary>qemu-img cannot be started.</summary>
    public static readonly ErrorCode QemuImgMissing = new(nameof(QemuImgMissing), false, ExitFailed, Engine,
        "qemu-img is not installed or cannot be started.");

    /// <summary>The share is out of space.</summary>
    public static readonly ErrorCode NoSpace = new(nameof(NoSpace), true, ExitFailed, Engine,
        "The share is out of space (or the operation would not fit in its free space); nothing was left half-done.");

    /// <summary>An I/O error that may pass.</summary>
    public static readonly ErrorCode TransientIo = new(nameof(TransientIo), true, ExitFailed, Engine,
        "An I/O error that may pass (EAGAIN, a stale NFS handle, EIO on a flaky mount).");

    /// <summary>The operation was cancelled before it finished.</summary>
    public static readonly ErrorCode Cancelled = new(nameof(Cancelled), false, ExitFailed, Engine,
        "The operation was cancelled before it finished; running it again finishes it.");

    /// <summary>An unexpected failure (a defect).</summary>
    public static readonly ErrorCode InternalError = new(nameof(InternalError), false, ExitFailed, Engine,
        "An unexpected failure (a defect): not retried; the log has the exception. The share is as the last completed step left it, readable.");

    /// <summary>An oslo request for a method or API version the adapter does not serve.</summary>
    public static readonly ErrorCode UnsupportedRequest = new(nameof(UnsupportedRequest), false, ExitUsage, ErrorCodeSource.OsloAdapter,
        "An oslo request names an RPC method or API version this worker does not serve (Cinder's NoSuchMethod, UnsupportedVersion).");

    /// <summary>nfsvol's own argument check failed.</summary>
    public static readonly ErrorCode Usage = new(nameof(Usage), false, ExitUsage, ErrorCodeSource.Nfsvol,
        "nfsvol's arguments are wrong: an unknown command type, a missing required option, a bad value.");

    /// <summary>nfsvol cannot reach the broker.</summary>
    public static readonly ErrorCode BrokerUnavailable = new(nameof(BrokerUnavailable), true, ExitFailed, ErrorCodeSource.Nfsvol,
        "nfsvol cannot reach the broker (refused, unreachable, or the connection closed).");

    /// <summary>The broker returned a command: no queue is bound to its exchange.</summary>
    public static readonly ErrorCode Unroutable = new(nameof(Unroutable), false, ExitFailed, ErrorCodeSource.Nfsvol,
        "The broker returned the command: no queue is bound to its exchange (no worker ever ran on that vhost and the definitions were not imported); it was not queued.");

    /// <summary>No terminal event within <c>--timeout</c>.</summary>
    public static readonly ErrorCode Timeout = new(nameof(Timeout), true, ExitFailed, ErrorCodeSource.Nfsvol,
        "nfsvol send --wait saw no terminal event for its command within --timeout; the command may still finish (nfsvol watch).");

    /// <summary>Every code, engine codes first in <c>StorageErrorCode</c> order.</summary>
    public static readonly IReadOnlyList<ErrorCode> All =
    [
        InvalidRequest, ShareNotConfigured, ShareUnavailable, VolumeNotFound, VolumeExists, SnapshotNotFound,
        SnapshotNotNewest, VolumeEncrypted, VolumeAttached, InvalidBackingFile, UnsafePath, InfoFileCorrupt, ChainBroken,
        ImageCorrupt, UnsupportedFormat, SizeMismatch, ShrinkNotAllowed, VolumeBusy, QemuImgFailed, QemuImgTimeout,
        QemuImgMissing, NoSpace, TransientIo, Cancelled, InternalError,
        UnsupportedRequest,
        Usage, BrokerUnavailable, Unroutable, Timeout,
    ];

    private static readonly FrozenDictionary<string, ErrorCode> ByName = All.ToFrozenDictionary(c => c.Name, StringComparer.Ordinal);

    /// <summary>The code named <paramref name="name"/> (as on the wire), or null when the table has none.</summary>
    public static ErrorCode? Named(string name) => ByName.GetValueOrDefault(name);

    /// <summary>What each exit status of nfsvol means, for its <c>--help</c> and the docs.</summary>
    public static readonly IReadOnlyDictionary<NfsvolExitCode, string> ExitCodeMeanings = new Dictionary<NfsvolExitCode, string>
    {
        [NfsvolExitCode.Ok] = "success (for check: healthy, or every problem repaired)",
        [NfsvolExitCode.ProblemsFound] = "check found problems (or some remain after --repair)",
        [NfsvolExitCode.Usage] = "usage error: bad arguments, an id that is not a UUID, a bad size, no share, a share not in --shares-config",
        [NfsvolExitCode.Failed] = "the operation failed, the error code says why (for check: a repair failed)",
        [NfsvolExitCode.Busy] = "volume busy: another operation held the volume's lock longer than --lock-timeout",
    };
}
