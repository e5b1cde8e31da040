using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using NfsVolumeWorker.Storage.Qcow2;
using NfsVolumeWorker.Storage.Tests.Support;

namespace NfsVolumeWorker.Storage.Tests.Qcow2;

/// <summary>Makes images with the real qemu-img, hand-writes headers, patches bytes, and checks a
/// parsed header against what <c>qemu-img info</c> says about the same file.</summary>
internal static class Qcow2TestImages
{
    public static string RunQemuImg(params string[] args) => RequiredTool.RunChecked(RequiredTool.QemuImg, args);

    /// <summary>
    /// Runs a qemu-img create that makes a LUKS header. qemu first benchmarks PBKDF2 against the
    /// thread's CPU time and gives up with "Unable to get accurate CPU usage" when the clock did not
    /// move, which on coarse-grained container clocks happens about every other run; that says nothing
    /// about the image, so only that failure is retried.
    /// </summary>
    public static void CreateWithLuksHeader(params string[] args)
    {
        for (var attempt = 1; ; attempt++)
        {
            var (code, _, stderr) = RequiredTool.Run(RequiredTool.QemuImg, args);
            if (code == 0)
            {
                return;
            }
            if (attempt == 20 || !stderr.Contains("Unable to get accurate CPU usage", StringComparison.Ordinal))
            {
                throw new InvalidOperationException($"qemu-img {string.Join(' ', args)} exited {code} (attempt {attempt}): {stderr}");
            }
        }
    }

    public static void AssertMatchesQemuImgInfo(string path, ImageHeader header)
    {
        var json = RunQemuImg("info", "--output=json", path);
        using var document = JsonDocument.Parse(json);
        var info = document.RootElement;
        var data = info.GetProperty("format-specific").GetProperty("data");

        Assert.Equal(ImageKind.Qcow2, header.Kind);
        Assert.Equal("qcow2", info.GetProperty("format").GetString());
        Assert.Equal(new FileInfo(path).Length, header.FileLength);
        var qcow2 = Assert.IsType<Qcow2Header>(header.Qcow2);
        Assert.Equal(info.GetProperty("virtual-size").GetUInt64(), qcow2.VirtualSize);
        Assert.Equal(info.GetProperty("cluster-size").GetInt64(), qcow2.ClusterSize);
        Assert.Equal(StringOrNull(info, "backing-filename"), qcow2.BackingFile);
        Assert.Equal(StringOrNull(info, "backing-filename-format"), qcow2.BackingFormat);
        Assert.Equal(data.GetProperty("compat").GetString() switch { "0.10" => 2u, "1.1" => 3u, var c => throw new InvalidOperationException(c) }, qcow2.Version);
        Assert.Equal(info.GetProperty("dirty-flag").GetBoolean(), qcow2.IsDirty);
        Assert.Equal(data.TryGetProperty("corrupt", out var corrupt) && corrupt.GetBoolean(), qcow2.IsCorrupt);
        var cryptMethod = data.TryGetProperty("encrypt", out var encrypt)
            ? encrypt.GetProperty("format").GetString() switch { "aes" => 1u, "luks" => 2u, var f => throw new InvalidOperationException(f) }
            : 0u;
        Assert.Equal(cryptMethod, qcow2.CryptMethod);
        Assert.Equal(data.TryGetProperty("data-file", out _), qcow2.HasExternalDataFile);
    }

    private static string? StringOrNull(JsonElement element, string name) =>
        element.TryGetProperty(name, out var value) ? value.GetString() : null;

    public static void PatchUInt32(string path, long offset, uint value)
    {
        var bytes = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(bytes, value);
        Patch(path, offset, bytes);
    }

    public static void PatchUInt64(string path, long offset, ulong value)
    {
        var bytes = new byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(bytes, value);
        Patch(path, offset, bytes);
    }

    public static void Patch(string path, long offset, byte[] bytes)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Write);
        stream.Position = offset;
        stream.Write(bytes);
    }

    public static byte[] ReadPrefix(string path, int length)
    {
        using var stream = File.OpenRead(path);
        var buffer = new byte[Math.Min(length, stream.Length)];
        stream.ReadExactly(buffer);
        return buffer;
    }

    /// <summary>
    /// A qcow2 header written by hand, the way someone crafting a hostile file would: the fixed fields,
    /// then the given extensions (each padded to 8 bytes) and an end marker, then the backing file name
    /// at <paramref name="backingOffset"/> (default: right after the extensions). The rest of the file is
    /// zeros up to <paramref name="fileLength"/>.
    /// </summary>
    public static byte[] HandWritten(
        uint version = 3,
        uint clusterBits = 16,
        ulong virtualSize = 1 << 20,
        byte[]? backingFile = null,
        long? backingOffset = null,
        uint cryptMethod = 0,
        ulong incompatibleFeatures = 0,
        uint headerLength = 104,
        IReadOnlyList<(uint Type, byte[] Data)>? extensions = null,
        int fileLength = 4096)
    {
        var bytes = new List<byte>(new byte[version == 2 ? 72 : (int)headerLength]);
        foreach (var (type, data) in extensions ?? [])
        {
            AppendExtension(bytes, type, data);
        }
        AppendExtension(bytes, 0, []);
        var nameOffset = backingOffset ?? bytes.Count;

        var file = new byte[Math.Max(fileLength, (int)Math.Max(bytes.Count, backingFile is null ? 0 : nameOffset + backingFile.Length))];
        bytes.CopyTo(file);
        var header = file.AsSpan();
        header[0] = (byte)'Q';
        header[1] = (byte)'F';
        header[2] = (byte)'I';
        header[3] = 0xFB;
        BinaryPrimitives.WriteUInt32BigEndian(header[4..], version);
        if (backingFile is not null)
        {
            BinaryPrimitives.WriteUInt64BigEndian(header[8..], (ulong)nameOffset);
            BinaryPrimitives.WriteUInt32BigEndian(header[16..], (uint)backingFile.Length);
            backingFile.CopyTo(header[(int)nameOffset..]);
        }
        BinaryPrimitives.WriteUInt32BigEndian(header[20..], clusterBits);
        BinaryPrimitives.WriteUInt64BigEndian(header[24..], virtualSize);
        BinaryPrimitives.WriteUInt32BigEndian(header[32..], cryptMethod);
        if (version == 3)
        {
            BinaryPrimitives.WriteUInt64BigEndian(header[72..], incompatibleFeatures);
            BinaryPrimitives.WriteUInt32BigEndian(header[96..], 4);
            BinaryPrimitives.WriteUInt32BigEndian(header[100..], headerLength);
        }
        return file;
    }

    public static byte[] Utf8(string s) => Encoding.UTF8.GetBytes(s);

    private static void AppendExtension(List<byte> bytes, uint type, byte[] data)
    {
        var head = new byte[8];
        BinaryPrimitives.WriteUInt32BigEndian(head, type);
        BinaryPrimitives.WriteUInt32BigEndian(head.AsSpan(4), (uint)data.Length);
        bytes.AddRange(head);
        bytes.AddRange(data);
        bytes.AddRange(new byte[(8 - (data.Length % 8)) % 8]);
    }
}
