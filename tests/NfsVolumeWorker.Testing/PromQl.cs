using System.Text.Json;
using System.Text.RegularExpressions;

namespace NfsVolumeWorker.Testing;

/// <summary>The PromQL of the operator files (the Grafana dashboard's panel targets, the alert rules' <c>expr</c>)
/// and the metric names inside it.</summary>
public static partial class PromQl
{
    private static readonly HashSet<string> Keywords = new(StringComparer.Ordinal)
    {
        "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
        "inf", "nan", "Inf", "NaN", "atan2",
    };

    public static string DashboardPath => Path.Combine(RepositoryRoot.Find(), "ops", "grafana", "nfsvolumeworker.json");

    public static string AlertsPath => Path.Combine(RepositoryRoot.Find(), "ops", "prometheus", "alerts.yml");

    /// <summary>Every <c>targets[].expr</c> of every panel (rows' nested panels included), with the panel's title.</summary>
    public static List<(string Where, string Expr)> DashboardExpressions(string path)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(path));
        var found = new List<(string, string)>();
        void Visit(JsonElement panels)
        {
            foreach (var panel in panels.EnumerateArray())
            {
                var title = panel.TryGetProperty("title", out var t) ? t.GetString() : "?";
                if (panel.TryGetProperty("targets", out var targets))
                {
                    foreach (var target in targets.EnumerateArray())
                    {
                        if (target.TryGetProperty("expr", out var expr))
                        {
                            found.Add(($"panel '{title}'", expr.GetString()!));
                        }
                    }
                }
                if (panel.TryGetProperty("panels", out var nested))
                {
                    Visit(nested);
                }
            }
        }
        Visit(doc.RootElement.GetProperty("panels"));
        return found;
    }

    /// <summary>Every rule's <c>expr</c> (one line, or a <c>|</c> / <c>&gt;</c> block) with the alert's name.</summary>
    public static List<(string Where, string Expr)> AlertExpressions(string path)
    {
        var lines = File.ReadAllLines(path);
        var found = new List<(string, string)>();
        var alert = "?";
        for (var i = 0; i < lines.Length; i++)
        {
            if (AlertLine().Match(lines[i]) is { Success: true } a)
            {
                alert = a.Groups[1].Value;
            }
            var m = ExprLine().Match(lines[i]);
            if (!m.Success)
            {
                continue;
            }
            var value = m.Groups[2].Value.Trim();
            if (value is "|" or ">" or "|-" or ">-")
            {
                var indent = m.Groups[1].Value.Length;
                var block = new List<string>();
                while (i + 1 < lines.Length && (lines[i + 1].Trim().Length == 0 || lines[i + 1].Length - lines[i + 1].TrimStart().Length > indent))
                {
                    block.Add(lines[++i].Trim());
                }
                value = string.Join(" ", block);
            }
            found.Add(($"alert {alert}", value.Trim('\'', '"')));
        }
        return found;
    }

    /// <summary>The metric (series) names an expression selects: identifiers that are not functions, keywords,
    /// label names (inside <c>{}</c> or <c>by (...)</c>), strings, durations or Grafana variables.</summary>
    public static SortedSet<string> MetricNames(string expr)
    {
        var s = Strings().Replace(expr, "\"\"");
        s = Matchers().Replace(s, "");
        s = Ranges().Replace(s, "");
        s = Grouping().Replace(s, " ");
        s = Variables().Replace(s, " ");
        var names = new SortedSet<string>(StringComparer.Ordinal);
        foreach (Match m in Identifier().Matches(s))
        {
            var rest = s.AsSpan(m.Index + m.Length).TrimStart();
            var glued = m.Index > 0 && (char.IsLetterOrDigit(s[m.Index - 1]) || s[m.Index - 1] == '.'); // 1e3, 0.5
            if (glued || rest.StartsWith("(") || Keywords.Contains(m.Value))
            {
                continue;
            }
            names.Add(m.Value);
        }
        return names;
    }

    /// <summary>The series names a Prometheus text exposition holds (HELP/TYPE lines are not series).</summary>
    public static SortedSet<string> ScrapedNames(string exposition) =>
        new(exposition.Split('\n').Where(l => l.Length > 0 && l[0] != '#').Select(l => SeriesName().Match(l).Value).Where(n => n.Length > 0), StringComparer.Ordinal);

    [GeneratedRegex(@"^\s*-\s*alert:\s*(\S+)")]
    private static partial Regex AlertLine();

    [GeneratedRegex(@"^(\s*)expr:\s*(.*)$")]
    private static partial Regex ExprLine();

    [GeneratedRegex("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'")]
    private static partial Regex Strings();

    [GeneratedRegex(@"\{[^}]*\}")]
    private static partial Regex Matchers();

    [GeneratedRegex(@"\[[^\]]*\]")]
    private static partial Regex Ranges();

    [GeneratedRegex(@"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")]
    private static partial Regex Grouping();

    [GeneratedRegex(@"\$\{?\w+\}?")]
    private static partial Regex Variables();

    [GeneratedRegex(@"[A-Za-z_:][A-Za-z0-9_:]*")]
    private static partial Regex Identifier();

    [GeneratedRegex(@"^[A-Za-z_:][A-Za-z0-9_:]*")]
    private static partial Regex SeriesName();
}
