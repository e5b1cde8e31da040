using System.Collections.Immutable;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Win32.SafeHandles;
using NfsVolumeWorker.Storage.Durability;
using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Storage.Layout;

namespace NfsVolumeWorker.Storage.Info;

/// <summary>
/// Reads and writes Cinder's <c>.info</c> file. Writes are byte-identical to Python's
/// <c>json.dump(info, f, indent=1, sort_keys=True)</c> and atomic (temp file, fsync, rename, fsync dir).
/// </summary>
public static class InfoFile
{
    /// <summary>The largest info file read. A real one is well under 100 KiB even with hundreds of
    /// snapshots; anything bigger is not an info file, and reading it whole would be a memory hazard.</summary>
    public const int MaxSizeBytes = 1024 * 1024;

    private const string ActiveKey = "active";

    private const int ENOENT = 2;
    private const int ELOOP = 40;

    // Strict: invalid UTF-8 is corruption, not something to paper over with U+FFFD.
    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>Reads <paramref name="path"/>; null when the file does not exist. Throws
    /// <see cref="StorageErrorCode.InfoFileCorrupt"/> for an empty, truncated or malformed file and
    /// <see cref="StorageErrorCode.UnsafePath"/> when the path is a symbolic link.</summary>
    public static VolumeInfo? Read(string path)
    {
        DurableFile.EnsureNotSymlink(path);
        if (Directory.Exists(path))
        {
            throw Corrupt(path, "is a directory, not a file");
        }

        var bytes = ReadCapped(path);
        if (bytes is null)
        {
            return null;
        }
        if (bytes.Length > MaxSizeBytes)
        {
            throw Corrupt(path, $"is larger than {MaxSizeBytes} bytes");
        }

        string text;
        try
        {
            text = StrictUtf8.GetString(bytes);
        }
        catch (DecoderFallbackException e)
        {
            throw Corrupt(path, "is not valid UTF-8", e);
        }
        return Parse(text, path);
    }

    /// <summary>Parses the text of an info file (structure only: an object with a string <c>active</c>
    /// and UUID keys with string values).</summary>
    public static VolumeInfo Parse(string json, string pathForErrors)
    {
        ArgumentNullException.ThrowIfNull(json);
        if (string.IsNullOrWhiteSpace(json))
        {
            throw Corrupt(pathForErrors, "is empty");
        }

        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(json);
        }
        catch (JsonException e)
        {
            throw Corrupt(pathForErrors, $"is not valid JSON ({e.Message})", e);
        }

        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                throw Corrupt(pathForErrors, $"holds a JSON {Describe(root.ValueKind)}, not an object");
            }

            try
            {
                return Read(root, pathForErrors);
            }
            catch (InvalidOperationException e)
            {
                // JsonDocument checks structure, not text: an escaped half surrogate pair ("\ud800") fails only when read.
                throw Corrupt(pathForErrors, "holds a string that is not valid Unicode text", e);
            }
        }
    }

    private static VolumeInfo Read(JsonElement root, string pathForErrors)
    {
        string? active = null;
        var snapshots = ImmutableDictionary.CreateBuilder<Guid, string>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var property in root.EnumerateObject())
        {
            // Python keeps the last of duplicate keys; a file that says two things is not trusted.
            if (!seen.Add(property.Name))
            {
                throw Corrupt(pathForErrors, $"has the key '{Printable(property.Name)}' more than once");
            }
            if (property.Value.ValueKind != JsonValueKind.String)
            {
                throw Corrupt(pathForErrors,
                    $"has a {Describe(property.Value.ValueKind)} for '{Printable(property.Name)}' where a file name string belongs");
            }
            var value = property.Value.GetString()!;
            if (property.Name == ActiveKey)
            {
                active = value;
            }
            else if (TryParseCanonicalId(property.Name, out var snapshotId))
            {
                snapshots.Add(snapshotId, value);
            }
            else
            {
                throw Corrupt(pathForErrors,
                    $"has the key '{Printable(property.Name)}', which is neither 'active' nor a lower-case snapshot UUID");
            }
        }

        if (active is null)
        {
            throw Corrupt(pathForErrors, "has no 'active' entry");
        }
        return new VolumeInfo(active, snapshots.ToImmutable());
    }

    /// <summary>The exact text Python's json.dump would write for this info.</summary>
    public static string Serialize(VolumeInfo info)
    {
        ArgumentNullException.ThrowIfNull(info);
        var obj = new JsonObject { [ActiveKey] = info.Active };
        foreach (var (snapshotId, overlay) in info.Snapshots)
        {
            obj[VolumeFileNames.Format(snapshotId)] = overlay;
        }
        return PythonJson.Serialize(obj);
    }

    /// <summary>Writes atomically and durably, with <paramref name="mode"/> permissions.</summary>
    public static void Write(string path, VolumeInfo info, UnixFileMode mode)
    {
        // Rename would replace a link rather than follow it, but a link here means someone else
        // arranged the directory; refuse instead of silently swapping it for a plain file.
        DurableFile.EnsureNotSymlink(path);
        var bytes = StrictUtf8.GetBytes(Serialize(info));
        // Every writer holds the volume lock: a write killed before its rename leaves the temp the next one replaces.
        DurableFile.WriteAtomically(path, bytes, mode, soleWriter: true);
    }

    /// <summary>Reads at most <see cref="MaxSizeBytes"/> + 1 bytes, so an oversized file is detected
    /// without being read whole; null when the file does not exist.</summary>
    private static byte[]? ReadCapped(string path)
    {
        // O_NOFOLLOW closes the gap between EnsureNotSymlink and the open: a link swapped in meanwhile fails.
        var fd = NativeMethods.Open(path, NativeMethods.O_RDONLY | NativeMethods.O_NOFOLLOW | NativeMethods.O_CLOEXEC, 0);
        if (fd < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            return errno switch
            {
                ENOENT => null,
                ELOOP => throw new StorageException(StorageErrorCode.UnsafePath,
                    $"{path} is a symbolic link; the engine only works on plain files it created."),
                _ => throw DurableFile.IoError($"open of {path}", errno),
            };
        }

        using var stream = new FileStream(new SafeFileHandle(fd, ownsHandle: true), FileAccess.Read, bufferSize: 0);
        using var content = new MemoryStream();
        var chunk = new byte[64 * 1024];
        int read;
        while (content.Length <= MaxSizeBytes && (read = stream.Read(chunk, 0, chunk.Length)) > 0)
        {
            content.Write(chunk, 0, read);
        }
        return content.ToArray();
    }

    // Cinder writes ids with str(uuid): lower case, hyphenated. Anything else is not its file.
    private static bool TryParseCanonicalId(string key, out Guid id) =>
        Guid.TryParseExact(key, "D", out id) && string.Equals(VolumeFileNames.Format(id), key, StringComparison.Ordinal);

    private static string Describe(JsonValueKind kind) => kind switch
    {
        JsonValueKind.Object => "object",
        JsonValueKind.Array => "array",
        JsonValueKind.String => "string",
        JsonValueKind.Number => "number",
        JsonValueKind.True or JsonValueKind.False => "boolean",
        JsonValueKind.Null => "null",
        _ => kind.ToString(),
    };

    private static string Printable(string value) => value.Length > 80 ? string.Concat(value.AsSpan(0, 80), "...") : value;

    private static StorageException Corrupt(string path, string what, Exception? inner = null) =>
        new(StorageErrorCode.InfoFileCorrupt, $"The info file {path} {what}.", inner);
}
