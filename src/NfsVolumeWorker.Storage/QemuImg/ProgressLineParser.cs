using System.Globalization;
using System.Text;

namespace NfsVolumeWorker.Storage.QemuImg;

/// <summary>
/// Turns the stdout of <c>qemu-img -p</c> (<c>"    (12.34/100%)\r"</c>, redrawn in place) into a
/// monotonic fraction 0..1. Fed in arbitrary chunks as the pipe delivers them; a record split across
/// two chunks is held until its terminator arrives. Anything else on stdout is ignored.
/// </summary>
internal sealed class ProgressLineParser
{
    // A progress record is ~20 chars; a longer pending fragment is not progress, drop it rather than grow.
    private const int MaxPendingChars = 256;

    private readonly StringBuilder _pending = new();

    /// <summary>The last fraction reported, or -1 before the first.</summary>
    public double LastFraction { get; private set; } = -1;

    /// <summary>Consumes a chunk; calls <paramref name="onProgress"/> for each new, higher fraction.</summary>
    public void Append(ReadOnlySpan<char> chunk, Action<double> onProgress)
    {
        ArgumentNullException.ThrowIfNull(onProgress);
        while (!chunk.IsEmpty)
        {
            var end = chunk.IndexOfAny('\r', '\n');
            if (end < 0)
            {
                if (_pending.Length + chunk.Length <= MaxPendingChars)
                {
                    _pending.Append(chunk);
                }
                else
                {
                    _pending.Clear();
                }
                return;
            }

            if (_pending.Length == 0)
            {
                Emit(chunk[..end], onProgress);
            }
            else
            {
                _pending.Append(chunk[..end]);
                Emit(_pending.ToString(), onProgress);
                _pending.Clear();
            }
            chunk = chunk[(end + 1)..];
        }
    }

    /// <summary>End of stream: a last record without terminator still counts.</summary>
    public void Complete(Action<double> onProgress)
    {
        ArgumentNullException.ThrowIfNull(onProgress);
        if (_pending.Length > 0)
        {
            Emit(_pending.ToString(), onProgress);
            _pending.Clear();
        }
    }

    /// <summary>Parses one record, <c>(12.34/100%)</c> with optional surrounding blanks, into 0.1234.</summary>
    public static bool TryParseLine(ReadOnlySpan<char> line, out double fraction)
    {
        fraction = 0;
        line = line.Trim();
        if (line.Length < 5 || line[0] != '(' || !line.EndsWith("%)", StringComparison.Ordinal))
        {
            return false;
        }
        var body = line[1..^2];
        var slash = body.IndexOf('/');
        if (slash <= 0
            || !double.TryParse(body[..slash], NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var done)
            || !double.TryParse(body[(slash + 1)..], NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var total)
            || total <= 0)
        {
            return false;
        }
        fraction = Math.Clamp(done / total, 0.0, 1.0);
        return true;
    }

    private void Emit(ReadOnlySpan<char> line, Action<double> onProgress)
    {
        // qemu-img redraws the same value many times; callers only want news, never a step back.
        if (TryParseLine(line, out var fraction) && fraction > LastFraction)
        {
            LastFraction = fraction;
            onProgress(fraction);
        }
    }
}
