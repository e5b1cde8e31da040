using System.Globalization;

namespace NfsVolumeWorker.Cli;

/// <summary>Sizes on the command line: plain bytes, or a number with a binary unit (K, M, G, T; optional
/// <c>i</c>/<c>iB</c>/<c>B</c>): <c>10G</c> = <c>10GiB</c> = 10737418240. Cinder sizes are whole GiB.</summary>
public static class SizeParser
{
    public static long Parse(string text, string what)
    {
        var s = text.Trim();
        var end = s.Length;
        while (end > 0 && char.IsAsciiLetter(s[end - 1]))
        {
            end--;
        }
        var unit = s[end..].ToUpperInvariant();
        var number = s[..end];
        var shift = unit switch
        {
            "" or "B" => 0,
            "K" or "KI" or "KIB" or "KB" => 10,
            "M" or "MI" or "MIB" or "MB" => 20,
            "G" or "GI" or "GIB" or "GB" => 30,
            "T" or "TI" or "TIB" or "TB" => 40,
            _ => -1,
        };
        if (shift < 0 || !long.TryParse(number, NumberStyles.None, CultureInfo.InvariantCulture, out var value) || value <= 0)
        {
            throw new CliUsageException($"The {what} must be a positive number of bytes or a number with K, M, G or T (binary units), e.g. 10G; got '{text}'.");
        }
        if (value > long.MaxValue >> shift)
        {
            throw new CliUsageException($"The {what} '{text}' is too large.");
        }
        return value << shift;
    }

    /// <summary>Bytes for people: 10 GiB, 1.5 MiB, 512 B.</summary>
    public static string Format(long bytes) => Storage.Diagnostics.ByteSize.Format(bytes);
}
