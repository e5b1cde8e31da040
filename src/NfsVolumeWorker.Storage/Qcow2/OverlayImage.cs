using System.Buffers.Binary;
using System.Text;
using Microsoft.Win32.SafeHandles;
using NfsVolumeWorker.Storage.Layout;

namespace NfsVolumeWorker.Storage.Qcow2;

/// <summary>
/// An empty qcow2 overlay, written natively: byte for byte the file that qemu 7.2's
/// <c>qemu-img create -f qcow2 -b BACKING -F FORMAT -u FILE SIZE</c> writes (default options), so taking a
/// snapshot costs a few writes instead of a process. Proven for the inputs <see cref="Unsupported"/> accepts
/// (tests compare against the installed qemu-img and run <c>qemu-img check</c>); anything else is qemu-img's job.
/// </summary>
/// <remarks>
/// What qemu 7.2 lays out (qcow2_co_create, then the truncate that grows the L1 table, then
/// qcow2_update_header for the backing file): cluster 0 the v3 header, its extensions (backing format,
/// feature name table, end) and the backing file name; cluster 1 the refcount table with one entry; cluster 2
/// the refcount block; from cluster 3 the L1 table, all zero, one entry per 512 MiB of virtual size. The file
/// ends where the L1 table ends. Nothing depends on the backing file's contents: with <c>-u</c> qemu-img does
/// not open it.
/// </remarks>
/// <param name="VirtualSize">Guest-visible size in bytes; rounded up to 512 as qemu does.</param>
/// <param name="BackingFile">Backing reference stored as given (relative to the overlay's directory).</param>
/// <param name="BackingFormat">Stored in the backing format header extension.</param>
public sealed record OverlayImage(long VirtualSize, string BackingFile, ImageFormat BackingFormat)
{
    /// <summary>The qemu release whose <c>qemu-img create</c> output this reproduces.</summary>
    public const string QemuVersion = "7.2";

    /// <summary>The largest virtual size qemu accepts with 64 KiB clusters (an L1 table of 32 MiB): 2 PiB, the
    /// limit the engine already applies to every qcow2 size.</summary>
    public const long MaxVirtualSize = Shares.VolumeSizeLimit.Qcow2MaxVirtualSize;

    /// <summary>The longest backing file name the proof covers; Cinder's names are 43 and 80 bytes.</summary>
    public const int MaxBackingFileLength = 255;

    private const int ClusterBits = 16;
    private const int ClusterSize = 1 << ClusterBits;
    private const int SectorSize = 512;

    // One L1 entry maps an L2 table of 8 Ki entries, each one cluster: 512 MiB.
    private const int L1EntryBits = ClusterBits + ClusterBits - 3;

    private const long RefcountTableOffset = 1L * ClusterSize;
    private const long RefcountBlockOffset = 2L * ClusterSize;
    private const long L1TableOffset = 3L * ClusterSize;

    /// <summary>16-bit refcounts (qemu's default refcount_bits).</summary>
    private const int RefcountOrder = 4;

    /// <summary>The v3 header up to and including compression_type, padded to 8 (qemu 7.2's sizeof(QCowHeader)).</summary>
    private const int HeaderLength = 112;

    private const uint ExtensionBackingFormat = 0xE2792ACA;
    private const uint ExtensionFeatureNameTable = 0x6803F857;
    private const int ExtensionHeaderLength = 8;
    private const int FeatureNameLength = 46;

    private static ReadOnlySpan<byte> Magic => [(byte)'Q', (byte)'F', (byte)'I', 0xFB];

    /// <summary>qemu 7.2's feature name table, in its order: (type 0 incompatible, 1 compatible, 2 autoclear; bit; name).</summary>
    private static readonly (byte Type, byte Bit, string Name)[] FeatureNames =
    [
        (0, 0, "dirty bit"),
        (0, 1, "corrupt bit"),
        (0, 2, "external data file"),
        (0, 3, "compression type"),
        (0, 4, "extended L2 entries"),
        (1, 0, "lazy refcounts"),
        (2, 0, "bitmaps"),
        (2, 1, "raw external data"),
    ];

