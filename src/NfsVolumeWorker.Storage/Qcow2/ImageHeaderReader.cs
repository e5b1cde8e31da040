using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Win32.SafeHandles;
using NfsVolumeWorker.Storage.Diagnostics;
using NfsVolumeWorker.Storage.Durability;
using NfsVolumeWorker.Storage.Errors;

namespace NfsVolumeWorker.Storage.Qcow2;

/// <summary>Reads image headers without spawning qemu-img.</summary>
/// <remarks>
/// Layout and limits follow qemu's docs/interop/qcow2.txt and the checks qemu 7.2 makes when it opens
/// an image (qcow2_do_open): whatever this reader accepts, qemu would accept too, so the engine
/// validates the same backing file name qemu would follow.
/// </remarks>
public static class ImageHeaderReader
{
    /// <summary>How much <see cref="Read"/> reads up front; qemu keeps the header, its extensions and
    /// the backing file name in the first cluster, and images it writes put them in the first 64 KiB.</summary>
    public const int InitialReadLength = 64 * 1024;

    // Field offsets of the fixed header (qcow2.txt, "Header").
    private const int VersionOffset = 4;
    private const int BackingFileOffsetOffset = 8;
    private const int BackingFileSizeOffset = 16;
    private const int ClusterBitsOffset = 20;
    private const int SizeOffset = 24;
    private const int CryptMethodOffset = 32;
    private const int L1SizeOffset = 36;
    private const int L1TableOffsetOffset = 40;
    private const int SnapshotCountOffset = 60;
    private const int IncompatibleFeaturesOffset = 72;
    private const int AutoclearFeaturesOffset = 88;
    private const int RefcountOrderOffset = 96;
    private const int HeaderLengthOffset = 100;

    /// <summary>A v2 header is always 72 bytes; v3 adds fields up to header_length, at least 104.</summary>
    private const int Version2HeaderLength = 72;
    private const int Version3MinHeaderLength = 104;

    // qemu's MIN_CLUSTER_BITS / MAX_CLUSTER_BITS.
    private const int MinClusterBits = 9;
    private const int MaxClusterBits = 21;

    /// <summary>qemu refuses longer backing file names ("Backing file name too long").</summary>
    private const int MaxBackingFileNameLength = 1023;

    /// <summary>qemu keeps the backing format in a 16-byte C string, so 15 bytes at most.</summary>
    private const int MaxBackingFormatLength = 15;

    /// <summary>qemu refuses refcount entries wider than 64 bits.</summary>
    private const int MaxRefcountOrder = 6;

    private const uint CryptMethodLuks = 2;

    private const uint ExtensionEnd = 0;
    private const uint ExtensionBackingFormat = 0xE2792ACA;
    private const uint ExtensionExternalDataFile = 0x44415441;
    private const int ExtensionHeaderLength = 8;

    private const ulong IncompatibleExternalDataFile = 1UL << 2;

    private static ReadOnlySpan<byte> Qcow2Magic => [(byte)'Q', (byte)'F', (byte)'I', 0xFB];
    private static ReadOnlySpan<byte> LuksMagic => [(byte)'L', (byte)'U', (byte)'K', (byte)'S', 0xBA, 0xBE];

    // Strict: a name that is not valid UTF-8 cannot be compared with the engine's file names, and a
    // lossy decode could make two different on-disk names look the same.
    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    // Not in NativeMethods; Linux value on every architecture .NET supports. Keeps open(2) from
    // blocking on a FIFO someone left in place of an image.
    private const int O_NONBLOCK = 0x800;
    private const int ENOENT = 2;
    private const int ENOTDIR = 20;
    private const int ELOOP = 40;

