namespace NfsVolumeWorker.Contracts;

/// <summary>Image format of a volume file.</summary>
public enum VolumeFormat
{
    /// <summary>A plain, usually sparse, file.</summary>
    Raw,
    /// <summary>A qcow2 image.</summary>
    Qcow2,
}
