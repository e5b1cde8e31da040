using System.Reflection;

namespace NfsVolumeWorker.Contracts.Tests;

/// <summary>The error code table is one consistent list: every code declared is in it once, found by its wire name,
/// described, and mapped to an exit code nfsvol documents.</summary>
public sealed class ErrorCodesSpecs
{
    private static readonly ErrorCode[] Declared = typeof(ErrorCodes).GetFields(BindingFlags.Public | BindingFlags.Static)
        .Where(f => f.FieldType == typeof(ErrorCode))
        .Select(f => (ErrorCode)f.GetValue(null)!)
        .ToArray();

    [Fact]
    public void Every_declared_code_is_in_the_table_once()
    {
        Assert.NotEmpty(Declared);
        Assert.Equal(Declared.OrderBy(c => c.Name, StringComparer.Ordinal), ErrorCodes.All.OrderBy(c => c.Name, StringComparer.Ordinal));
        var twice = ErrorCodes.All.GroupBy(c => c.Name, StringComparer.Ordinal).Where(g => g.Count() > 1).Select(g => g.Key).ToList();
        Assert.True(twice.Count == 0, "Codes listed twice: " + string.Join(", ", twice));
    }

    [Fact]
    public void Each_code_is_found_by_its_wire_name_and_its_field_is_named_like_it()
    {
        foreach (var field in typeof(ErrorCodes).GetFields(BindingFlags.Public | BindingFlags.Static).Where(f => f.FieldType == typeof(ErrorCode)))
        {
            var code = (ErrorCode)field.GetValue(null)!;
            Assert.Equal(field.Name, code.Name);
            Assert.Same(code, ErrorCodes.Named(code.Name));
        }
        Assert.Null(ErrorCodes.Named("NoSuchCode"));
        Assert.Null(ErrorCodes.Named("invalidrequest")); // names are exact: they are compared on the wire
    }

    [Fact]
    public void Each_code_is_described_and_maps_to_a_failure_exit_code()
    {
        Assert.All(ErrorCodes.All, c =>
        {
            Assert.False(string.IsNullOrWhiteSpace(c.Description), c.Name);
            Assert.EndsWith(".", c.Description, StringComparison.Ordinal);
            Assert.True(Enum.IsDefined(c.ExitCode), c.Name);
            // 0 and 1 are success and check's findings, never a failure's.
            Assert.True(c.ExitCode is not (NfsvolExitCode.Ok or NfsvolExitCode.ProblemsFound), $"{c.Name} exits {c.ExitCode}");
        });
    }

    [Fact]
    public void The_documented_exit_numbers_stay_as_they_are()
    {
        Assert.Equal([0, 1, 2, 3, 4], Enum.GetValues<NfsvolExitCode>().Select(e => (int)e));
        Assert.Equal(Enum.GetValues<NfsvolExitCode>(), ErrorCodes.ExitCodeMeanings.Keys.Order());
        Assert.Equal(NfsvolExitCode.Usage, ErrorCodes.InvalidRequest.ExitCode);
        Assert.Equal(NfsvolExitCode.Usage, ErrorCodes.ShareNotConfigured.ExitCode);
        Assert.Equal(NfsvolExitCode.Busy, ErrorCodes.VolumeBusy.ExitCode);
        Assert.Equal(NfsvolExitCode.Failed, ErrorCodes.SnapshotNotFound.ExitCode);
    }
}
