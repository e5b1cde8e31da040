using System.CommandLine;
using NfsVolumeWorker.Contracts;

namespace NfsVolumeWorker.Cli;

/// <summary>The <c>nfsvol</c> entry point.</summary>
public static class Program
{
    public static Task<int> Main(string[] args) =>
        RunAsync(args, new CliEnvironment(Console.Out, Console.Error, Environment.GetEnvironmentVariable, !Console.IsOutputRedirected));

    /// <summary>Runs nfsvol in-process with the process environment, writing to <paramref name="stdout"/> and <paramref name="stderr"/>.</summary>
    public static Task<int> RunAsync(string[] args, TextWriter stdout, TextWriter stderr) =>
        RunAsync(args, new CliEnvironment(stdout, stderr, Environment.GetEnvironmentVariable, false));

    /// <summary>Runs nfsvol in-process against an explicit environment.</summary>
    public static async Task<int> RunAsync(string[] args, CliEnvironment environment, CancellationToken cancellationToken = default)
    {
        var globals = new GlobalOptions();
        var root = Commands.Build(globals, environment);
        var parse = root.Parse(args);
        if (parse.Errors.Count > 0)
        {
            // Reported like every other failure (code on stderr, --json on stdout), with the way to the help after it.
            var exit = Output.Fail(environment, parse.GetValue(globals.Json), ErrorCodes.Usage, string.Join("; ", parse.Errors.Select(e => e.Message)));
            await environment.Error.WriteLineAsync("Run 'nfsvol --help' for usage.").ConfigureAwait(false);
            return exit;
        }
        var configuration = new InvocationConfiguration
        {
            Output = environment.Out,
            Error = environment.Error,
            EnableDefaultExceptionHandler = false,
        };
        try
        {
            return await parse.InvokeAsync(configuration, cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            return Output.Fail(environment, json: false, ErrorCodes.Cancelled, "cancelled; running the command again finishes it.");
        }
    }
}
