namespace NfsVolumeWorker.Cli.Tests;

/// <summary>`nfsvol` runs by name after set-up: ops/install-nfsvol publishes it and writes a launcher.</summary>
public sealed class InstallTests
{
    [Fact]
    public void The_install_script_puts_a_working_nfsvol_launcher_under_the_prefix()
    {
        using var prefix = new TempDirectory("nfsvol-prefix-");
        var script = Path.Combine(RepositoryRoot.Find(), "ops", "install-nfsvol");
        var (code, _, stderr) = RequiredTool.Run(script, "--prefix", prefix.Path);
        Assert.True(code == 0, $"install-nfsvol exited {code}: {stderr}");

        var launcher = Path.Combine(prefix.Path, "bin", "nfsvol");
        Assert.True(File.Exists(launcher), "no launcher at " + launcher);
        Assert.True((File.GetUnixFileMode(launcher) & UnixFileMode.UserExecute) != 0, "the launcher is not executable");
        Assert.True(File.Exists(Path.Combine(prefix.Path, "lib", "nfsvol", "nfsvol.dll")), "the tool was not published under lib/nfsvol");

        var help = RequiredTool.Run(launcher, "--help");
        Assert.Equal(0, help.ExitCode);
        Assert.Contains("nfsvol: inspect, check, repair", help.Stdout, StringComparison.Ordinal);
        // Arguments pass through untouched, exit codes too: a usage error is exit code 2.
        var usage = RequiredTool.Run(launcher, "chain", "not-a-uuid", "--share", prefix.Path);
        Assert.Equal(2, usage.ExitCode);

        // Bash completion: what bash would offer after "nfsvol snapshot cl<TAB>".
        var completion = Path.Combine(prefix.Path, "share", "bash-completion", "completions", "nfsvol");
        Assert.True(File.Exists(completion), "no completion file at " + completion);
        var complete = $"PATH={prefix.Path}/bin:$PATH; source {completion}; "
            + "COMP_LINE='nfsvol snapshot cl'; COMP_POINT=${#COMP_LINE}; COMP_WORDS=(nfsvol snapshot cl); COMP_CWORD=2; _nfsvol; printf '%s\\n' \"${COMPREPLY[@]}\"";
        var offered = RequiredTool.Run("/bin/bash", "-c", complete);
        Assert.Equal(0, offered.ExitCode);
        Assert.Equal(["clone"], offered.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }
}