    /// <summary>Reads the header of the file at <paramref name="path"/>. Throws
    /// <see cref="Errors.StorageErrorCode.ImageCorrupt"/> for a qcow2 magic with a malformed header,
    /// <see cref="Errors.StorageErrorCode.UnsupportedFormat"/> for qcow version 1 or unknown versions.</summary>
    /// <remarks>
    /// A file with neither a qcow2 nor a LUKS magic (including an empty or very short file) is
    /// <see cref="ImageKind.Raw"/>. Other failures, all as <see cref="StorageException"/>:
    /// <see cref="StorageErrorCode.ChainBroken"/> when the file (or its directory) does not exist, since
    /// a missing image means a chain member is gone; <see cref="StorageErrorCode.UnsafePath"/> when the
    /// path is a symbolic link or not a regular file; the codes of <see cref="DurableFile.IoError"/> for
    /// other open errors. Read errors after a successful open surface as <see cref="IOException"/>.
    /// </remarks>
    public static ImageHeader Read(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        DurableFile.EnsureNotSymlink(path);

        using var stream = OpenReadOnly(path);
        var handle = stream.SafeFileHandle;
        StorageTelemetry.ImageReads.Add(1, new KeyValuePair<string, object?>("part", "header"));
        var fileLength = RandomAccess.GetLength(handle);
        var buffer = new byte[(int)Math.Min(InitialReadLength, fileLength)];
        var length = ReadFully(handle, buffer);

        var bytes = buffer.AsSpan(0, length);
        if (bytes.StartsWith(LuksMagic))
        {
            return new ImageHeader(ImageKind.Luks, fileLength, null);
        }
        if (!bytes.StartsWith(Qcow2Magic))
        {
            return new ImageHeader(ImageKind.Raw, fileLength, null);
        }

        // Told apart from corruption: qcow v1 and future versions are well-formed, just not ours.
        if (bytes.Length >= VersionOffset + 4)
        {
            var version = BinaryPrimitives.ReadUInt32BigEndian(bytes[VersionOffset..]);
            if (version is not (2 or 3))
            {
                throw new StorageException(StorageErrorCode.UnsupportedFormat,
                    $"{path} is qcow version {version}; only qcow2 versions 2 and 3 are supported.");
            }
        }

        try
        {
            var header = TryParse(bytes, out var needed);
            if (header is null && needed <= fileLength && length < fileLength)
            {
                // Something lies past the first read. TryParse only asks for bytes inside the first
                // cluster, which is at most 2 MiB, so one more read of up to that much is always enough.
                buffer = new byte[(int)Math.Min(1L << MaxClusterBits, fileLength)];
                length = ReadFully(handle, buffer);
                bytes = buffer.AsSpan(0, length);
                header = TryParse(bytes, out needed);
            }
            return header is null
                ? throw new InvalidDataException($"the header needs the first {needed} bytes but the file has {length}.")
                : new ImageHeader(ImageKind.Qcow2, fileLength, header);
        }
        catch (InvalidDataException ex)
        {
            throw new StorageException(StorageErrorCode.ImageCorrupt, $"{path} has a qcow2 magic but a malformed header: {ex.Message}", ex);
        }
    }

    /// <summary>
    /// Asks the kernel to start reading the first <see cref="InitialReadLength"/> bytes of each file now, all at once,
    /// so that the <see cref="Read"/> calls that follow (one after the other: each header names the next file) find
    /// them in the page cache or in flight. With a cold cache a chain walk is otherwise one disk round trip per image.
    /// Only advice: a file that is missing, a symlink or not a regular file is skipped here and refused by
    /// <see cref="Read"/>; nothing is read into this process.
    /// </summary>
    public static void Prefetch(IEnumerable<string> paths)
    {
        ArgumentNullException.ThrowIfNull(paths);
        foreach (var path in paths)
        {
            var fd = NativeMethods.Open(path, NativeMethods.O_RDONLY | NativeMethods.O_NOFOLLOW | NativeMethods.O_CLOEXEC | O_NONBLOCK, 0);
            if (fd >= 0)
            {
                _ = NativeMethods.PosixFadvise(fd, 0, InitialReadLength, NativeMethods.POSIX_FADV_WILLNEED);
                _ = NativeMethods.Close(fd);
            }
        }
    }

    /// <summary>Parses a qcow2 header from the first bytes of a file (at least the header and its
    /// extensions; 64 KiB is always enough for images qemu writes). Throws <see cref="InvalidDataException"/> on nonsense.</summary>
    /// <remarks>
    /// Nonsense includes: no qcow2 magic, a version other than 2 or 3, cluster bits outside 9..21, a v3
    /// header_length under 104 or over the cluster size, a backing file name longer than 1023 bytes,
    /// outside the first cluster, containing NUL or not valid UTF-8, a header extension that overflows
    /// its area, a header, extension or backing file name that extends past <paramref name="bytes"/>, and
    /// extensions that run to the end of <paramref name="bytes"/> without an end marker.
    /// <see cref="Qcow2Header.HasExternalDataFile"/> is true when incompatible bit 2 is set or an
    /// external data file extension is present (qemu ignores the latter without the former; the engine
    /// should not).
    /// </remarks>
    public static Qcow2Header ParseQcow2(ReadOnlySpan<byte> bytes) =>
        TryParse(bytes, out var needed)
        ?? throw new InvalidDataException($"the qcow2 header needs the first {needed} bytes; only {bytes.Length} were given.");

