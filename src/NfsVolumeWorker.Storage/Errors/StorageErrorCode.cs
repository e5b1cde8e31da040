namespace NfsVolumeWorker.Storage.Errors;

/// <summary>
/// Stable, machine-readable reasons an operation failed. The names are part of the public
/// contract (they appear in events, logs and the CLI's JSON): add new ones, never rename.
/// </summary>
public enum StorageErrorCode
{
    /// <summary>An id is not a UUID, or a request field is missing or out of range.</summary>
    InvalidRequest,
    /// <summary>The share named by the request is not one this process serves.</summary>
    ShareNotConfigured,
    /// <summary>The share's directory is missing, not a directory, or not writable.</summary>
    ShareUnavailable,
    /// <summary>The volume has no files on the share.</summary>
    VolumeNotFound,
    /// <summary>A different volume already has the target name.</summary>
    VolumeExists,
    /// <summary>The snapshot is not recorded for the volume.</summary>
    SnapshotNotFound,
    /// <summary>The operation needs the newest snapshot (revert) and this one is not.</summary>
    SnapshotNotNewest,
    /// <summary>The volume is encrypted; there is no key manager here.</summary>
    VolumeEncrypted,
    /// <summary>The volume is attached to an instance; there is no hypervisor here to coordinate with.</summary>
    VolumeAttached,
    /// <summary>An image names a backing file that is not a file of the same volume in the same directory.</summary>
    InvalidBackingFile,
    /// <summary>A path is a symbolic link, or would resolve outside the share.</summary>
    UnsafePath,
    /// <summary>The <c>.info</c> file is empty, truncated, not JSON, or names files that are not the volume's.</summary>
    InfoFileCorrupt,
    /// <summary>The chain on disk does not match the <c>.info</c> file (missing or unexpected backing file).</summary>
    ChainBroken,
    /// <summary>An image header is malformed or marked corrupt.</summary>
    ImageCorrupt,
    /// <summary>An image is in a format the engine does not handle (LUKS, external data file, qcow1...).</summary>
    UnsupportedFormat,
    /// <summary>The image's virtual size does not match the volume size the caller expects.</summary>
    SizeMismatch,
    /// <summary>A volume cannot shrink.</summary>
    ShrinkNotAllowed,
    /// <summary>Another operation holds the volume's lock and did not release it in time.</summary>
    VolumeBusy,
    /// <summary>qemu-img exited with an error.</summary>
    QemuImgFailed,
    /// <summary>qemu-img did not finish within its time limit.</summary>
    QemuImgTimeout,
    /// <summary>qemu-img is not installed or cannot be started.</summary>
    QemuImgMissing,
    /// <summary>The share is out of space.</summary>
    NoSpace,
    /// <summary>An I/O error that may pass (EAGAIN, stale NFS handle, EIO on a flaky mount).</summary>
    TransientIo,
    /// <summary>The operation was cancelled before it finished; running it again finishes it.</summary>
    Cancelled,
    /// <summary>An unexpected failure (a defect or a state nobody foresaw): not retried; the worker's log has
    /// the exception. The share is left as the last completed step left it, readable, and the next operation on
    /// the volume finishes or rolls back anything the journal records.</summary>
    InternalError,
}
