namespace NfsVolumeWorker.Testing;

/// <summary>
/// Runs a shell command inside the NFS 4.2 VM (<c>ops/dev/nfs42-vm/run</c>: the Debian kernel under qemu, this
/// machine's root shared read-only, an NFS 4.2 server on an XFS with reflink). A VM that cannot start fails the
/// caller with the reason; it is never a pass.
/// </summary>
public static class Nfs42Vm
{
    /// <summary>Runs <paramref name="command"/> (bash) in the VM and returns its exit code and output.</summary>
    public static async Task<Nfs42VmRun> RunAsync(string command, TimeSpan timeout, CancellationToken ct = default)
    {
        var script = Path.Combine(RepositoryRoot.Find(), "ops", "dev", "nfs42-vm", "run");
        using var dir = new TempDirectory("nfsvol-nfs42-vm-");
        await File.WriteAllTextAsync(dir.File("cmd"), command, ct);
        var psi = new System.Diagnostics.ProcessStartInfo(script) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        psi.ArgumentList.Add(dir.Path);
        psi.ArgumentList.Add(((int)timeout.TotalSeconds).ToString(System.Globalization.CultureInfo.InvariantCulture));
        using var process = System.Diagnostics.Process.Start(psi) ?? throw new InvalidOperationException($"could not start {script}");
        var stderr = process.StandardError.ReadToEndAsync(ct);
        _ = await process.StandardOutput.ReadToEndAsync(ct);
        await process.WaitForExitAsync(ct);
        var output = File.Exists(dir.File("out")) ? await File.ReadAllTextAsync(dir.File("out"), ct) : "";
        var console = File.Exists(dir.File("console.log")) ? await File.ReadAllTextAsync(dir.File("console.log"), ct) : "";
        if (process.ExitCode is 124 or 125)
        {
            throw new InvalidOperationException($"the NFS 4.2 VM did not run the command ({process.ExitCode}): {await stderr}"
                + $"\n--- its output ---\n{output}\n--- the last of its console ---\n{Tail(console, 3000)}");
        }
        return new Nfs42VmRun(process.ExitCode, output);
    }

    // The console holds the firmware's terminal resets (ESC c), which would blank a terminal showing the message.
    private static string Tail(string text, int characters) =>
        (text.Length <= characters ? text : text[^characters..]).Replace('\u001b', '^');
}

/// <summary>What a command run in the NFS 4.2 VM returned.</summary>
public sealed record Nfs42VmRun(int ExitCode, string Output);
