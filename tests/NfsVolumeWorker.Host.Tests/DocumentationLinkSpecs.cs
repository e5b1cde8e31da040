using System.Text.RegularExpressions;
using NfsVolumeWorker.Testing;

namespace NfsVolumeWorker.Host.Tests;

/// <summary>Every relative link of the README, docs/ and the runbooks leads somewhere: the file exists and a
/// <c>#fragment</c> names a heading of it (GitHub's slugs). The README is short and points into docs/ a lot, so a
/// moved section or a renamed file shows here, not in a newcomer's browser.</summary>
public sealed partial class DocumentationLinkSpecs
{
    private static readonly string Root = RepositoryRoot.Find();

    public static IEnumerable<object[]> Documents() =>
        new[] { Path.Combine(Root, "README.md") }
            .Concat(Directory.EnumerateFiles(Path.Combine(Root, "docs"), "*.md"))
            .Concat(Directory.EnumerateFiles(Path.Combine(Root, "ops", "runbooks"), "*.md"))
            .Select(f => new object[] { Path.GetRelativePath(Root, f) });

    [Theory]
    [MemberData(nameof(Documents))]
    public void Every_relative_link_names_a_file_that_exists_and_a_heading_it_has(string document)
    {
        var path = Path.Combine(Root, document);
        var text = Fences().Replace(File.ReadAllText(path), "");
        var broken = new List<string>();
        foreach (Match m in Links().Matches(text))
        {
            var link = m.Groups[1].Value;
            if (Scheme().IsMatch(link))
            {
                continue; // https:, mailto: ...
            }
            var hash = link.IndexOf('#', StringComparison.Ordinal);
            var file = hash < 0 ? link : link[..hash];
            var fragment = hash < 0 ? "" : link[(hash + 1)..];
            var target = file.Length == 0 ? path : Path.GetFullPath(Path.Combine(Path.GetDirectoryName(path)!, Uri.UnescapeDataString(file)));
            if (!File.Exists(target) && !Directory.Exists(target))
            {
                broken.Add($"{link}: no such file");
            }
            else if (fragment.Length > 0 && target.EndsWith(".md", StringComparison.Ordinal) && !Anchors(target).Contains(fragment))
            {
                broken.Add($"{link}: {Path.GetFileName(target)} has no heading #{fragment}");
            }
        }
        Assert.True(broken.Count == 0, $"{document}:\n" + string.Join('\n', broken));
    }

    [Fact]
    public void The_readme_stays_a_five_minute_read()
    {
        var lines = File.ReadAllLines(Path.Combine(Root, "README.md")).Length;
        Assert.True(lines <= 250, $"README.md has {lines} lines; depth belongs in docs/ (see docs/README.md)");
    }

    /// <summary>GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes, repeats numbered.</summary>
    private static HashSet<string> Anchors(string markdown)
    {
        var anchors = new HashSet<string>(StringComparer.Ordinal);
        var seen = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (Match h in Headings().Matches(Fences().Replace(File.ReadAllText(markdown), "")))
        {
            var title = LinkText().Replace(h.Groups[1].Value.Replace("`", "", StringComparison.Ordinal).Trim().ToLowerInvariant(), "$1");
            var slug = NotSlug().Replace(title, "").Replace(' ', '-');
            var n = seen.GetValueOrDefault(slug);
            seen[slug] = n + 1;
            anchors.Add(n == 0 ? slug : $"{slug}-{n}");
        }
        return anchors;
    }

    [GeneratedRegex(@"^```.*?^```", RegexOptions.Multiline | RegexOptions.Singleline)]
    private static partial Regex Fences();

    [GeneratedRegex(@"\]\(([^)\s]+)\)")]
    private static partial Regex Links();

    [GeneratedRegex(@"^[a-z]+:", RegexOptions.IgnoreCase)]
    private static partial Regex Scheme();

    [GeneratedRegex(@"^#{1,6}\s+(.*?)\s*#*\s*$", RegexOptions.Multiline)]
    private static partial Regex Headings();

    [GeneratedRegex(@"\[([^\]]*)\]\([^)]*\)")]
    private static partial Regex LinkText();

    [GeneratedRegex(@"[^\w\- ]")]
    private static partial Regex NotSlug();
}
