using System.Diagnostics;

namespace NfsVolumeWorker.Benchmarks;

/// <summary>The outcome of one external process.</summary>
internal sealed record ProcResult(int ExitCode, string Stdout, string Stderr);

/// <summary>A failure of the harness itself (a setup step or a replayed command that should not fail).</summary>
internal sealed class HarnessException(string message) : Exception(message);

/// <summary>Runs external commands with an argument vector (no shell), output captured.</summary>
internal static class Proc
{
    public static async Task<ProcResult> RunAsync(string file, IEnumerable<string> args, bool check = true)
    {
        var start = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }
        using var process = Process.Start(start) ?? throw new HarnessException($"could not start {file}");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        var result = new ProcResult(process.ExitCode, await stdout, await stderr);
        if (check && result.ExitCode != 0)
        {
            throw new HarnessException($"'{file} {string.Join(' ', start.ArgumentList)}' exited with {result.ExitCode}: {result.Stderr.Trim()}");
        }
        return result;
    }

    public static Task<ProcResult> RunAsync(string file, params string[] args) => RunAsync(file, (IEnumerable<string>)args);

    /// <summary>First line of a command's output, or a note that it failed (for the machine facts).</summary>
    public static async Task<string> FirstLineAsync(string file, params string[] args)
    {
        try
        {
            var r = await RunAsync(file, (IEnumerable<string>)args, check: false);
            var text = (r.Stdout.Length > 0 ? r.Stdout : r.Stderr).Trim();
            return text.Split('\n')[0].Trim();
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or InvalidOperationException)
        {
            return $"({file} not available: {e.Message})";
        }
    }
}
