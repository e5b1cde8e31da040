using System.Globalization;

namespace NfsVolumeWorker.Storage.Diagnostics;

/// <summary>Byte counts for people (logs, the status page, nfsvol): binary units, invariant culture.</summary>
public static class ByteSize
{
    private static readonly string[] Units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

    /// <summary><c>512 B</c>, <c>1.5 KiB</c>, <c>16 TiB</c>.</summary>
    public static string Format(long bytes)
    {
        double value = bytes;
        var i = 0;
        while (Math.Abs(value) >= 1024 && i < Units.Length - 1)
        {
            value /= 1024;
            i++;
        }
        return i == 0
            ? string.Create(CultureInfo.InvariantCulture, $"{bytes} B")
            : string.Create(CultureInfo.InvariantCulture, $"{value:0.##} {Units[i]}");
    }
}
