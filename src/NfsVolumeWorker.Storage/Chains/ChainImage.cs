using NfsVolumeWorker.Storage.Layout;

namespace NfsVolumeWorker.Storage.Chains;

/// <summary>One file of a volume's chain, as its header describes it.</summary>
/// <param name="FileName">Bare file name on the share.</param>
/// <param name="Format">Format, taken from the image above it (its backing format) or, for the top, from its header.</param>
/// <param name="VirtualSize">Guest-visible size in bytes.</param>
/// <param name="BackingFile">Bare name of its backing file, or null for the base.</param>
/// <param name="BackingFormat">Format of the backing file as recorded in the header.</param>
/// <param name="SnapshotId">The snapshot whose <c>.info</c> entry names this file (the overlay created at that snapshot), if any.</param>
/// <param name="IsDirty">qcow2 dirty bit.</param>
public sealed record ChainImage(
    string FileName,
    ImageFormat Format,
    long VirtualSize,
    string? BackingFile,
    ImageFormat? BackingFormat,
    Guid? SnapshotId,
    bool IsDirty);
