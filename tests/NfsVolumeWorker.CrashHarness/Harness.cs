using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.QemuImg;
using NfsVolumeWorker.Storage.Shares;

namespace NfsVolumeWorker.CrashHarness;

/// <summary>
/// <c>dotnet NfsVolumeWorker.CrashHarness.dll [options] &lt;mount-base&gt; &lt;export&gt; &lt;operation&gt; &lt;args...&gt;</c>
/// <para>Options: <c>--pause-at &lt;step&gt;[#n]</c> prints <c>PAUSED &lt;step&gt;</c> at the n-th time (default 1) the
/// operation passes that step and sleeps forever, holding the volume lock; <c>--pause-on-progress</c> prints
/// <c>PROGRESS &lt;fraction&gt;</c> at the first progress report of a long qemu-img call, then stops itself and its
/// qemu-img child with SIGSTOP (the test kills them);
/// <c>--lock-timeout-ms &lt;ms&gt;</c>; <c>--merge-planning &lt;ByCost|AlwaysCommitDown|PullUpWherePossible&gt;</c>.</para>
/// <para>Last line of stdout: <c>OK &lt;outcome&gt; &lt;message&gt;</c> (exit 0) or <c>ERROR &lt;code&gt; &lt;message&gt;</c> (exit 2). Exit 64 for bad usage.</para>
/// </summary>
public static class Harness
{
    public const int ExitFailed = 2;
    public const int ExitUsage = 64;

    public static async Task<int> MainAsync(string[] args)
    {
        // Options may come anywhere; everything else is positional.
        var pending = new List<string>(args);
        var rest = new List<string>();
        string? pauseAt = null;
        var pauseOnProgress = false;
        var lockTimeout = TimeSpan.FromSeconds(30);
        var mergePlanning = MergePlanning.ByCost;
        while (pending.Count > 0)
        {
            var arg = pending[0];
            pending.RemoveAt(0);
            switch (arg)
            {
                case "--pause-at": pauseAt = Take(pending); break;
                case "--pause-on-progress": pauseOnProgress = true; break;
                case "--merge-planning": mergePlanning = Enum.Parse<MergePlanning>(Take(pending)); break;
                case "--lock-timeout-ms": lockTimeout = TimeSpan.FromMilliseconds(int.Parse(Take(pending), System.Globalization.CultureInfo.InvariantCulture)); break;
                case var option when option.StartsWith("--", StringComparison.Ordinal): return Usage($"unknown option {option}");
                default: rest.Add(arg); break;
            }
        }
        if (rest.Count < 3)
        {
            return Usage("expected <mount-base> <export> <operation> <args...>");
        }
        var share = ShareMap.FromDefinition(rest[0], rest[1], null, null);
        var qemu = new QemuImgRunner(Options.Create(new QemuImgOptions()), NullLogger<QemuImgRunner>.Instance);
        var engine = new VolumeEngine(new ShareMap([share]), qemu, Options.Create(new VolumeEngineOptions { LockTimeout = lockTimeout, MergePlanning = mergePlanning }),
            NullLogger<VolumeEngine>.Instance, pauseAt is null ? null : new PauseAtStep(pauseAt));
        IProgress<OperationProgress>? progress = pauseOnProgress ? new FirstProgressPrinter() : null;
        try
        {
            var result = await Operations.RunAsync(engine, share.Export, rest[2], rest.Skip(3).ToArray(), progress);
            Console.Out.WriteLine($"OK {result.Outcome} {result.Message}");
            return 0;
        }
        catch (StorageException e)
        {
            Console.Out.WriteLine($"ERROR {e.Code} {e.Message}");
            return ExitFailed;
        }
        catch (ArgumentException e)
        {
            return Usage(e.Message);
        }
    }

    private static string Take(List<string> rest)
    {
        if (rest.Count == 0)
        {
            throw new ArgumentException("option value missing");
        }
        var value = rest[0];
        rest.RemoveAt(0);
        return value;
    }

    private static int Usage(string why)
    {
        Console.Error.WriteLine($"usage: [--pause-at step[#n]] [--pause-on-progress] [--lock-timeout-ms ms] [--merge-planning how] <mount-base> <export> <operation> <args...>: {why}");
        return ExitUsage;
    }

    /// <summary>Stops the operation at the n-th pass of a step: what NFSVOL_PAUSE_AT_STEP does in the CLI.</summary>
    private sealed class PauseAtStep : IStepObserver
    {
        private readonly string _step;
        private readonly int _occurrence;
        private int _seen;

        public PauseAtStep(string spec)
        {
            var hash = spec.LastIndexOf('#');
            (_step, _occurrence) = hash < 0 ? (spec, 1) : (spec[..hash], int.Parse(spec[(hash + 1)..], System.Globalization.CultureInfo.InvariantCulture));
        }