    /// <summary>
    /// Parses the header, or returns null with <paramref name="needed"/> set when a legitimately placed
    /// part of it (always inside the first cluster) lies beyond <paramref name="bytes"/>.
    /// </summary>
    private static Qcow2Header? TryParse(ReadOnlySpan<byte> bytes, out long needed)
    {
        needed = 0;
        if (!bytes.StartsWith(Qcow2Magic))
        {
            throw new InvalidDataException("the bytes do not start with the qcow2 magic QFI\\xfb.");
        }
        if (bytes.Length < VersionOffset + 4)
        {
            needed = VersionOffset + 4;
            return null;
        }

        var version = BinaryPrimitives.ReadUInt32BigEndian(bytes[VersionOffset..]);
        if (version is not (2 or 3))
        {
            throw new InvalidDataException($"unsupported qcow version {version}; only 2 and 3 are qcow2.");
        }
        var fixedLength = version == 2 ? Version2HeaderLength : Version3MinHeaderLength;
        if (bytes.Length < fixedLength)
        {
            needed = fixedLength;
            return null;
        }

        var clusterBits = BinaryPrimitives.ReadUInt32BigEndian(bytes[ClusterBitsOffset..]);
        if (clusterBits is < MinClusterBits or > MaxClusterBits)
        {
            throw new InvalidDataException($"cluster_bits {clusterBits} is outside {MinClusterBits}..{MaxClusterBits}.");
        }
        var clusterSize = 1L << (int)clusterBits;

        var virtualSize = BinaryPrimitives.ReadUInt64BigEndian(bytes[SizeOffset..]);
        if (virtualSize > long.MaxValue)
        {
            throw new InvalidDataException($"virtual size {virtualSize} does not fit in a signed 64-bit offset.");
        }

        var cryptMethod = BinaryPrimitives.ReadUInt32BigEndian(bytes[CryptMethodOffset..]);
        if (cryptMethod > CryptMethodLuks)
        {
            throw new InvalidDataException($"crypt_method {cryptMethod} is unknown.");
        }

        ulong incompatible = 0;
        ulong autoclear = 0;
        long headerLength = Version2HeaderLength;
        if (version == 3)
        {
            incompatible = BinaryPrimitives.ReadUInt64BigEndian(bytes[IncompatibleFeaturesOffset..]);
            autoclear = BinaryPrimitives.ReadUInt64BigEndian(bytes[AutoclearFeaturesOffset..]);
            var refcountOrder = BinaryPrimitives.ReadUInt32BigEndian(bytes[RefcountOrderOffset..]);
            if (refcountOrder > MaxRefcountOrder)
            {
                throw new InvalidDataException($"refcount_order {refcountOrder} is over {MaxRefcountOrder}.");
            }
            headerLength = BinaryPrimitives.ReadUInt32BigEndian(bytes[HeaderLengthOffset..]);
            if (headerLength < Version3MinHeaderLength)
            {
                throw new InvalidDataException($"header_length {headerLength} is under {Version3MinHeaderLength}.");
            }
            if (headerLength > clusterSize)
            {
                throw new InvalidDataException($"header_length {headerLength} exceeds the cluster size {clusterSize}.");
            }
        }

        // qemu reads the name only when the offset is non-zero, and treats an empty name as none.
        var backingOffset = BinaryPrimitives.ReadUInt64BigEndian(bytes[BackingFileOffsetOffset..]);
        var backingSize = BinaryPrimitives.ReadUInt32BigEndian(bytes[BackingFileSizeOffset..]);
        if (backingOffset != 0)
        {
            if (backingSize > MaxBackingFileNameLength)
            {
                throw new InvalidDataException($"backing_file_size {backingSize} is over {MaxBackingFileNameLength}.");
            }
            if (backingOffset > (ulong)clusterSize || backingSize > (ulong)clusterSize - backingOffset)
            {
                throw new InvalidDataException(
                    $"the backing file name ({backingSize} bytes at {backingOffset}) is not inside the first cluster ({clusterSize} bytes).");
            }
        }

        // Extensions run from the end of the header to the backing file name, or to the end of the
        // first cluster when there is none (qemu's ext_end).
        var extensionsEnd = backingOffset != 0 ? (long)backingOffset : clusterSize;
        string? backingFormat = null;
        var hasDataFileExtension = false;
        for (var offset = headerLength; offset < extensionsEnd;)
        {
            if (offset + ExtensionHeaderLength > extensionsEnd)
            {
                throw new InvalidDataException($"the header extension at {offset} overlaps the backing file name at {extensionsEnd}.");
            }
            if (offset + ExtensionHeaderLength > bytes.Length)
            {
                needed = offset + ExtensionHeaderLength;
                return null;
            }
            var type = BinaryPrimitives.ReadUInt32BigEndian(bytes[(int)offset..]);
            var dataLength = BinaryPrimitives.ReadUInt32BigEndian(bytes[((int)offset + 4)..]);
            offset += ExtensionHeaderLength;
            if (type == ExtensionEnd)
            {
                break;
            }
            if (dataLength > extensionsEnd - offset)
            {
                throw new InvalidDataException(
                    $"header extension 0x{type:X8} at {offset - ExtensionHeaderLength} has length {dataLength}, past the end of the extension area at {extensionsEnd}.");
            }
            if (offset + dataLength > bytes.Length)
            {
                needed = offset + dataLength;
                return null;
            }
            var data = bytes.Slice((int)offset, (int)dataLength);
            switch (type)
            {
                case ExtensionBackingFormat:
                    if (dataLength > MaxBackingFormatLength)
                    {
                        throw new InvalidDataException($"the backing format extension is {dataLength} bytes, over {MaxBackingFormatLength}.");
                    }
                    backingFormat = DecodeName(data, "backing format");
                    break;
                case ExtensionExternalDataFile:
                    hasDataFileExtension = true;
                    break;
                default:
                    // Feature name table, bitmaps, encryption header, unknown ones: not needed here.
                    break;
            }
            offset += (dataLength + 7) & ~7L;
        }

        string? backingFile = null;
        if (backingOffset != 0 && backingSize != 0)
        {
            if ((long)backingOffset + backingSize > bytes.Length)
            {
                needed = (long)backingOffset + backingSize;
                return null;
            }
            backingFile = DecodeName(bytes.Slice((int)backingOffset, (int)backingSize), "backing file name");
        }

        return new Qcow2Header(
            version,
            virtualSize,
            (int)clusterBits,
            backingFile,
            backingFormat,
            cryptMethod,
            incompatible,
            (incompatible & IncompatibleExternalDataFile) != 0 || hasDataFileExtension,
            BinaryPrimitives.ReadUInt32BigEndian(bytes[L1SizeOffset..]),
            BinaryPrimitives.ReadUInt64BigEndian(bytes[L1TableOffsetOffset..]),
            BinaryPrimitives.ReadUInt32BigEndian(bytes[SnapshotCountOffset..]),
            autoclear);
    }

