using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Messaging;
using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Testing;

namespace NfsVolumeWorker.Host.Tests;

/// <summary>The storage engine's <see cref="StorageErrorCode"/> (Storage knows nothing of the contracts) and the
/// contract's <see cref="ErrorCodes"/> table cannot drift apart: matched one to one by name, transient alike; the
/// product writes no code as a string of its own; docs/error-codes.md is the table.</summary>
public sealed partial class ErrorCodeTableSpecs
{
    private static readonly string Root = RepositoryRoot.Find();

    private static string DocPath => Path.Combine(Root, "docs", "error-codes.md");

    private const string Begin = "<!-- error-code-table:begin (generated from ErrorCodes; NFSVOL_UPDATE_DOCS=1 and run ErrorCodeTableSpecs to rewrite) -->";
    private const string End = "<!-- error-code-table:end -->";

    [Fact]
    public void Every_StorageErrorCode_has_exactly_one_table_entry_of_the_same_name_and_every_engine_entry_is_a_StorageErrorCode()
    {
        var storage = Enum.GetNames<StorageErrorCode>();
        Assert.NotEmpty(storage);
        foreach (var name in storage)
        {
            Assert.True(ErrorCodes.All.Count(c => c.Name == name) == 1, $"StorageErrorCode.{name} must have exactly one entry in ErrorCodes");
        }
        var engine = ErrorCodes.All.Where(c => c.Source == ErrorCodeSource.Engine).Select(c => c.Name);
        Assert.Equal(storage.Order(StringComparer.Ordinal), engine.Order(StringComparer.Ordinal));
        // The other sources do not reuse an engine name (a second meaning for one wire string).
        Assert.DoesNotContain(ErrorCodes.All.Where(c => c.Source != ErrorCodeSource.Engine), c => storage.Contains(c.Name));
    }

    [Fact]
    public void Each_StorageErrorCode_maps_to_its_entry_and_the_engine_and_the_table_agree_on_what_is_transient()
    {
        foreach (var code in Enum.GetValues<StorageErrorCode>())
        {
            var entry = code.ToErrorCode();
            Assert.Equal(code.ToString(), entry.Name);
            Assert.Same(ErrorCodes.Named(code.ToString()), entry);
            // The worker retries by StorageException.IsTransient and CommandFailed reports the table's flag.
            Assert.True(new StorageException(code, "x").IsTransient == entry.IsTransient, $"{code}: StorageException.IsTransient differs from the table");
        }
        Assert.Contains(ErrorCodes.All, c => c.IsTransient);
        Assert.Contains(ErrorCodes.All, c => !c.IsTransient);
    }

    [Fact]
    public void No_product_source_outside_the_contracts_writes_an_error_code_as_a_string_literal()
    {
        // Cinder's exception class names are Cinder's, not codes (one of them, VolumeNotFound, is spelled like one).
        string[] allowed = [Path.Combine("src", "NfsVolumeWorker.Oslo", "Wire", "RemoteFailure.cs")];
        var sources = Directory.EnumerateFiles(Path.Combine(Root, "src"), "*.cs", SearchOption.AllDirectories)
            .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}", StringComparison.Ordinal)
                && !f.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}", StringComparison.Ordinal))
            .ToList();
        Assert.True(sources.Count > 50, $"found only {sources.Count} sources under {Root}/src");
        var found = new List<string>();
        foreach (var file in sources)
        {
            var relative = Path.GetRelativePath(Root, file);
            if (allowed.Contains(relative))
            {
                continue;
            }
            var text = File.ReadAllText(file);
            found.AddRange(ErrorCodes.All.Where(c => text.Contains($"\"{c.Name}\"", StringComparison.Ordinal)).Select(c => $"{relative}: \"{c.Name}\""));
        }
        Assert.True(found.Count == 0, "Use the ErrorCodes entry instead of a string:\n" + string.Join("\n", found));
    }

    [Fact]
    public void Docs_error_codes_md_is_the_table()
    {
        var expected = Table();
        var doc = File.ReadAllText(DocPath);
        var begin = doc.IndexOf(Begin, StringComparison.Ordinal);
        var end = doc.IndexOf(End, StringComparison.Ordinal);
        Assert.True(begin >= 0 && end > begin, $"{DocPath} lacks the markers {Begin} ... {End}");
        var current = doc[(begin + Begin.Length)..end];
        if (current != expected && Environment.GetEnvironmentVariable("NFSVOL_UPDATE_DOCS") == "1")
        {
            File.WriteAllText(DocPath, doc[..(begin + Begin.Length)] + expected + doc[end..]);
            return;
        }
        Assert.True(current == expected, $"docs/error-codes.md differs from ErrorCodes; rewrite it with NFSVOL_UPDATE_DOCS=1. Expected:\n{expected}");
    }

    /// <summary>The generated part of docs/error-codes.md: the exit codes, then every error code.</summary>
    private static string Table()
    {
        var s = new StringBuilder("\n\n");
        s.Append("| nfsvol exit code | meaning |\n|---|---|\n");
        foreach (var (exit, meaning) in ErrorCodes.ExitCodeMeanings.OrderBy(e => e.Key))
        {
            s.Append(CultureInfo.InvariantCulture, $"| {(int)exit} | {Cell(meaning)} |\n");
        }
        s.Append("\n| code | transient | nfsvol exit code | reported by | meaning |\n|---|---|---|---|---|\n");
        foreach (var c in ErrorCodes.All)
        {
            var source = c.Source switch
            {
                ErrorCodeSource.Engine => "engine (worker, oslo adapter, nfsvol)",
                ErrorCodeSource.OsloAdapter => "oslo adapter",
                _ => "nfsvol",
            };
            s.Append(CultureInfo.InvariantCulture, $"| `{c.Name}` | {(c.IsTransient ? "yes" : "no")} | {(int)c.ExitCode} | {source} | {Cell(c.Description)} |\n");
        }
        return s.Append('\n').ToString();
    }

    private static string Cell(string text) => PipeOrUnderscore().Replace(text, m => "\\" + m.Value);

    [GeneratedRegex(@"[|_*]")]
    private static partial Regex PipeOrUnderscore();
}
