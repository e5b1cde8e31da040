using System.Text.Json;
using NfsVolumeWorker.Cli.Tests.Support;
using NfsVolumeWorker.Contracts;

namespace NfsVolumeWorker.Cli.Tests;

/// <summary>nfsvol's exit code of a failure is the one the contract's error code table gives its code.</summary>
public sealed class ExitCodeTableTests
{
    [Fact]
    public async Task Each_failure_exits_with_the_exit_code_the_table_gives_its_error_code()
    {
        using var share = new TestShare();
        var volume = TestShare.Id();
        await TestShare.Ok(share.Args("volume", "create", volume, "--size", "2M"));
        var failures = new (string[] Args, ErrorCode Expected)[]
        {
            (share.Args("--json", "chain", "not-a-uuid"), ErrorCodes.InvalidRequest),
            (share.Args("--json", "volume", "extend", volume, "--size", "1M"), ErrorCodes.ShrinkNotAllowed),
            (share.Args("--json", "snapshot", "delete", TestShare.Id(), TestShare.Id()), ErrorCodes.VolumeNotFound),
            (share.Args("--json", "--format", "vmdk", "volume", "create", TestShare.Id(), "--size", "1M"), ErrorCodes.Usage),
        };
        Assert.Contains(failures, f => f.Expected.ExitCode != NfsvolExitCode.Failed); // the table, not a constant 3, decides
        foreach (var (args, expected) in failures)
        {
            var run = await Nfsvol.RunAsync(args);
            var reported = ReportedCode(run);
            Assert.True(reported == expected.Name, $"{string.Join(' ', args)}: expected {expected.Name}\n{run}");
            Assert.Equal((int)ErrorCodes.Named(reported)!.ExitCode, run.ExitCode);
            Assert.StartsWith($"nfsvol: {reported}: ", run.Stderr, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task Help_lists_every_exit_code_with_its_meaning_and_the_codes_that_map_to_it()
    {
        var run = await Nfsvol.RunAsync("--help");
        Assert.Equal(0, run.ExitCode);
        var help = string.Join(' ', run.Stdout.Split((char[])[' ', '\n', '\r'], StringSplitOptions.RemoveEmptyEntries));
        foreach (var exit in Enum.GetValues<NfsvolExitCode>())
        {
            Assert.Contains($"{(int)exit} {ErrorCodes.ExitCodeMeanings[exit]}", help, StringComparison.Ordinal);
        }
        Assert.Contains(nameof(ErrorCodes.VolumeBusy), help, StringComparison.Ordinal);
        Assert.Contains(nameof(ErrorCodes.ShareNotConfigured), help, StringComparison.Ordinal);
    }

    private static string ReportedCode(CliRun run)
    {
        // --json: {"error": {"code", "message"}} on stdout, however the failure came about.
        using var doc = JsonDocument.Parse(run.Stdout);
        return doc.RootElement.GetProperty("error").GetProperty("code").GetString()!;
    }
}