    /// <summary>Why an overlay with these parameters is outside what the byte-for-byte proof covers (the caller
    /// then runs qemu-img create), or null when <see cref="Write"/> produces exactly qemu-img's file.</summary>
    public static string? Unsupported(long virtualSize, string? backingFile, ImageFormat backingFormat)
    {
        if (virtualSize is <= 0 or > MaxVirtualSize)
        {
            return $"virtual size {virtualSize} is outside 1..{MaxVirtualSize} bytes";
        }
        if (backingFile is null || backingFile.Length is 0 or > MaxBackingFileLength || !backingFile.All(IsPlainNameChar))
        {
            // qemu stores any name as given, but a name with ':' or '/' means something to qemu when it is followed:
            // keep to plain file names, which is all the engine makes.
            return $"backing file name '{backingFile}' is not 1..{MaxBackingFileLength} characters of [A-Za-z0-9._-]";
        }
        if (backingFormat is not (ImageFormat.Raw or ImageFormat.Qcow2))
        {
            return $"backing format {backingFormat} is not raw or qcow2";
        }
        return null;
    }

    /// <summary>The virtual size as stored: qemu rounds it up to whole 512-byte sectors.</summary>
    public long StoredVirtualSize => checked(VirtualSize + SectorSize - 1) / SectorSize * SectorSize;

    /// <summary>Entries of the L1 table.</summary>
    public long L1Entries => (StoredVirtualSize + (1L << L1EntryBits) - 1) >> L1EntryBits;

    /// <summary>Length of the file: it ends with the L1 table.</summary>
    public long FileLength => L1TableOffset + (L1Entries * 8);

    /// <summary>Creates <paramref name="path"/> (which must not exist) with <paramref name="mode"/> and writes the
    /// overlay into it. Not synced: the caller fsyncs and renames, as after qemu-img.</summary>
    public void Create(string path, UnixFileMode mode)
    {
        Require();
        using var stream = new FileStream(path, new FileStreamOptions
        {
            Mode = FileMode.CreateNew,
            Access = FileAccess.Write,
            Share = FileShare.None,
            UnixCreateMode = mode,
            BufferSize = 0,
        });
        Write(stream.SafeFileHandle);
    }

    /// <summary>True when the file at <paramref name="path"/> holds exactly the bytes <see cref="Create"/> writes (every
    /// byte compared: a torn or foreign file is not this overlay). False when it does not exist or is not a regular file.</summary>
    public bool Matches(string path)
    {
        Require();
        FileStream stream;
        try
        {
            stream = ImageHeaderReader.OpenReadOnly(path);
        }
        catch (Errors.StorageException)
        {
            return false;
        }
        using (stream)
        {
            var handle = stream.SafeFileHandle;
            if (RandomAccess.GetLength(handle) != FileLength)
            {
                return false;
            }
            var clusters = Clusters();
            var expected = new byte[ClusterSize];
            var actual = new byte[ClusterSize];
            for (long offset = 0; offset < FileLength; offset += ClusterSize)
            {
                var length = (int)Math.Min(ClusterSize, FileLength - offset);
                var want = expected.AsSpan(0, length);
                want.Clear();
                foreach (var (at, bytes) in clusters)
                {
                    if (at == offset)
                    {
                        bytes.CopyTo(want);
                    }
                }
                var got = actual.AsSpan(0, length);
                var read = 0;
                while (read < length)
                {
                    var n = RandomAccess.Read(handle, got[read..], offset + read);
                    if (n == 0)
                    {
                        return false;
                    }
                    read += n;
                }
                if (!got.SequenceEqual(want))
                {
                    return false;
                }
            }
            return true;
        }
    }

    /// <summary>Writes the overlay into an empty file open for writing.</summary>
    public void Write(SafeFileHandle handle)
    {
        ArgumentNullException.ThrowIfNull(handle);
        Require();
        foreach (var (offset, bytes) in Clusters())
        {
            RandomAccess.Write(handle, bytes, offset);
        }
        // The L1 table is all zeroes: a hole reads the same as qemu's written zeroes.
        RandomAccess.SetLength(handle, FileLength);
    }

