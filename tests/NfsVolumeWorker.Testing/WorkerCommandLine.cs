using System.Diagnostics;

namespace NfsVolumeWorker.Testing;

/// <summary>How tests and benchmarks start the worker as a process of its own: the built
/// <c>NfsVolumeWorker.dll</c> under <c>dotnet</c>, one share, a broker, an instance name, an HTTP port, console logs,
/// output redirected for the caller to read.</summary>
public static class WorkerCommandLine
{
    /// <summary>The worker built in <paramref name="configuration"/>; throws saying to build it when it is not there.</summary>
    public static string DllPath(string configuration)
    {
        var path = Path.Combine(RepositoryRoot.Find(), "src", "NfsVolumeWorker", "bin", configuration, "net10.0", "NfsVolumeWorker.dll");
        return File.Exists(path) ? path : throw new FileNotFoundException($"build the worker first: {path}", path);
    }

    /// <summary>The worker for a test: the copy next to the test assembly (a project reference puts it there), else
    /// the worker project's own, built in the test assembly's configuration (<c>.../bin/CONFIGURATION/net10.0/</c>).</summary>
    public static string DllPath()
    {
        var here = Path.Combine(AppContext.BaseDirectory, "NfsVolumeWorker.dll");
        if (File.Exists(here) && File.Exists(Path.Combine(AppContext.BaseDirectory, "NfsVolumeWorker.runtimeconfig.json")))
        {
            return here;
        }
        return DllPath(new DirectoryInfo(AppContext.BaseDirectory).Parent!.Name);
    }

    /// <summary>The worker with every setting given as <c>--Key=value</c>, nothing else.</summary>
    public static ProcessStartInfo StartInfo(string dllPath, IEnumerable<KeyValuePair<string, string?>> settings)
    {
        ArgumentNullException.ThrowIfNull(settings);
        var start = Base(dllPath);
        foreach (var (k, v) in settings)
        {
            start.ArgumentList.Add($"--{k}={v}");
        }
        return start;
    }

    public static ProcessStartInfo StartInfo(string dllPath, Uri brokerUrl, Uri? managementUrl, string share, string instanceName,
        string httpUrl, IEnumerable<string> extra)
    {
        ArgumentNullException.ThrowIfNull(extra);
        var start = Base(dllPath);
        start.ArgumentList.Add($"--Broker:Url={brokerUrl}");
        if (managementUrl is not null)
        {
            start.ArgumentList.Add($"--Broker:ManagementUrl={managementUrl}");
        }
        start.ArgumentList.Add($"--Shares:Items:0:Export={share}");
        start.ArgumentList.Add($"--Worker:InstanceName={instanceName}");
        start.ArgumentList.Add($"--Http:Urls={httpUrl}");
        start.ArgumentList.Add("--Logging:Console:FormatterName=simple");
        foreach (var e in extra)
        {
            start.ArgumentList.Add(e);
        }
        return start;
    }

    private static ProcessStartInfo Base(string dllPath)
    {
        var start = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = Path.GetDirectoryName(dllPath)!,
        };
        start.ArgumentList.Add(dllPath);
        start.Environment["DOTNET_ENVIRONMENT"] = "Production";
        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        return start;
    }
}
