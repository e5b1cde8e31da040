namespace NfsVolumeWorker.Storage.Layout;

/// <summary>The two image formats a Cinder NFS share holds.</summary>
public enum ImageFormat
{
    /// <summary>A plain (usually sparse) file.</summary>
    Raw,
    /// <summary>A qcow2 image, possibly with a backing file.</summary>
    Qcow2,
}

/// <summary>qemu-img's names for <see cref="ImageFormat"/>.</summary>
public static class ImageFormatNames
{
    public static string ToQemuName(this ImageFormat format) => format switch
    {
        ImageFormat.Raw => "raw",
        ImageFormat.Qcow2 => "qcow2",
        _ => throw new ArgumentOutOfRangeException(nameof(format), format, null),
    };

    public static bool TryParse(string? name, out ImageFormat format)
    {
        switch (name)
        {
            case "raw": format = ImageFormat.Raw; return true;
            case "qcow2": format = ImageFormat.Qcow2; return true;
            default: format = default; return false;
        }
    }
}
