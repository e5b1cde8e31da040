namespace NfsVolumeWorker.Storage.Qcow2;

/// <summary>Reads image headers without spawning qemu-img.</summary>
public static class ImageHeaderReader
{
    /// <summary>Reads the header of the file at <paramref name="path"/>. Throws
    /// <see cref="Errors.StorageErrorCode.ImageCorrupt"/> for a qcow2 magic with a malformed header,
    /// <see cref="Errors.StorageErrorCode.UnsupportedFormat"/> for qcow version 1 or unknown versions.</summary>
    public static ImageHeader Read(string path) => throw new NotImplementedException();

    /// <summary>Parses a qcow2 header from the first bytes of a file (at least the header and its
    /// extensions; 64 KiB is always enough for images qemu writes). Throws <see cref="InvalidDataException"/> on nonsense.</summary>
    public static Qcow2Header ParseQcow2(ReadOnlySpan<byte> bytes) => throw new NotImplementedException();
}
