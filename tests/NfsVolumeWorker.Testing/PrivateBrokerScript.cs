using System.Diagnostics;
using System.Globalization;

namespace NfsVolumeWorker.Testing;

/// <summary>Runs ops/broker/private-rabbitmq (with bash, so a lost execute bit does not matter).</summary>
internal sealed class PrivateBrokerScript(string path, string? rabbitMqBinDirectory)
{
    public string Path { get; } = path;

    public static string DefaultPath(string repositoryRoot) =>
        System.IO.Path.Combine(repositoryRoot, "ops", "broker", "private-rabbitmq");

    public sealed record Result(int ExitCode, string StandardOutput, string StandardError)
    {
        public bool Succeeded => ExitCode == 0;
    }

    public async Task<Result> RunAsync(TimeSpan timeout, params string[] arguments)
    {
        var info = new ProcessStartInfo("/bin/bash")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        info.ArgumentList.Add(Path);
        foreach (var a in arguments)
        {
            info.ArgumentList.Add(a);
        }

        if (rabbitMqBinDirectory is not null)
        {
            info.Environment["RABBITMQ_BIN_DIR"] = rabbitMqBinDirectory;
        }

        using var process = Process.Start(info) ?? throw new InvalidOperationException($"could not run {Path}");
        process.StandardInput.Close();
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await process.WaitForExitAsync(cts.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException(string.Create(CultureInfo.InvariantCulture,
                $"{Path} {string.Join(' ', arguments)} did not finish within {timeout.TotalSeconds:0} s"));
        }

        return new Result(process.ExitCode, await stdout.ConfigureAwait(false), await stderr.ConfigureAwait(false));
    }

    /// <summary>Synchronous, for AppDomain.ProcessExit (no async continuations run reliably there).</summary>
    public Result Run(TimeSpan timeout, params string[] arguments) =>
        Task.Run(() => RunAsync(timeout, arguments)).GetAwaiter().GetResult();

    /// <summary>KEY=VALUE lines of a broker.env file.</summary>
    public static Dictionary<string, string> ReadEnvFile(string file)
    {
        var values = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var line in File.ReadAllLines(file))
        {
            var eq = line.IndexOf('=', StringComparison.Ordinal);
            if (line.StartsWith('#') || eq <= 0)
            {
                continue;
            }

            values[line[..eq]] = line[(eq + 1)..];
        }

        return values;
    }
}
