using System.Buffers.Binary;
using Microsoft.Win32.SafeHandles;
using NfsVolumeWorker.Storage.Diagnostics;
using NfsVolumeWorker.Storage.Durability;
using NfsVolumeWorker.Storage.Errors;

namespace NfsVolumeWorker.Storage.Qcow2;

/// <summary>
/// Tells, from a qcow2 image's own tables and without spawning qemu-img, whether the image maps no guest cluster at
/// all: every read of it falls through to its backing file, so removing it from a chain changes nothing a guest sees.
/// A snapshot delete then needs no data move (docs/merges.md, "Nothing to move").
/// </summary>
/// <remarks>
/// Conservative by design: only a plain image (no encryption, no internal snapshots, no external data file, no
/// incompatible or autoclear feature bit set, tables where qemu would accept them) whose L1 entries are all zero, or
/// whose few L2 tables hold only zero entries, is reported empty. A zero-flagged L2 entry (qcow2 v3 bit 0: "reads as
/// zeroes", which hides the backing file) is data. Anything else, including what this reader does not understand,
/// is "may hold data", and the caller takes the path that moves data. Layout per qemu's docs/interop/qcow2.txt.
/// </remarks>
public static class ImageAllocationReader
{
    /// <summary>qemu's QCOW_MAX_L1_SIZE: it refuses to open an image whose L1 table is larger.</summary>
    private const long MaxL1TableBytes = 32L * 1024 * 1024;

    /// <summary>L2 table bytes read before giving up (16 tables of 64 KiB clusters): an overlay that never saw a write
    /// has none, one that saw a few writes later undone (a full discard) has a handful. More is not worth reading on
    /// every delete.</summary>
    public const long MaxL2BytesRead = 1024 * 1024;

    /// <summary>Bits 9-55 of an L1 entry: the L2 table's offset. Bit 63 is the "copied" flag; the rest is reserved.</summary>
    private const ulong L1OffsetMask = 0x00FF_FFFF_FFFF_FE00UL;
    private const ulong L1CopiedFlag = 1UL << 63;

    /// <summary>True when the qcow2 image at <paramref name="path"/> certainly maps no guest cluster (see the remarks
    /// of the class); <paramref name="reason"/> then says how that was seen, and otherwise why the image may hold data
    /// or could not be judged.</summary>
    /// <exception cref="StorageException">The file cannot be opened or its header is malformed (as <see cref="ImageHeaderReader.Read"/>).</exception>
    public static bool HoldsNoGuestData(string path, out string reason) =>
        HoldsNoGuestData(path, ImageHeaderReader.Read(path), out reason);

