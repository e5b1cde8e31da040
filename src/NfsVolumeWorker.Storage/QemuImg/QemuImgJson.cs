using System.Text.Json;

namespace NfsVolumeWorker.Storage.QemuImg;

/// <summary>Reads qemu-img's <c>--output=json</c>. Throws <see cref="JsonException"/> or
/// <see cref="FormatException"/> on anything unexpected; the runner wraps those.</summary>
internal static class QemuImgJson
{
    private static readonly JsonDocumentOptions DocumentOptions = new() { MaxDepth = 64 };

    public static ImageInfo ParseInfo(string json)
    {
        using var document = JsonDocument.Parse(json, DocumentOptions);
        return ReadInfo(document.RootElement);
    }

    public static IReadOnlyList<ImageInfo> ParseInfoChain(string json)
    {
        using var document = JsonDocument.Parse(json, DocumentOptions);
        if (document.RootElement.ValueKind != JsonValueKind.Array)
        {
            throw new FormatException("expected a JSON array from --backing-chain");
        }
        var chain = new List<ImageInfo>(document.RootElement.GetArrayLength());
        foreach (var element in document.RootElement.EnumerateArray())
        {
            chain.Add(ReadInfo(element));
        }
        if (chain.Count == 0)
        {
            throw new FormatException("empty backing chain");
        }
        return chain;
    }

    /// <summary>The extents of <c>qemu-img map --output=json</c>, in order.</summary>
    public static IReadOnlyList<MapExtent> ParseMap(string json)
    {
        using var document = JsonDocument.Parse(json, DocumentOptions);
        if (document.RootElement.ValueKind != JsonValueKind.Array)
        {
            throw new FormatException("expected a JSON array from map");
        }
        var extents = new List<MapExtent>(document.RootElement.GetArrayLength());
        foreach (var e in document.RootElement.EnumerateArray())
        {
            extents.Add(new MapExtent(
                e.GetProperty("start").GetInt64(), e.GetProperty("length").GetInt64(), e.GetProperty("depth").GetInt32(),
                e.GetProperty("present").GetBoolean(), e.GetProperty("zero").GetBoolean(), e.GetProperty("data").GetBoolean(),
                e.TryGetProperty("offset", out var offset) ? offset.GetInt64() : null));
        }
        return extents;
    }

    /// <summary>Counts of a completed check; qemu-img omits the ones that are zero.</summary>
    public static CheckResult ParseCheck(string json, int exitCode)
    {
        using var document = JsonDocument.Parse(json, DocumentOptions);
        var root = document.RootElement;
        if (root.ValueKind != JsonValueKind.Object)
        {
            throw new FormatException("expected a JSON object from check");
        }
        return new CheckResult(
            exitCode,
            Corruptions: OptionalInt64(root, "corruptions") ?? 0,
            Leaks: OptionalInt64(root, "leaks") ?? 0,
            CheckErrors: OptionalInt64(root, "check-errors") ?? 0);
    }

    private static ImageInfo ReadInfo(JsonElement e)
    {
        if (e.ValueKind != JsonValueKind.Object)
        {
            throw new FormatException("expected a JSON object per image");
        }
        bool? corrupt = null;
        if (e.TryGetProperty("format-specific", out var specific)
            && specific.ValueKind == JsonValueKind.Object
            && specific.TryGetProperty("data", out var data)
            && data.ValueKind == JsonValueKind.Object)
        {
            corrupt = OptionalBoolean(data, "corrupt");
        }
        return new ImageInfo(
            Filename: RequiredString(e, "filename"),
            Format: RequiredString(e, "format"),
            VirtualSize: OptionalInt64(e, "virtual-size") ?? throw new FormatException("missing \"virtual-size\""),
            ActualSize: OptionalInt64(e, "actual-size"),
            BackingFilename: OptionalString(e, "backing-filename"),
            FullBackingFilename: OptionalString(e, "full-backing-filename"),
            BackingFormat: OptionalString(e, "backing-filename-format"),
            ClusterSize: OptionalInt64(e, "cluster-size"),
            DirtyFlag: OptionalBoolean(e, "dirty-flag"),
            Corrupt: corrupt);
    }

    private static string RequiredString(JsonElement e, string name) =>
        OptionalString(e, name) ?? throw new FormatException($"missing \"{name}\"");

    private static string? OptionalString(JsonElement e, string name) =>
        e.TryGetProperty(name, out var p) && p.ValueKind != JsonValueKind.Null ? p.GetString() : null;

    private static long? OptionalInt64(JsonElement e, string name) =>
        e.TryGetProperty(name, out var p) && p.ValueKind != JsonValueKind.Null ? p.GetInt64() : null;

    private static bool? OptionalBoolean(JsonElement e, string name) =>
        e.TryGetProperty(name, out var p) && p.ValueKind != JsonValueKind.Null ? p.GetBoolean() : null;
}
