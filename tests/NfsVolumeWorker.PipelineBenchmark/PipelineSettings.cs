using System.Globalization;

namespace NfsVolumeWorker.PipelineBenchmark;

/// <summary>Command-line settings. The defaults are the sizes issue #9 names; --quick is a smoke run for a loaded machine.</summary>
internal sealed record PipelineSettings
{
    public const string Usage = """
        usage: ops/bench/run-pipeline [options]

          --only LIST          comma-separated subset of the figures (default all):
                                 a  snapshot create/delete, publish -> terminal event, p50/p99 vs bare qemu-img
                                 b  storm: create-volume then snapshot create+delete pairs from 4 publishers,
                                    commands/s, vs Cinder's own driver run serially
                                 c  durable syncs (fsync) per command, the worker's and qemu-img's own
                                    (measured during a and b; alone it runs both)
                                 d  head-of-line: p99 on volume B while a clone of volume A runs in B's partition
                                 e  idle sweep: CPU of an idle worker on a share whose inbox holds N volume dirs
                                 f  worker RSS with N commands queued
          --shares LIST        local,fuse (default both): a local directory, and a FUSE passthrough this mounts
                               (ops/bench/delay-fs) that delays every create, rename, unlink, fsync, readdir;
                               also ext4: a journaled ext4 this loop-mounts (root) on the same disk, for a machine
                               whose own file system is unusual (these VMs' root ext4 has no journal)
          --fuse-delay-ms X    the FUSE share's delay per operation (default 0.5)
          --dir DIR            parent of the working directory (default /var/tmp); removed at the end
          --samples N          a and d: timed commands of each kind (default 200; --quick 10)
          --storm-volumes N    b: volumes (default 500; --quick 20)
          --storm-pairs N      b: snapshot create+delete pairs per volume (default 3; --quick 1)
          --storm-warm-up N    b: volumes of a storm run first and not timed for the figure, so that the worker's
                               hot code is compiled (default 100; --quick 10; 0 for none); its rate is a note
          --publishers N       b, f: concurrent publishers, each with its own connection (default 4)
          --cinder-pairs N     b: snapshot pairs Cinder's driver runs serially (default 50; --quick 6)
          --clone-gib X        d: data in the cloned volume A (default 4; --quick 0.25)
          --clone-limit-mbps X d: also run d with a worker whose full copies are limited to X MB/s
                               (Engine:CopyBytesPerSecond), its rows beside the unlimited ones (default 100; 0: not)
          --idle-volumes N     e: volume directories in the inbox (default 100000; --quick 5000)
          --idle-seconds N     e: CPU is measured over this long (default 30; --quick 10)
          --queued N           f: commands published (default 100000; --quick 5000)
          --worker-arg ARG     passed to every worker (repeatable), e.g. --worker-arg=--Engine:NativeOverlayHeaders=true
          --timeout-s N        the longest wait for one command's terminal event (default 300)
          --quick              smoke run: small counts (the machine is shared)
          --keep               keep the working directory
          -h, --help           this text
        """;

    public static readonly IReadOnlySet<string> AllFigures = new HashSet<string>(["a", "b", "c", "d", "e", "f"]);

    public IReadOnlySet<string> Only { get; init; } = AllFigures;
    public IReadOnlyList<string> Shares { get; init; } = ["local", "fuse"];
    public double FuseDelayMs { get; init; } = 0.5;
    public string ParentDir { get; init; } = "/var/tmp";
    public int Samples { get; init; } = 200;
    public int StormVolumes { get; init; } = 500;
    public int StormPairs { get; init; } = 3;

    /// <summary>Volumes of the untimed storm run before figure b's (0: none).</summary>
    public int StormWarmUpVolumes { get; init; } = 100;
    public int Publishers { get; init; } = 4;
    public int CinderPairs { get; init; } = 50;
    public double CloneGiB { get; init; } = 4;

    /// <summary>d: the copy limit of the second head-of-line pass, in MB/s (10^6 bytes); 0 for none.</summary>
    public double CloneLimitMBps { get; init; } = 100;
    public int IdleVolumes { get; init; } = 100_000;
    public int IdleSeconds { get; init; } = 30;
    public int Queued { get; init; } = 100_000;
    public IReadOnlyList<string> WorkerArgs { get; init; } = [];
    public TimeSpan CommandTimeout { get; init; } = TimeSpan.FromMinutes(5);
    public bool Quick { get; init; }
    public bool Keep { get; init; }
    public bool Help { get; init; }

