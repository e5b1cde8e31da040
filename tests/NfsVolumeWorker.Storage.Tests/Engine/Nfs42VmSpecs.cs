using System.Reflection;
using System.Text.RegularExpressions;

namespace NfsVolumeWorker.Storage.Tests.Engine;

/// <summary>
/// Boots the NFS 4.2 VM (<c>ops/dev/nfs42-vm</c>) and runs <see cref="Nfs42ShareSpecs"/> there, on this very test
/// assembly: fails unless every one of them ran and passed. About 1.5 minutes on both cores, most of it .NET under
/// software emulation, so it is a long run of its own (<see cref="VmCategory"/>), not part of the default suite.
/// </summary>
[Trait("Category", VmCategory)]
public sealed partial class Nfs42VmSpecs
{
    /// <summary>The trait of the tests that run only inside the VM; <c>ops/run-tests</c> leaves it out.</summary>
    public const string Category = "InNfs42Vm";

    /// <summary>This class's trait: <c>ops/run-tests</c> leaves it out; <c>ops/run-tests --filter Category=Nfs42Vm</c> runs it.</summary>
    public const string VmCategory = "Nfs42Vm";

    [Fact]
    public void The_engine_specs_for_NFS_4_2_pass_on_a_real_NFS_4_2_mount()
    {
        var expected = typeof(Nfs42ShareSpecs).GetMethods().Count(m => m.GetCustomAttribute<FactAttribute>() is not null);
        var assembly = typeof(Nfs42ShareSpecs).Assembly.Location;
        var command = $"exec dotnet test '{assembly}' --filter 'FullyQualifiedName~{typeof(Nfs42ShareSpecs).FullName}' --results-directory /tmp/test-results";

        var run = Nfs42Vm.Run(command, TimeSpan.FromMinutes(12));

        var summary = Summary().Match(run.Output);
        Assert.True(run.ExitCode == 0 && summary.Success, $"dotnet test in the VM exited {run.ExitCode}:\n{run.Output}");
        Assert.Equal((0, expected, 0), (int.Parse(summary.Groups["failed"].Value), int.Parse(summary.Groups["passed"].Value), int.Parse(summary.Groups["skipped"].Value)));
    }

    [GeneratedRegex(@"Failed:\s+(?<failed>\d+), Passed:\s+(?<passed>\d+), Skipped:\s+(?<skipped>\d+)")]
    private static partial Regex Summary();
}