    /// <summary>The non-zero bytes of the file, each at the start of its cluster: the header, the refcount table's one
    /// entry, the refcount block. Everything else up to <see cref="FileLength"/> is zero.</summary>
    private (long Offset, byte[] Bytes)[] Clusters()
    {
        var refcountTableEntry = new byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(refcountTableEntry, (ulong)RefcountBlockOffset);
        return [(0, Header()), (RefcountTableOffset, refcountTableEntry), (RefcountBlockOffset, RefcountBlock())];
    }

    /// <summary>Cluster 0 up to the end of the backing file name.</summary>
    private byte[] Header()
    {
        var format = Encoding.ASCII.GetBytes(BackingFormat.ToQemuName());
        var name = Encoding.ASCII.GetBytes(BackingFile);
        var featureTableLength = FeatureNames.Length * (2 + FeatureNameLength);
        var backingFileOffset = HeaderLength
            + ExtensionHeaderLength + Align8(format.Length)
            + ExtensionHeaderLength + featureTableLength
            + ExtensionHeaderLength;
        var bytes = new byte[backingFileOffset + name.Length];
        var h = bytes.AsSpan();

        Magic.CopyTo(h);
        BinaryPrimitives.WriteUInt32BigEndian(h[4..], 3); // version
        BinaryPrimitives.WriteUInt64BigEndian(h[8..], (ulong)backingFileOffset);
        BinaryPrimitives.WriteUInt32BigEndian(h[16..], (uint)name.Length);
        BinaryPrimitives.WriteUInt32BigEndian(h[20..], ClusterBits);
        BinaryPrimitives.WriteUInt64BigEndian(h[24..], (ulong)StoredVirtualSize);
        // 32 crypt_method: 0
        BinaryPrimitives.WriteUInt32BigEndian(h[36..], (uint)L1Entries);
        BinaryPrimitives.WriteUInt64BigEndian(h[40..], L1TableOffset);
        BinaryPrimitives.WriteUInt64BigEndian(h[48..], RefcountTableOffset);
        BinaryPrimitives.WriteUInt32BigEndian(h[56..], 1); // refcount_table_clusters
        // 60 nb_snapshots, 64 snapshots_offset, 72/80/88 feature bits: 0
        BinaryPrimitives.WriteUInt32BigEndian(h[96..], RefcountOrder);
        BinaryPrimitives.WriteUInt32BigEndian(h[100..], HeaderLength);
        // 104 compression_type zlib (0) and 7 bytes of padding

        var at = HeaderLength;
        BinaryPrimitives.WriteUInt32BigEndian(h[at..], ExtensionBackingFormat);
        BinaryPrimitives.WriteUInt32BigEndian(h[(at + 4)..], (uint)format.Length);
        format.CopyTo(h[(at + ExtensionHeaderLength)..]);
        at += ExtensionHeaderLength + Align8(format.Length);

        BinaryPrimitives.WriteUInt32BigEndian(h[at..], ExtensionFeatureNameTable);
        BinaryPrimitives.WriteUInt32BigEndian(h[(at + 4)..], (uint)featureTableLength);
        at += ExtensionHeaderLength;
        foreach (var (type, bit, featureName) in FeatureNames)
        {
            h[at] = type;
            h[at + 1] = bit;
            Encoding.ASCII.GetBytes(featureName, h[(at + 2)..]);
            at += 2 + FeatureNameLength;
        }
        at += ExtensionHeaderLength; // end of extensions: type 0, length 0

        name.CopyTo(h[at..]);
        return bytes;
    }

    /// <summary>Refcounts of 1 for the header, refcount table, refcount block and the L1 table's clusters.</summary>
    private byte[] RefcountBlock()
    {
        var l1Clusters = ((L1Entries * 8) + ClusterSize - 1) / ClusterSize;
        var used = (int)(3 + l1Clusters);
        var block = new byte[used * 2];
        for (var i = 0; i < used; i++)
        {
            BinaryPrimitives.WriteUInt16BigEndian(block.AsSpan(i * 2), 1);
        }
        return block;
    }

    private void Require()
    {
        if (Unsupported(VirtualSize, BackingFile, BackingFormat) is { } reason)
        {
            throw new ArgumentException($"Cannot write this overlay natively: {reason}.");
        }
    }

    private static int Align8(int length) => (length + 7) & ~7;

    private static bool IsPlainNameChar(char c) => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-';
}