    public bool Includes(string figure) => Only.Contains(figure);

    /// <summary>a runs for its own figures and for c's serial syncs; b likewise.</summary>
    public bool RunsLatency => Includes("a") || Includes("c");

    public bool RunsStorm => Includes("b") || Includes("c");

    public static PipelineSettings Parse(string[] args)
    {
        var s = args.Contains("--quick")
            ? new PipelineSettings { Quick = true, Samples = 10, StormVolumes = 20, StormPairs = 1, StormWarmUpVolumes = 10, CinderPairs = 6, CloneGiB = 0.25, IdleVolumes = 5000, IdleSeconds = 10, Queued = 5000 }
            : new PipelineSettings();
        var workerArgs = new List<string>();
        for (var i = 0; i < args.Length; i++)
        {
            var arg = args[i];
            string? inline = null;
            if (arg.StartsWith("--", StringComparison.Ordinal) && arg.IndexOf('=', StringComparison.Ordinal) is var eq and > 0)
            {
                inline = arg[(eq + 1)..];
                arg = arg[..eq];
            }
            string Next() => inline ?? (i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{arg} needs a value"));
            int NextInt() => int.TryParse(Next(), NumberStyles.None, CultureInfo.InvariantCulture, out var v) && v > 0
                ? v : throw new ArgumentException($"{arg} needs a positive integer");
            int NextCount() => int.TryParse(Next(), NumberStyles.None, CultureInfo.InvariantCulture, out var v)
                ? v : throw new ArgumentException($"{arg} needs 0 or a positive integer");
            double NextDouble() => double.TryParse(Next(), NumberStyles.Float, CultureInfo.InvariantCulture, out var v) && v >= 0 && double.IsFinite(v)
                ? v : throw new ArgumentException($"{arg} needs a non-negative number");
            s = arg switch
            {
                "--quick" => s,
                "--keep" => s with { Keep = true },
                "-h" or "--help" => s with { Help = true },
                "--only" => s with { Only = ParseList(Next(), AllFigures, arg) },
                "--shares" => s with { Shares = ParseShares(Next(), arg) },
                "--fuse-delay-ms" => s with { FuseDelayMs = NextDouble() },
                "--dir" => s with { ParentDir = Path.GetFullPath(Next()) },
                "--samples" => s with { Samples = NextInt() },
                "--storm-volumes" => s with { StormVolumes = NextInt() },
                "--storm-pairs" => s with { StormPairs = NextInt() },
                "--storm-warm-up" => s with { StormWarmUpVolumes = NextCount() },
                "--publishers" => s with { Publishers = NextInt() },
                "--cinder-pairs" => s with { CinderPairs = NextInt() },
                "--clone-gib" => s with { CloneGiB = NextDouble() is > 0 and var g ? g : throw new ArgumentException("--clone-gib must be above 0") },
                "--clone-limit-mbps" => s with { CloneLimitMBps = NextDouble() is >= 0 and var l ? l : throw new ArgumentException("--clone-limit-mbps must be 0 or more") },
                "--idle-volumes" => s with { IdleVolumes = NextInt() },
                "--idle-seconds" => s with { IdleSeconds = NextInt() },
                "--queued" => s with { Queued = NextInt() },
                "--timeout-s" => s with { CommandTimeout = TimeSpan.FromSeconds(NextInt()) },
                "--worker-arg" => AddWorkerArg(s, workerArgs, Next()),
                _ => throw new ArgumentException($"unknown option {args[i]} (--help lists them)"),
            };
        }
        return s;
    }

    private static PipelineSettings AddWorkerArg(PipelineSettings s, List<string> workerArgs, string value)
    {
        workerArgs.Add(value);
        return s with { WorkerArgs = [.. workerArgs] };
    }

    /// <summary>The local column first, whatever the order given.</summary>
    private static string[] ParseShares(string value, string option)
    {
        string[] known = ["local", "ext4", "fuse"];
        var chosen = ParseList(value, known.ToHashSet(), option);
        return [.. known.Where(chosen.Contains)];
    }

    private static HashSet<string> ParseList(string value, IReadOnlySet<string> allowed, string option)
    {
        var items = value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(x => x.ToLowerInvariant()).ToHashSet();
        var unknown = items.Where(x => !allowed.Contains(x)).ToList();
        if (items.Count == 0 || unknown.Count > 0)
        {
            throw new ArgumentException($"{option}: unknown {string.Join(", ", unknown)}; choose from {string.Join(",", allowed.Order())}");
        }
        return items;
    }
}
