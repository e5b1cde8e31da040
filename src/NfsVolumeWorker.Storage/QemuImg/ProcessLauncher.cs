using System.Collections.Concurrent;
using System.Diagnostics;

namespace NfsVolumeWorker.Storage.QemuImg;

/// <summary>
/// Starts child processes from one dedicated thread that lives as long as the process. The children run
/// under <c>setpriv --pdeathsig KILL</c> so that a worker killed with SIGKILL does not leave a qemu-img
/// copying on its own; Linux delivers that signal when the thread that forked the child exits, so the
/// fork must not happen on a thread-pool thread (which the pool may retire at any time).
/// </summary>
internal static class ProcessLauncher
{
    private static readonly BlockingCollection<(Process Process, TaskCompletionSource Started)> Requests = [];
    private static readonly Lazy<Thread> Launcher = new(() =>
    {
        var thread = new Thread(Run) { IsBackground = true, Name = "nfsvol-process-launcher" };
        thread.Start();
        return thread;
    });

    /// <summary>Starts <paramref name="process"/> on the launcher thread; exceptions from Start surface here.</summary>
    public static Task StartAsync(Process process)
    {
        _ = Launcher.Value;
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Requests.Add((process, started));
        return started.Task;
    }

    private static void Run()
    {
        foreach (var (process, started) in Requests.GetConsumingEnumerable())
        {
            try
            {
                process.Start();
                started.SetResult();
            }
            catch (Exception e)
            {
                started.SetException(e);
            }
        }
    }

    /// <summary>The path of <paramref name="name"/> on PATH (or as given when it has a slash), or null.</summary>
    public static string? Resolve(string name)
    {
        if (name.Contains('/', StringComparison.Ordinal))
        {
            return File.Exists(name) ? name : null;
        }
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin").Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            var candidate = Path.Combine(dir, name);
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }
        return null;
    }
}
