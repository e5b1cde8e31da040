using System.Diagnostics;
using NfsVolumeWorker.Cli;

namespace NfsVolumeWorker.Cli.Tests.Support;

/// <summary>What one nfsvol run printed and returned.</summary>
public sealed record CliRun(int ExitCode, string Stdout, string Stderr)
{
    public override string ToString() => $"exit {ExitCode}\n--- stdout\n{Stdout}\n--- stderr\n{Stderr}";
}

/// <summary>Runs nfsvol in-process (through <see cref="Program.RunAsync(string[], CliEnvironment, CancellationToken)"/>)
/// or as the built <c>nfsvol.dll</c> in a child process.</summary>
public static class Nfsvol
{
    /// <summary>In-process, with a private environment (only <paramref name="environment"/> is visible).</summary>
    public static async Task<CliRun> RunAsync(IReadOnlyDictionary<string, string>? environment, params string[] args)
    {
        using var stdout = new StringWriter();
        using var stderr = new StringWriter();
        var env = environment ?? new Dictionary<string, string>();
        var code = await Program.RunAsync(args, new CliEnvironment(stdout, stderr, name => env.TryGetValue(name, out var v) ? v : null, false));
        return new CliRun(code, stdout.ToString(), stderr.ToString());
    }

    public static Task<CliRun> RunAsync(params string[] args) => RunAsync(null, args);

    /// <summary>The built nfsvol.dll (copied next to the tests by the project reference).</summary>
    public static string Dll
    {
        get
        {
            var path = Path.Combine(AppContext.BaseDirectory, "nfsvol.dll");
            return File.Exists(path) ? path : throw new InvalidOperationException($"{path} is missing: build src/NfsVolumeWorker.Cli first.");
        }
    }

    /// <summary>The dotnet host that runs the tests.</summary>
    public static string DotnetHost =>
        Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host && File.Exists(host)
            ? host
            : Environment.ProcessPath is { } p && Path.GetFileNameWithoutExtension(p) == "dotnet" ? p : RequiredTool.Find("dotnet", "dotnet-sdk-10.0");

    public static ProcessStartInfo StartInfo(IReadOnlyDictionary<string, string>? environment, params string[] args)
    {
        var psi = new ProcessStartInfo(DotnetHost)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add(Dll);
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }
        psi.Environment.Remove("NFSVOL_SHARE");
        psi.Environment.Remove("NFSVOL_PAUSE_AT_STEP");
        foreach (var (k, v) in environment ?? new Dictionary<string, string>())
        {
            psi.Environment[k] = v;
        }
        return psi;
    }

    /// <summary>As a child process; fails the test if it runs longer than <paramref name="timeout"/>.</summary>
    public static async Task<CliRun> RunProcessAsync(IReadOnlyDictionary<string, string>? environment, TimeSpan timeout, params string[] args)
    {
        using var p = Process.Start(StartInfo(environment, args)) ?? throw new InvalidOperationException("could not start nfsvol");
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await p.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"nfsvol {string.Join(' ', args)} ran longer than {timeout}: {await stderr}");
        }
        return new CliRun(p.ExitCode, await stdout, await stderr);
    }

    public static Task<CliRun> RunProcessAsync(params string[] args) => RunProcessAsync(null, TimeSpan.FromMinutes(2), args);
}
