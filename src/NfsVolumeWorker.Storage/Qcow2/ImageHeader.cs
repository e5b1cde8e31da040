namespace NfsVolumeWorker.Storage.Qcow2;

/// <summary>What the first bytes of an image file say it is.</summary>
public enum ImageKind
{
    /// <summary>No known header: a raw image (or a raw image whose guest data happens to look like nothing).</summary>
    Raw,
    /// <summary>A qcow2 header (magic <c>QFI\xfb</c>, version 2 or 3).</summary>
    Qcow2,
    /// <summary>A LUKS header: an encrypted raw volume.</summary>
    Luks,
}

/// <summary>The parsed qcow2 header fields the engine needs. Offsets follow qemu's docs/interop/qcow2.txt.</summary>
/// <param name="Version">2 or 3.</param>
/// <param name="VirtualSize">Guest-visible size in bytes.</param>
/// <param name="ClusterBits">log2 of the cluster size.</param>
/// <param name="BackingFile">The backing file name exactly as stored, or null.</param>
/// <param name="BackingFormat">The backing format header extension (0xE2792ACA), or null when absent.</param>
/// <param name="CryptMethod">0 none, 1 AES, 2 LUKS.</param>
/// <param name="IncompatibleFeatures">v3 incompatible feature bits (0 for v2).</param>
/// <param name="HasExternalDataFile">True when the image keeps its data in another file (incompatible bit 2).</param>
/// <param name="L1Size">Entries of the active L1 table.</param>
/// <param name="L1TableOffset">Where the active L1 table starts in the file.</param>
/// <param name="SnapshotCount">Internal snapshots (nb_snapshots).</param>
/// <param name="AutoclearFeatures">v3 autoclear feature bits (0 for v2): bitmaps, raw external data.</param>
public sealed record Qcow2Header(
    uint Version,
    ulong VirtualSize,
    int ClusterBits,
    string? BackingFile,
    string? BackingFormat,
    uint CryptMethod,
    ulong IncompatibleFeatures,
    bool HasExternalDataFile,
    uint L1Size = 0,
    ulong L1TableOffset = 0,
    uint SnapshotCount = 0,
    ulong AutoclearFeatures = 0)
{
    public long ClusterSize => 1L << ClusterBits;

    /// <summary>Incompatible bit 0: the image was not closed cleanly (refcounts may be stale).</summary>
    public bool IsDirty => (IncompatibleFeatures & 1) != 0;

    /// <summary>Incompatible bit 1: qemu found corruption and refuses writes.</summary>
    public bool IsCorrupt => (IncompatibleFeatures & 2) != 0;

    public bool IsEncrypted => CryptMethod != 0;
}

/// <summary>The result of reading an image file's header.</summary>
/// <param name="Kind">What the header says.</param>
/// <param name="FileLength">Length of the file in bytes (apparent size).</param>
/// <param name="Qcow2">The qcow2 header when <see cref="Kind"/> is <see cref="ImageKind.Qcow2"/>.</param>
public sealed record ImageHeader(ImageKind Kind, long FileLength, Qcow2Header? Qcow2);
