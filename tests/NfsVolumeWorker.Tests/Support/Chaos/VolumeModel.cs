using System.Globalization;
using System.Text;
using System.Text.Json;

namespace NfsVolumeWorker.Tests.Support.Chaos;

/// <summary>What an image must read back: a pattern byte per region of <see cref="Region"/> bytes (0 = never
/// written, reads zeros). Its length is the image's virtual size in regions.</summary>
internal sealed record ImageData(byte[] Regions)
{
    public const long Region = 256 * 1024;

    public long SizeBytes => Regions.Length * Region;

    public static ImageData Zeros(long sizeBytes) => new(new byte[sizeBytes / Region]);

    /// <summary>This data in an image of <paramref name="sizeBytes"/>: cut or padded with zeros (a grown image reads zeros past its old end).</summary>
    public ImageData Resized(long sizeBytes)
    {
        var regions = new byte[sizeBytes / Region];
        Array.Copy(Regions, regions, Math.Min(Regions.Length, regions.Length));
        return new ImageData(regions);
    }

    public ImageData With(int region, byte pattern)
    {
        var regions = (byte[])Regions.Clone();
        regions[region] = pattern;
        return new ImageData(regions);
    }

    public override string ToString() => $"{SizeBytes / 1024} KiB [{string.Join(",", Regions.Select(r => r.ToString("x2", CultureInfo.InvariantCulture)))}]";
}

/// <summary>The model of one volume: its active data and its snapshots' data, oldest first (the newest is the
/// one a revert goes back to). A clone is a volume with no snapshots.</summary>
internal sealed class VolumeModel(Guid id, ImageData active)
{
    public Guid Id { get; } = id;

    public ImageData Active { get; set; } = active;

    public List<(Guid Id, ImageData Data)> Snapshots { get; } = [];

    public ImageData SnapshotData(Guid snapshot) => Snapshots.Single(s => s.Id == snapshot).Data;
}

/// <summary>Reads a volume back from the share and compares it with its model, with the real qemu tools:
/// the .info file names the active image and every snapshot's overlay; the data of snapshot S is the backing
/// file of info[S] (Cinder's layout). Every region is read with <c>qemu-io read -P</c> (read-only, -U).</summary>
internal static class ModelCheck
{
    /// <summary>Problems found (empty when the volume holds exactly what the model says).</summary>
    public static async Task<string> VerifyAsync(string share, VolumeModel model)
    {
        var problems = new StringBuilder();
        var infoPath = Path.Combine(share, $"volume-{model.Id}.info");
        var activeName = $"volume-{model.Id}";
        var recorded = new Dictionary<Guid, string>();
        if (File.Exists(infoPath))
        {
            using var info = JsonDocument.Parse(await File.ReadAllBytesAsync(infoPath));
            foreach (var p in info.RootElement.EnumerateObject())
            {
                if (p.Name == "active")
                {
                    activeName = p.Value.GetString()!;
                }
                else
                {
                    recorded[Guid.Parse(p.Name)] = p.Value.GetString()!;
                }
            }
        }
        var expected = model.Snapshots.Select(s => s.Id).Order().ToList();
        if (!recorded.Keys.Order().SequenceEqual(expected))
        {
            problems.AppendLine(CultureInfo.InvariantCulture, $"volume {model.Id}: snapshots recorded [{string.Join(", ", recorded.Keys.Order())}], model has [{string.Join(", ", expected)}]");
        }
        var activePath = Path.Combine(share, activeName);
        if (!File.Exists(activePath))
        {
            problems.AppendLine(CultureInfo.InvariantCulture, $"volume {model.Id}: active image {activeName} is missing");
            return problems.ToString();
        }
        problems.Append(await CompareAsync(activePath, Tools.FormatOf(activePath), model.Active, $"volume {model.Id} active ({activeName})"));
        foreach (var (snapshot, data) in model.Snapshots)
        {
            if (!recorded.TryGetValue(snapshot, out var overlay))
            {
                continue;
            }
            using var header = JsonDocument.Parse(await Tools.MustAsync("qemu-img", "info", "-U", "--output=json", "-f", "qcow2", Path.Combine(share, overlay)));
            if (!header.RootElement.TryGetProperty("backing-filename", out var backing))
            {
                problems.AppendLine(CultureInfo.InvariantCulture, $"volume {model.Id} snapshot {snapshot}: overlay {overlay} has no backing file");
                continue;
            }
            var backingPath = Path.Combine(share, backing.GetString()!);
            var format = header.RootElement.TryGetProperty("backing-filename-format", out var f) ? f.GetString()! : Tools.FormatOf(backingPath);
            problems.Append(await CompareAsync(backingPath, format, data, $"volume {model.Id} snapshot {snapshot} ({Path.GetFileName(backingPath)})"));
        }
        return problems.ToString();
    }

    /// <summary>Problems if any file of the volume (image, .info, hidden temp file) is still on the share.</summary>
    public static string VerifyGone(string share, Guid volume)
    {
        var left = Directory.EnumerateFiles(share, $"*volume-{volume}*").Select(Path.GetFileName).ToList();
        return left.Count == 0 ? "" : $"volume {volume} was deleted but {string.Join(", ", left)} remain{Environment.NewLine}";
    }

    private static async Task<string> CompareAsync(string image, string format, ImageData data, string what)
    {
        using var info = JsonDocument.Parse(await Tools.MustAsync("qemu-img", "info", "-U", "--output=json", "-f", format, image));
        var size = info.RootElement.GetProperty("virtual-size").GetInt64();
        if (size != data.SizeBytes)
        {
            return $"{what}: virtual size {size}, model {data.SizeBytes}{Environment.NewLine}";
        }
        var args = new List<string> { "-r", "-U", "-f", format };
        for (var r = 0; r < data.Regions.Length; r++)
        {
            args.AddRange(["-c", $"read -P 0x{data.Regions[r]:x2} {r * ImageData.Region} {ImageData.Region}"]);
        }
        args.Add(image);
        var (code, stdout, stderr) = await Tools.RunAsync("qemu-io", [.. args]);
        var text = stdout + stderr;
        if (code != 0 || text.Contains("Pattern verification failed", StringComparison.Ordinal) || text.Contains("qemu-io:", StringComparison.Ordinal))
        {
            var first = text.Split('\n').Where(l => l.Contains("failed", StringComparison.OrdinalIgnoreCase) || l.Contains("qemu-io:", StringComparison.Ordinal)).Take(3);
            return $"{what}: does not read back the model {data} (qemu-io exit {code}): {string.Join(" | ", first)}{Environment.NewLine}";
        }
        return "";
    }
}
