namespace NfsVolumeWorker.Storage.Errors;

/// <summary>
/// The one exception type the engine throws for expected failures. <see cref="Code"/> is stable and
/// machine readable; <see cref="IsTransient"/> tells a caller whether retrying may succeed.
/// </summary>
public class StorageException : Exception
{
    public StorageException(StorageErrorCode code, string message, Exception? innerException = null)
        : base(message, innerException)
    {
        Code = code;
    }

    public StorageException() : this(StorageErrorCode.InvalidRequest, "Invalid request.") { }

    public StorageException(string message) : this(StorageErrorCode.InvalidRequest, message) { }

    public StorageException(string message, Exception innerException)
        : this(StorageErrorCode.InvalidRequest, message, innerException) { }

    /// <summary>Why the operation failed.</summary>
    public StorageErrorCode Code { get; }

    /// <summary>True when the same request may succeed later without any change (busy, I/O hiccup, out of space).</summary>
    public virtual bool IsTransient => Code is StorageErrorCode.VolumeBusy
        or StorageErrorCode.TransientIo
        or StorageErrorCode.NoSpace
        or StorageErrorCode.QemuImgTimeout
        or StorageErrorCode.ShareUnavailable;

    /// <summary>The volume the failure concerns, when known.</summary>
    public Guid? VolumeId { get; init; }
}
