using System.Diagnostics;

namespace NfsVolumeWorker.Testing;

/// <summary>
/// Tests that need a real tool call this first: a missing tool fails the test loudly with the
/// package to install, it never turns into a silent pass or a skip.
/// </summary>
public static class RequiredTool
{
    public static string QemuImg => Find("qemu-img", "qemu-utils");

    public static string Python3 => File.Exists("/usr/bin/python3")
        ? "/usr/bin/python3"
        : throw new InvalidOperationException("/usr/bin/python3 is missing: apt-get install -y python3 (the Debian one, not a virtualenv).");

    public static string Find(string name, string debianPackage)
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin").Split(':'))
        {
            var candidate = Path.Combine(dir, name);
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }
        throw new InvalidOperationException($"'{name}' is not installed; this test needs it: apt-get install -y {debianPackage}");
    }

    /// <summary>Runs a tool with an argument vector and returns (exit code, stdout, stderr).</summary>
    public static (int ExitCode, string Stdout, string Stderr) Run(string fileName, params string[] args)
    {
        var psi = new ProcessStartInfo(fileName) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {fileName}");
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        p.WaitForExit();
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    /// <summary>Runs a tool and throws with its stderr when it fails.</summary>
    public static string RunChecked(string fileName, params string[] args)
    {
        var (code, stdout, stderr) = Run(fileName, args);
        if (code != 0)
        {
            throw new InvalidOperationException($"{fileName} {string.Join(' ', args)} exited {code}: {stderr}");
        }
        return stdout;
    }
}
