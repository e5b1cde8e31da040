using System.Globalization;

namespace NfsVolumeWorker.Testing;

/// <summary>
/// Runs a shell command inside the NFS 4.2 VM (<c>ops/dev/nfs42-vm/run</c>: the Debian kernel under qemu, this
/// machine's root shared read-only, an NFS 4.2 server on an XFS with reflink). A VM that cannot start fails the
/// caller with the reason; it is never a pass.
/// </summary>
public static class Nfs42Vm
{
    /// <summary>Runs <paramref name="command"/> (bash) in the VM and returns its exit code and output.</summary>
    public static Nfs42VmRun Run(string command, TimeSpan timeout)
    {
        using var dir = new TempDirectory("nfsvol-nfs42-vm-");
        File.WriteAllText(dir.File("cmd"), command);
        var (exitCode, _, stderr) = RequiredTool.Run(Path.Combine(RepositoryRoot.Find(), "ops", "dev", "nfs42-vm", "run"),
            dir.Path, ((int)timeout.TotalSeconds).ToString(CultureInfo.InvariantCulture));
        var output = File.Exists(dir.File("out")) ? File.ReadAllText(dir.File("out")) : "";
        if (exitCode is 124 or 125)
        {
            var console = File.Exists(dir.File("console.log")) ? File.ReadAllText(dir.File("console.log")) : "";
            throw new InvalidOperationException($"the NFS 4.2 VM did not run the command ({exitCode}): {stderr}"
                + $"\n--- its output ---\n{output}\n--- the last of its console ---\n{Tail(console, 3000)}");
        }
        return new Nfs42VmRun(exitCode, output);
    }

    // The console holds the firmware's terminal resets (ESC c), which would blank a terminal showing the message.
    private static string Tail(string text, int characters) =>
        (text.Length <= characters ? text : text[^characters..]).Replace('\u001b', '^');
}

/// <summary>What a command run in the NFS 4.2 VM returned.</summary>
public sealed record Nfs42VmRun(int ExitCode, string Output);
