using Microsoft.Extensions.Logging;
using NfsVolumeWorker.Storage.Engine;

namespace NfsVolumeWorker.Storage.Diagnostics;

/// <summary>The engine's log messages (event ids 1000-1099). Category: NfsVolumeWorker.Storage.Engine.</summary>
internal static partial class EngineLog
{
    [LoggerMessage(1000, LogLevel.Information, "{Operation} of volume {VolumeId} on {Share} started")]
    public static partial void OperationStarted(ILogger logger, string operation, Guid volumeId, string share);

    [LoggerMessage(1001, LogLevel.Information, "{Operation} of volume {VolumeId} {Outcome} in {ElapsedMs} ms: {Detail}")]
    public static partial void OperationFinished(ILogger logger, string operation, Guid volumeId, string outcome, long elapsedMs, string detail);

    [LoggerMessage(1002, LogLevel.Warning, "{Operation} of volume {VolumeId} failed with {Code}: {Reason}")]
    public static partial void OperationFailed(ILogger logger, string operation, Guid volumeId, string code, string reason);

    [LoggerMessage(1003, LogLevel.Warning, "Volume {VolumeId} has an interrupted {Pending} (started {StartedAt:o}); finishing it before {Operation}")]
    public static partial void ResumingInterrupted(ILogger logger, Guid volumeId, string pending, DateTimeOffset startedAt, string operation);

    [LoggerMessage(1004, LogLevel.Information, "Volume {VolumeId}: {Step}")]
    public static partial void Step(ILogger logger, Guid volumeId, string step);

    [LoggerMessage(1005, LogLevel.Critical, "Two operations overlapped on volume {VolumeId}: {Running} was still running when {Operation} started. The volume lock failed; stop the workers and run 'nfsvol check'.")]
    public static partial void OverlapDetected(ILogger logger, Guid volumeId, string running, string operation);

    [LoggerMessage(1006, LogLevel.Information, "Volume {VolumeId}: removed leftover file {File}")]
    public static partial void RemovedLeftover(ILogger logger, Guid volumeId, string file);

    [LoggerMessage(1007, LogLevel.Warning, "Volume {VolumeId}: snapshot {SnapshotId} is stale (its overlay {Overlay} has no backing file); removing its record")]
    public static partial void StaleSnapshot(ILogger logger, Guid volumeId, Guid snapshotId, string overlay);

    [LoggerMessage(1008, LogLevel.Warning, "The file system refused O_DIRECT for {Target} ({Reason}); copying through the page cache and fsyncing instead")]
    public static partial void DirectIoRefused(ILogger logger, string target, string reason);

    [LoggerMessage(1010, LogLevel.Information, "Volume {VolumeId}: overlay {File} is made by qemu-img create, not natively: {Reason}")]
    public static partial void OverlayByQemuImg(ILogger logger, Guid volumeId, string file, string reason);

    [LoggerMessage(1020, LogLevel.Information, "Volume {VolumeId}: deleting snapshot {SnapshotId} merges by {Direction} ({Bytes} bytes): committing {Upper} down writes {DownBytes} bytes, pulling {Lower} up writes {UpBytes} bytes; {Reason}")]
    public static partial void MergePlanned(ILogger logger, Guid volumeId, Guid snapshotId, MergeDirection direction, long bytes, string upper, long downBytes, string lower, long upBytes, string reason);

    [LoggerMessage(1021, LogLevel.Information, "Volume {VolumeId}: the delete of snapshot {SnapshotId} goes on by {Direction}, as journaled when it started")]
    public static partial void MergeResumed(ILogger logger, Guid volumeId, Guid snapshotId, MergeDirection direction);

    [LoggerMessage(1022, LogLevel.Warning, "Volume {VolumeId}: the interrupted pull-up for snapshot {SnapshotId} left {Upper} re-pointed while {Lower} is still in place; a pull-up by a worker without write-through rebases may have died before writing the pulled-up clusters' tables, and nothing tells that from a finished one, so {Upper} is pointed back at {Lower} and pulled up again")]
    public static partial void PullUpRedone(ILogger logger, Guid volumeId, Guid snapshotId, string upper, string lower);

    [LoggerMessage(1040, LogLevel.Debug, "Volume {VolumeId}: deleting snapshot {SnapshotId} may move data: {Upper} is not seen to be empty ({Reason})")]
    public static partial void DataToMove(ILogger logger, Guid volumeId, Guid snapshotId, string upper, string reason);

    [LoggerMessage(1041, LogLevel.Information, "Volume {VolumeId}: kept overlay {File} left by an interrupted snapshot create (its bytes are exactly the overlay this snapshot needs)")]
    public static partial void AdoptedOverlay(ILogger logger, Guid volumeId, string file);

    [LoggerMessage(1030, LogLevel.Information, "Share {Share}: {Measurement}")]
    public static partial void CopyModeMeasured(ILogger logger, string share, string measurement);

    [LoggerMessage(1031, LogLevel.Warning, "Share {Share}: the copy modes could not be measured ({Reason}); copying with O_DIRECT, measuring again at the next copy")]
    public static partial void CopyModeNotMeasured(ILogger logger, string share, string reason);

    [LoggerMessage(1050, LogLevel.Debug, "Sharing clone of {Source}: applied {Ranges} overlay ranges natively: {Shared} bytes shared with the overlays, {Copied} bytes copied, {Zeroed} bytes zeroed")]
    public static partial void OverlaysApplied(ILogger logger, string source, int ranges, long shared, long copied, long zeroed);

    [LoggerMessage(1051, LogLevel.Information, "Sharing clone of {Source}: the overlays are applied with qemu-img commit, not natively: {Reason}")]
    public static partial void OverlaysByQemuImgCommit(ILogger logger, string source, string reason);
}
