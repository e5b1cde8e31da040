using System.Diagnostics;
using System.Globalization;

namespace NfsVolumeWorker.Benchmarks;

/// <summary>The timings of one variant of one scenario.</summary>
internal sealed class Series(string scenario, string variant, string? reference)
{
    private readonly List<double> _seconds = [];

    public string Scenario => scenario;
    public string Variant => variant;

    /// <summary>The variant of the same scenario the ratio column divides by, or null.</summary>
    public string? Reference => reference;

    /// <summary>A free-form note printed after the row (e.g. processes started).</summary>
    public string? Note { get; set; }

    public int Count => _seconds.Count;

    public void Add(double seconds) => _seconds.Add(seconds);

    public double Median
    {
        get
        {
            if (_seconds.Count == 0)
            {
                return double.NaN;
            }
            var sorted = _seconds.Order().ToArray();
            var mid = sorted.Length / 2;
            return sorted.Length % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
        }
    }

    /// <summary>Every timing in the order taken (a median hides whether the slow runs were the first or random).</summary>
    public IReadOnlyList<double> Samples => _seconds;

    public double Min => _seconds.Count == 0 ? double.NaN : _seconds.Min();

    public double Max => _seconds.Count == 0 ? double.NaN : _seconds.Max();
}

/// <summary>Every series of the run, in the order first recorded, and the table they print as.</summary>
internal sealed class Results
{
    private readonly List<Series> _series = [];

    public Series Get(string scenario, string variant, string? reference = null)
    {
        var s = _series.Find(x => x.Scenario == scenario && x.Variant == variant);
        if (s is null)
        {
            s = new Series(scenario, variant, reference);
            _series.Add(s);
        }
        return s;
    }

    public Series? Find(string scenario, string variant) => _series.Find(x => x.Scenario == scenario && x.Variant == variant);

    /// <summary>Median of <paramref name="variant"/> divided by the median of <paramref name="by"/>, same scenario.</summary>
    public double Ratio(string scenario, string variant, string by) =>
        Find(scenario, variant) is { } a && Find(scenario, by) is { } b ? a.Median / b.Median : double.NaN;

    /// <summary>As <see cref="Ratio"/>, of the fastest runs: less sensitive to a noisy neighbour, more to luck.</summary>
    public double RatioOfMin(string scenario, string variant, string by) =>
        Find(scenario, variant) is { } a && Find(scenario, by) is { } b ? a.Min / b.Min : double.NaN;

    /// <summary>Times <paramref name="action"/> and records it.</summary>
    public async Task TimeAsync(string scenario, string variant, string? reference, Func<Task> action)
    {
        var started = Stopwatch.GetTimestamp();
        await action();
        Get(scenario, variant, reference).Add(Stopwatch.GetElapsedTime(started).TotalSeconds);
    }

    public void PrintTable(TextWriter output)
    {
        if (_series.Count == 0)
        {
            output.WriteLine("(no timed scenario ran)");
            return;
        }
        var scenarioWidth = Math.Max(8, _series.Max(s => s.Scenario.Length));
        var variantWidth = Math.Max(7, _series.Max(s => s.Variant.Length));
        output.WriteLine($"{"scenario".PadRight(scenarioWidth)}  {"variant".PadRight(variantWidth)}  {"n",3}  {"median",10}  {"min",10}  {"max",10}  {"ratio",7}  vs");
        output.WriteLine(new string('-', scenarioWidth + variantWidth + 64));
        string? last = null;
        foreach (var s in _series)
        {
            if (last is not null && last != s.Scenario)
            {
                output.WriteLine();
            }
            last = s.Scenario;
            var ratio = s.Reference is { } r && r != s.Variant ? Ratio(s.Scenario, s.Variant, r) : double.NaN;
            var ratioText = double.IsNaN(ratio) ? "" : ratio.ToString("0.00", CultureInfo.InvariantCulture) + "x";
            output.WriteLine($"{s.Scenario.PadRight(scenarioWidth)}  {s.Variant.PadRight(variantWidth)}  {s.Count,3}  {Ms(s.Median),10}  {Ms(s.Min),10}  {Ms(s.Max),10}  {ratioText,7}  {(double.IsNaN(ratio) ? "" : s.Reference)}{(s.Note is null ? "" : "  [" + s.Note + "]")}");
        }
    }

    public static string Ms(double seconds) => double.IsNaN(seconds)
        ? "-"
        : seconds >= 10 ? (seconds).ToString("0.00", CultureInfo.InvariantCulture) + " s" : (seconds * 1000).ToString("0.0", CultureInfo.InvariantCulture) + " ms";
}
