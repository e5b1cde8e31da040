using System.Globalization;
using System.Text.Json.Nodes;
using NfsVolumeWorker.Storage.Diagnostics;

namespace NfsVolumeWorker.Cli;

/// <summary>A copy's or merge's progress in words: <c>copy 37% 1.5 GiB / 4 GiB, 12 s left</c> (the bytes and the
/// time left only when known).</summary>
public static class ProgressText
{
    public static string Format(string phase, double fraction, long? bytesDone, long? bytesTotal, double? secondsLeft) =>
        string.Create(CultureInfo.InvariantCulture, $"{phase} {(int)(Math.Clamp(fraction, 0, 1) * 100)}%") + Figures(bytesDone, bytesTotal, secondsLeft, " ");

    /// <summary>The bytes and time left alone (for a progress bar, which shows the percentage itself), with
    /// <paramref name="separator"/> before them; empty when neither is known.</summary>
    public static string Figures(long? bytesDone, long? bytesTotal, double? secondsLeft, string separator)
    {
        var parts = new List<string>();
        if (bytesDone is { } done && bytesTotal is { } total)
        {
            parts.Add($"{ByteSize.Format(done)} / {ByteSize.Format(total)}");
        }
        if (secondsLeft is { } left && double.IsFinite(left) && left >= 0)
        {
            parts.Add(TimeLeft(TimeSpan.FromSeconds(left)));
        }
        return parts.Count == 0 ? "" : separator + string.Join(", ", parts);
    }

    public static string TimeLeft(TimeSpan left)
    {
        if (left.TotalSeconds < 60)
        {
            return string.Create(CultureInfo.InvariantCulture, $"{Math.Ceiling(left.TotalSeconds):0} s left");
        }
        return left.TotalHours < 1
            ? string.Create(CultureInfo.InvariantCulture, $"{(int)left.TotalMinutes} min {left.Seconds} s left")
            : string.Create(CultureInfo.InvariantCulture, $"{(int)left.TotalHours} h {left.Minutes} min left");
    }

    /// <summary>From an <c>OperationProgressed</c> event as received (fields absent in older workers' events).</summary>
    public static string Of(JsonObject message)
    {
        ArgumentNullException.ThrowIfNull(message);
        return Format(message["phase"]?.GetValue<string>() ?? "progress", Number(message["fraction"]) ?? 0,
            (long?)Number(message["bytesDone"]), (long?)Number(message["bytesTotal"]), Number(message["secondsLeft"]));
    }

    internal static double? Number(JsonNode? node) => node is JsonValue v && v.TryGetValue<double>(out var d) ? d : null;
}
