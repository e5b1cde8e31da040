using NfsVolumeWorker.Fuzz;
using NfsVolumeWorker.Oslo.Rpc;

namespace NfsVolumeWorker.Fuzz.Tests;

/// <summary>The short, in-process half of the fuzzing: what afl-fuzz starts from (the corpus) and what it
/// found (the regressions) go through the very targets ops/fuzz/run fuzzes, with the same checks: only the
/// documented exception, allocation bounded by the input's size, the round trips and oracles of each target.</summary>
public sealed class FuzzInputSpecs
{
    private static readonly string Inputs = Path.Combine(AppContext.BaseDirectory, "fuzz-inputs");

    public static TheoryData<string, string> CorpusFiles() => Files("corpus");

    public static TheoryData<string, string> RegressionFiles() => Files("regressions");

    [Theory]
    [MemberData(nameof(CorpusFiles))]
    public void Every_corpus_input_is_decoded_or_refused_with_the_documented_exception(string target, string file) =>
        AssertPasses(target, Path.Combine(Inputs, "corpus", target, file));

    [Theory]
    [MemberData(nameof(RegressionFiles))]
    public void Every_saved_finding_now_passes_its_target(string target, string file) =>
        AssertPasses(target, Path.Combine(Inputs, "regressions", target, file));

    [Theory]
    [MemberData(nameof(RegressionFiles))]
    public void Every_saved_finding_is_refused_not_accepted(string target, string file)
    {
        var t = Targets.Find(target)!;
        var bytes = File.ReadAllBytes(Path.Combine(Inputs, "regressions", target, file));
        // Every saved finding is bad input: it must not slip through as a decoded message either. The oslo
        // endpoint refuses what decodes but cannot be done (a size past 64 bits) with a failure reply instead.
        var refusal = Record.Exception(() => t.Decode(bytes));
        if (refusal is null && target == "oslo")
        {
            Assert.IsType<FailPlan>(Targets.OsloPlan(bytes));
            return;
        }
        Assert.NotNull(refusal);
        Assert.True(t.IsExpected(refusal), refusal.ToString());
    }

    [Fact]
    public void Every_target_has_a_corpus_and_the_three_that_had_findings_keep_them()
    {
        Assert.Equal(["envelope", "info", "oslo", "qcow2"], Directory.GetDirectories(Path.Combine(Inputs, "corpus")).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        Assert.All(Targets.All, t => Assert.NotEmpty(Directory.GetFiles(Path.Combine(Inputs, "corpus", t.Name))));
        foreach (var target in new[] { "envelope", "oslo", "info" })
        {
            Assert.NotEmpty(Directory.GetFiles(Path.Combine(Inputs, "regressions", target)));
        }
    }

    [Theory]
    [InlineData("envelope")]
    [InlineData("oslo")]
    [InlineData("qcow2")]
    [InlineData("info")]
    public void Empty_blank_and_single_byte_inputs_pass(string target)
    {
        var t = Targets.Find(target)!;
        Assert.Null(t.Check([]));
        Assert.Null(t.Check(" \n\t"u8));
        for (var b = 0; b < 256; b++)
        {
            var finding = t.Check([(byte)b]);
            Assert.True(finding is null, $"byte 0x{b:x2}: {finding}");
        }
    }

    [Fact]
    public void The_checks_themselves_catch_an_undocumented_exception_and_an_allocation_sized_by_the_input()
    {
        var believer = new FuzzTarget("believer", "allocates what the first byte claims, in MiB",
            input => GC.KeepAlive(new byte[input[0] << 20]), e => e is FormatException);
        Assert.Null(believer.Check([1]));
        Assert.IsType<FuzzFindingException>(believer.Check([64]));

        var thrower = new FuzzTarget("thrower", "throws", input => throw (input[0] == 0 ? new FormatException() : new InvalidOperationException()), e => e is FormatException);
        Assert.Null(thrower.Check([0]));
        Assert.IsType<InvalidOperationException>(thrower.Check([1]));
    }

    private static void AssertPasses(string target, string path)
    {
        var finding = Targets.Find(target)!.Check(File.ReadAllBytes(path));
        Assert.True(finding is null, $"{target} {Path.GetFileName(path)}: {finding}");
    }

    private static TheoryData<string, string> Files(string kind)
    {
        var data = new TheoryData<string, string>();
        foreach (var dir in Directory.GetDirectories(Path.Combine(Inputs, kind)).Order(StringComparer.Ordinal))
        {
            foreach (var file in Directory.GetFiles(dir).Order(StringComparer.Ordinal))
            {
                data.Add(Path.GetFileName(dir), Path.GetFileName(file));
            }
        }
        return data;
    }
}
