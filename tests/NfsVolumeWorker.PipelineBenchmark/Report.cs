using System.Globalization;

namespace NfsVolumeWorker.PipelineBenchmark;

/// <summary>One measured figure on one share: the value, the floor it is compared with, their ratio, and whether the
/// target holds (null: no target, or not measured).</summary>
internal sealed record Cell(string Value, string Floor = "", string Ratio = "", bool? Met = null);

/// <summary>The side-by-side table: one row per figure, one group of columns per share.</summary>
internal sealed class Report
{
    private readonly List<(string Key, string Label, string Target)> _rows = [];
    private readonly Dictionary<(string Row, string Share), Cell> _cells = [];
    private readonly List<string> _shares = [];
    private readonly List<string> _notes = [];

    /// <summary>Defines a row, or renames it (a figure names its measured size once it knows it).</summary>
    public void Row(string key, string label, string target = "")
    {
        var at = _rows.FindIndex(r => r.Key == key);
        if (at < 0)
        {
            _rows.Add((key, label, target));
        }
        else
        {
            _rows[at] = (key, label, target);
        }
    }

    public void Set(string row, string share, Cell cell)
    {
        if (!_shares.Contains(share))
        {
            _shares.Add(share);
        }
        _cells[(row, share)] = cell;
        Console.Error.WriteLine($"[{share}] {_rows.FirstOrDefault(r => r.Key == row).Label ?? row}: {cell.Value}" +
            (cell.Floor.Length > 0 ? $" ({cell.Floor}{(cell.Ratio.Length > 0 ? ", " + cell.Ratio : "")})" : "") + (cell.Met is { } m ? (m ? " met" : " NOT met") : ""));
    }

    /// <summary>Marks every row of a figure that has no value on this share as failed with <paramref name="reason"/>.</summary>
    public void Fail(string figure, string share, string reason)
    {
        if (!_shares.Contains(share))
        {
            _shares.Add(share);
        }
        foreach (var (key, _, _) in _rows.Where(r => r.Key.StartsWith(figure + ".", StringComparison.Ordinal)))
        {
            _cells.TryAdd((key, share), new Cell("error"));
        }
        Note($"[{share}] figure {figure} failed: {reason}");
    }

    /// <summary>True when a figure failed (its worker logs are kept).</summary>
    public bool HasFailures => _cells.Values.Any(c => c.Value == "error");

    public void Note(string line)
    {
        _notes.Add(line);
        Console.Error.WriteLine(line);
    }

    public void Print(TextWriter output)
    {
        const int label = 50, target = 16, value = 11, floor = 11, ratio = 8, met = 4;
        var group = value + floor + ratio + met + 3;
        output.WriteLine();
        output.WriteLine("== figures (met?: the target on that share; the targets are set for the local directory) ==");
        output.Write("figure".PadRight(label) + "target".PadRight(target));
        foreach (var share in _shares)
        {
            output.Write(" | " + share.PadRight(group));
        }
        output.WriteLine();
        output.Write("".PadRight(label + target));
        foreach (var _ in _shares)
        {
            output.Write(" | " + "value".PadRight(value) + " " + "floor".PadRight(floor) + " " + "ratio".PadRight(ratio) + " " + "met?".PadRight(met));
        }
        output.WriteLine();
        foreach (var (key, text, goal) in _rows)
        {
            if (!_shares.Any(s => _cells.ContainsKey((key, s))))
            {
                continue;
            }
            output.Write(text.PadRight(label) + goal.PadRight(target));
            foreach (var share in _shares)
            {
                var c = _cells.GetValueOrDefault((key, share)) ?? new Cell("-");
                var m = c.Met switch { true => "yes", false => "NO", null => "" };
                output.Write(" | " + c.Value.PadRight(value) + " " + c.Floor.PadRight(floor) + " " + c.Ratio.PadRight(ratio) + " " + m.PadRight(met));
            }
            output.WriteLine();
        }
        if (_notes.Count > 0)
        {
            output.WriteLine();
            output.WriteLine("== notes ==");
            foreach (var n in _notes)
            {
                output.WriteLine(n);
            }
        }
    }

    public static string Ms(TimeSpan t) => t.TotalMilliseconds.ToString(t.TotalMilliseconds < 10 ? "F2" : "F1", CultureInfo.InvariantCulture) + " ms";

    public static string Times(double ratio) => double.IsFinite(ratio) ? ratio.ToString("F2", CultureInfo.InvariantCulture) + "x" : "-";

    public static string Number(double x, string format = "F1") => x.ToString(format, CultureInfo.InvariantCulture);
}