        public void OnStep(string stepName, Guid volumeId)
        {
            if (stepName == _step && ++_seen == _occurrence)
            {
                Console.Out.WriteLine($"PAUSED {stepName}");
                Console.Out.Flush();
                Thread.Sleep(Timeout.Infinite);
            }
        }
    }

    private sealed class FirstProgressPrinter : IProgress<OperationProgress>
    {
        private static void FreezeQemuImgChildren()
        {
            var self = Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture);
            foreach (var dir in Directory.EnumerateDirectories("/proc"))
            {
                if (!int.TryParse(Path.GetFileName(dir), out _))
                {
                    continue; // not a process (/proc/net, /proc/sys, ...)
                }
                try
                {
                    // /proc/<pid>/stat: "pid (comm) state ppid ..."
                    var stat = File.ReadAllText(Path.Combine(dir, "stat"));
                    var close = stat.LastIndexOf(')');
                    var comm = stat[(stat.IndexOf('(', StringComparison.Ordinal) + 1)..close];
                    var ppid = stat[(close + 2)..].Split(' ')[1];
                    if (comm == "qemu-img" && ppid == self)
                    {
                        Stop(Path.GetFileName(dir));
                    }
                }
                catch (IOException)
                {
                }
            }
        }

        private int _printed;

        // Through kill(1): the harness has no P/Invoke of its own. For itself, the child's signal stops this
        // process while it waits, so the wait only returns once the test has sent SIGCONT (it never does).
        private static void Stop(string pid)
        {
            using var kill = System.Diagnostics.Process.Start("kill", ["-STOP", pid]);
            kill!.WaitForExit();
        }

        public void Report(OperationProgress value)
        {
            if (Interlocked.Exchange(ref _printed, 1) == 0)
            {
                // Freeze the qemu-img child, print, then freeze this process too: a kill after this line always
                // lands mid-operation. Freezing only the child was not enough: a fast copy may have exited before
                // its first report was read (the runner then reports 1.0 itself), and the engine ran on to the end
                // between the line and the kill.
                FreezeQemuImgChildren();
                Console.Out.WriteLine($"PROGRESS {value.Phase} {value.Fraction.ToString(System.Globalization.CultureInfo.InvariantCulture)}");
                Console.Out.Flush();
                Stop(Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture));
            }
        }
    }
}

/// <summary>Engine operations by name, with their arguments as strings (ids are parsed with <see cref="Ids.Parse"/>).</summary>
public static class Operations
{
    public static Task<OperationResult> RunAsync(VolumeEngine engine, string export, string operation, string[] a, IProgress<OperationProgress>? progress = null)
    {
        Guid Id(int i, string what) => Ids.Parse(Arg(a, i), what);
        long? Size(int i) => a.Length > i ? long.Parse(a[i], System.Globalization.CultureInfo.InvariantCulture) : null;
        ImageFormat? Format(int i) => a.Length > i && a[i] != "-" ? (ImageFormatNames.TryParse(a[i], out var f) ? f : throw new ArgumentException($"unknown format {a[i]}")) : null;

        return operation switch
        {
            "create-volume" => engine.CreateVolumeAsync(new CreateVolumeRequest(export, Id(0, "volume id"), Size(1) ?? throw new ArgumentException("size missing"), Format(2))),
            "delete-volume" => engine.DeleteVolumeAsync(new DeleteVolumeRequest(export, Id(0, "volume id"))),
            "create-snapshot" => engine.CreateSnapshotAsync(new CreateSnapshotRequest(export, Id(0, "volume id"), Id(1, "snapshot id"))),
            "delete-snapshot" => engine.DeleteSnapshotAsync(new DeleteSnapshotRequest(export, Id(0, "volume id"), Id(1, "snapshot id")), progress),
            "create-volume-from-snapshot" => engine.CreateVolumeFromSnapshotAsync(
                new CreateVolumeFromSnapshotRequest(export, Id(0, "volume id"), Id(1, "snapshot id"), Id(2, "new volume id"), Format(3), Size(4)), progress),
            "clone-volume" => engine.CloneVolumeAsync(new CloneVolumeRequest(export, Id(0, "volume id"), Id(1, "new volume id"), Format(2), Size(3)), progress),
            "revert" => engine.RevertToSnapshotAsync(new RevertToSnapshotRequest(export, Id(0, "volume id"), Id(1, "snapshot id"))),
            "extend" => engine.ExtendVolumeAsync(new ExtendVolumeRequest(export, Id(0, "volume id"), Size(1) ?? throw new ArgumentException("size missing"))),
            _ => throw new ArgumentException($"unknown operation {operation}"),
        };
    }

    private static string Arg(string[] a, int i) => a.Length > i ? a[i] : throw new ArgumentException($"argument {i + 1} missing");
}