    private static string DecodeName(ReadOnlySpan<byte> data, string what)
    {
        // qemu reads names as C strings: a NUL would make qemu follow a shorter name than the one
        // reported here, so refuse rather than guess.
        if (data.Contains((byte)0))
        {
            throw new InvalidDataException($"the {what} contains a NUL byte.");
        }
        try
        {
            return StrictUtf8.GetString(data);
        }
        catch (DecoderFallbackException ex)
        {
            throw new InvalidDataException($"the {what} is not valid UTF-8.", ex);
        }
    }

    /// <summary>Opens a regular file without following a final symbolic link (closing the race with
    /// <see cref="DurableFile.EnsureNotSymlink"/>) and without blocking on a FIFO.</summary>
    internal static FileStream OpenReadOnly(string path)
    {
        var fd = NativeMethods.Open(path, NativeMethods.O_RDONLY | NativeMethods.O_NOFOLLOW | NativeMethods.O_CLOEXEC | O_NONBLOCK, 0);
        if (fd < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw errno switch
            {
                ENOENT or ENOTDIR => new StorageException(StorageErrorCode.ChainBroken, $"{path} does not exist."),
                ELOOP => new StorageException(StorageErrorCode.UnsafePath,
                    $"{path} is a symbolic link; the engine only works on plain files it created."),
                _ => DurableFile.IoError($"open of {path}", errno),
            };
        }

        var handle = new SafeFileHandle(fd, ownsHandle: true);
        try
        {
            // The stream is only a way to ask whether the handle can seek: a FIFO or socket cannot, and
            // its apparent length of 0 would otherwise pass for an empty raw image.
            var stream = new FileStream(handle, FileAccess.Read, bufferSize: 0);
            if (File.GetAttributes(handle).HasFlag(FileAttributes.Directory) || !stream.CanSeek)
            {
                stream.Dispose();
                throw new StorageException(StorageErrorCode.UnsafePath, $"{path} is not a regular file.");
            }
            return stream;
        }
        catch (Exception ex) when (ex is not StorageException)
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>Fills <paramref name="buffer"/> from offset 0, stopping early only at end of file.</summary>
    private static int ReadFully(SafeFileHandle handle, byte[] buffer)
    {
        var total = 0;
        while (total < buffer.Length)
        {
            var read = RandomAccess.Read(handle, buffer.AsSpan(total), total);
            if (read == 0)
            {
                break;
            }
            total += read;
        }
        return total;
    }
}
