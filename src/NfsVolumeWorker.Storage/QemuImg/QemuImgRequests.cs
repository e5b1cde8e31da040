using NfsVolumeWorker.Storage.Layout;

namespace NfsVolumeWorker.Storage.QemuImg;

/// <summary><c>qemu-img create</c>.</summary>
/// <param name="Path">The image to create.</param>
/// <param name="Format">Its format (<c>-f</c>).</param>
/// <param name="SizeBytes">Virtual size in bytes.</param>
/// <param name="BackingFile">Backing reference stored in the header as given (relative to the image's directory), or null.</param>
/// <param name="BackingFormat">Backing format (<c>-F</c>); required with <paramref name="BackingFile"/>.</param>
/// <param name="Preallocation">qemu's <c>preallocation</c> option (<c>off</c>, <c>falloc</c>, <c>full</c>, <c>metadata</c>), or null for the default.</param>
public sealed record CreateImageRequest(
    string Path,
    ImageFormat Format,
    long SizeBytes,
    string? BackingFile = null,
    ImageFormat? BackingFormat = null,
    string? Preallocation = null);

/// <summary><c>qemu-img convert</c>: a full copy of an image (and its backing chain) into a new file.</summary>
/// <param name="Source">Image to read.</param>
/// <param name="SourceFormat"><c>-f</c>.</param>
/// <param name="Target">File to write (created by qemu-img).</param>
/// <param name="TargetFormat"><c>-O</c>.</param>
/// <param name="DirectIo">Write with <c>-t none</c> (O_DIRECT) instead of the page cache.</param>
/// <param name="OutOfOrderWrites"><c>-W</c>: let qemu-img write out of order (faster, fine for a new file).</param>
/// <param name="Coroutines"><c>-m</c>: parallel coroutines (1..16), or null for qemu-img's default.</param>
/// <param name="CopyOffload"><c>-C</c>: copy with <c>copy_file_range</c> (NFS 4.2: a server-side COPY), for raw and
/// qcow2 either way; qemu-img falls back to reading and writing a range the file system does not copy itself.</param>
/// <param name="BytesPerSecond"><c>-r</c>: the most the copy may write per second, or null for as fast as it can.</param>
public sealed record ConvertRequest(
    string Source,
    ImageFormat SourceFormat,
    string Target,
    ImageFormat TargetFormat,
    bool DirectIo = false,
    bool OutOfOrderWrites = true,
    int? Coroutines = null,
    bool CopyOffload = false,
    long? BytesPerSecond = null);

/// <summary><c>qemu-img commit -d</c>: merge an overlay's data into its backing file, keeping the overlay intact; with
/// <paramref name="Base"/>, the data of every image between the overlay and that image of its chain, in one pass.</summary>
public sealed record CommitRequest(string Overlay, string? Base = null);

/// <summary>One image as <c>qemu-img info --output=json</c> describes it.</summary>
/// <param name="Filename">As reported.</param>
/// <param name="Format">The format qemu-img used (the one given with <c>-f</c>).</param>
/// <param name="VirtualSize">Bytes.</param>
/// <param name="ActualSize">Allocated bytes on disk, when reported.</param>
/// <param name="BackingFilename">The backing reference as stored, or null.</param>
/// <param name="FullBackingFilename">The backing file resolved by qemu-img, or null.</param>
/// <param name="BackingFormat">The stored backing format, or null.</param>
/// <param name="ClusterSize">qcow2 cluster size, when reported.</param>
/// <param name="DirtyFlag">qcow2 dirty flag, when reported.</param>
/// <param name="Corrupt">qcow2 format-specific corrupt flag, when reported.</param>
public sealed record ImageInfo(
    string Filename,
    string Format,
    long VirtualSize,
    long? ActualSize,
    string? BackingFilename,
    string? FullBackingFilename,
    string? BackingFormat,
    long? ClusterSize,
    bool? DirtyFlag,
    bool? Corrupt);

/// <summary>One extent of <c>qemu-img map</c>: where a range of the guest's view comes from.</summary>
/// <param name="Start">Guest offset in bytes.</param>
/// <param name="Length">Bytes.</param>
/// <param name="Depth">The image that provides it: 0 the mapped image itself, 1 its backing file, and so on.</param>
/// <param name="Present">Some image of the chain has it (false: past every image, reads as zeroes).</param>
/// <param name="Zero">It reads as zeroes.</param>
/// <param name="Data">It is stored data (not a hole or a zero cluster).</param>
/// <param name="Offset">Where the range starts in the providing image's file, when qemu-img can say (absent for
/// compressed or encrypted clusters, whose bytes in the file are not the guest's).</param>
public sealed record MapExtent(long Start, long Length, int Depth, bool Present, bool Zero, bool Data, long? Offset = null);

/// <summary>The outcome of <c>qemu-img check --output=json</c>.</summary>
/// <param name="ExitCode">0 clean, 1 check not completed, 2 corruptions, 3 leaks only, 63 format has no check.</param>
/// <param name="Corruptions">Count of corruptions found.</param>
/// <param name="Leaks">Count of leaked clusters.</param>
/// <param name="CheckErrors">Count of errors during the check.</param>
public sealed record CheckResult(int ExitCode, long Corruptions, long Leaks, long CheckErrors)
{
    /// <summary>No corruption and the check completed (leaks are harmless wasted space).</summary>
    public bool IsConsistent => ExitCode is 0 or 3 or 63 && Corruptions == 0 && CheckErrors == 0;
}