    /// <summary><see cref="HoldsNoGuestData(string, out string)"/> judged from <paramref name="header"/>, which the
    /// caller has read already (the chain read of the same operation): only the tables are read, and only when the
    /// header leaves the question open. The header must be newer than the last change to the file (the volume's lock
    /// held since it was read, and nothing in between writing the image), or the answer is about an older file.</summary>
    /// <exception cref="StorageException">The file cannot be opened (as <see cref="ImageHeaderReader.Read"/>).</exception>
    internal static bool HoldsNoGuestData(string path, ImageHeader header, out string reason)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(header);
        if (FromHeader(header, out reason) is { } decided)
        {
            return decided;
        }
        DurableFile.EnsureNotSymlink(path);
        using var stream = ImageHeaderReader.OpenReadOnly(path);
        return FromTables(stream.SafeFileHandle, header, out reason);
    }

    /// <summary>The answer when the header alone gives it (not qcow2, not an image this reader judges, no L1 table);
    /// null when the tables must be read.</summary>
    private static bool? FromHeader(ImageHeader header, out string reason)
    {
        if (header.Qcow2 is not { } q)
        {
            reason = $"it is {header.Kind.ToString().ToLowerInvariant()}, not qcow2";
            return false;
        }
        if (Unsupported(q, header.FileLength) is { } why)
        {
            reason = why;
            return false;
        }
        if (q.L1Size == 0)
        {
            reason = "its L1 table is empty";
            return true;
        }
        reason = "";
        return null;
    }

    /// <summary>The answer from the L1 table and the L2 tables it points to, read through <paramref name="handle"/>,
    /// for an image whose <paramref name="header"/> <see cref="FromHeader"/> left open.</summary>
    private static bool FromTables(SafeFileHandle handle, ImageHeader header, out string reason)
    {
        var q = header.Qcow2!;
        StorageTelemetry.ImageReads.Add(1, new KeyValuePair<string, object?>("part", "tables"));
        var l1 = new byte[q.L1Size * 8L];
        if (ReadFully(handle, l1, (long)q.L1TableOffset) < l1.Length)
        {
            reason = "its L1 table could not be read whole";
            return false;
        }

        var l2 = new byte[q.ClusterSize];
        var tables = 0;
        for (var i = 0; i < l1.Length; i += 8)
        {
            var entry = BinaryPrimitives.ReadUInt64BigEndian(l1.AsSpan(i));
            if (entry == 0)
            {
                continue;
            }
            var l2Offset = entry & L1OffsetMask;
            if ((entry & ~(L1OffsetMask | L1CopiedFlag)) != 0 || l2Offset == 0 || l2Offset % (ulong)q.ClusterSize != 0
                || l2Offset > (ulong)(header.FileLength - q.ClusterSize))
            {
                reason = $"L1 entry {i / 8} (0x{entry:x16}) is not one this reader understands";
                return false;
            }
            if (++tables * q.ClusterSize > MaxL2BytesRead)
            {
                reason = $"its L2 tables are more than {MaxL2BytesRead} bytes, not read";
                return false;
            }
            if (ReadFully(handle, l2, (long)l2Offset) < l2.Length)
            {
                reason = $"the L2 table at {l2Offset} could not be read whole";
                return false;
            }
            // Any non-zero entry maps something: data, a compressed cluster, or the zero flag (which hides the
            // backing file as surely as data does).
            for (var j = 0; j < l2.Length; j += 8)
            {
                var mapping = BinaryPrimitives.ReadUInt64BigEndian(l2.AsSpan(j));
                if (mapping != 0)
                {
                    var guestOffset = (((long)(i / 8) * (q.ClusterSize / 8)) + (j / 8)) * q.ClusterSize;
                    reason = (mapping & 1) != 0 && (mapping & ~1UL & ~L1CopiedFlag) == 0
                        ? $"the cluster at guest offset {guestOffset} reads as zeroes (zero flag), hiding the backing file"
                        : $"the cluster at guest offset {guestOffset} is allocated (L2 entry 0x{mapping:x16})";
                    return false;
                }
            }
        }
        reason = tables == 0 ? "no L1 entry is set" : $"its {tables} L2 table(s) map no cluster";
        return true;
    }

    /// <summary>Why the image is outside what <see cref="HoldsNoGuestData(string, out string)"/> judges, or null.</summary>
    private static string? Unsupported(Qcow2Header q, long fileLength)
    {
        if (q.IsEncrypted)
        {
            return "it is encrypted";
        }
        if (q.HasExternalDataFile)
        {
            return "it keeps its data in an external data file";
        }
        if (q.IncompatibleFeatures != 0)
        {
            // Dirty (tables may lag the data), corrupt, compression type, extended L2 entries, or a bit not known here.
            return $"incompatible feature bits 0x{q.IncompatibleFeatures:x} are set";
        }
        if (q.AutoclearFeatures != 0)
        {
            // Persistent bitmaps would be lost with the image.
            return $"autoclear feature bits 0x{q.AutoclearFeatures:x} are set (bitmaps)";
        }
        if (q.SnapshotCount != 0)
        {
            return $"it has {q.SnapshotCount} internal snapshot(s)";
        }
        var l1Bytes = q.L1Size * 8L;
        if (l1Bytes > MaxL1TableBytes)
        {
            return $"its L1 table ({q.L1Size} entries) is larger than qemu accepts";
        }
        // qemu refuses an L1 table too small for the virtual size (one entry per cluster of L2 entries).
        var bytesPerL1Entry = q.ClusterSize * (q.ClusterSize / 8);
        var needed = (long)((q.VirtualSize + (ulong)bytesPerL1Entry - 1) / (ulong)bytesPerL1Entry);
        if (q.L1Size < needed)
        {
            return $"its L1 table ({q.L1Size} entries) is too small for its virtual size ({needed} needed)";
        }
        if (q.L1Size > 0 && (q.L1TableOffset % (ulong)q.ClusterSize != 0 || q.L1TableOffset > (ulong)fileLength
            || (ulong)l1Bytes > (ulong)fileLength - q.L1TableOffset))
        {
            return $"its L1 table at {q.L1TableOffset} is not cluster-aligned inside the file";
        }
        return null;
    }

    private static int ReadFully(SafeFileHandle handle, byte[] buffer, long offset)
    {
        var total = 0;
        while (total < buffer.Length)
        {
            var read = RandomAccess.Read(handle, buffer.AsSpan(total), offset + total);
            if (read == 0)
            {
                break;
            }
            total += read;
        }
        return total;
    }
}
