using System.Globalization;

namespace NfsVolumeWorker.Benchmarks;

/// <summary>Command-line settings. Defaults keep a full run around 2-3 minutes on 2 cores; --quick under 1.</summary>
internal sealed record Settings
{
    public const string Usage = """
        usage: NfsVolumeWorker.Benchmarks [options]

          --dir DIR            parent directory to work in (default /var/tmp); must be on the disk to measure.
                               The harness works in a fresh subdirectory and removes it at the end.
          --runs N             timed runs per variant (default 7; --quick: 2)
          --quick              smoke check: 2 runs, smaller data, under a minute
          --only LIST          comma-separated subset of: create,delete,clone,sparse,reflink,overlay,merge (reflink: clones
                               on an XFS with reflink=1 the harness loop-mounts; needs root and xfsprogs; overlay: the
                               overlay file written natively vs by qemu-img create, then engine snapshots with both;
                               merge: snapshot deletes planned by cost against always committing down), and
                               idle-sweep (not in the default set: an idle worker's inbox sweep over a share whose
                               volumes each had a command once, format 1 before and format 2 after, ~3 minutes)
          --overlays N         overlays per variant in 'overlay' (default 200; --quick: 40)
          --idle-volumes N     volumes of the 'idle-sweep' share (default 100000)
          --idle-seconds N     how long 'idle-sweep' measures each idle phase (default 30)
          --clone-data-mib N   data written into the volume cloned in 'clone' (default 1024; --quick: 256)
          --delete-data-mib N  data written into the overlay merged in 'delete' (default 256; --quick: 64)
          --merge-data-mib N   the large image of 'merge' (default 512; --quick: 128); the small one is 1/16 of it
          --sparse-data-mib N  data in each volume of 'sparse' (default 64)
          --sparse-sizes LIST  virtual sizes in GiB for 'sparse' (default 1,10,100)
          --diag               clone: also time the engine's bare qemu-img command (engine overhead)
          --warm               do not drop the page cache between copy/merge runs (default: drop when allowed)
          --keep               keep the working directory
          -h, --help           this text
        """;

    public string ParentDir { get; init; } = "/var/tmp";
    public int Runs { get; init; } = 7;
    public bool Quick { get; init; }
    public IReadOnlySet<string> Only { get; init; } = new HashSet<string>(["create", "delete", "clone", "sparse", "reflink", "overlay", "merge"]);
    public int CloneDataMiB { get; init; } = 1024;
    public int DeleteDataMiB { get; init; } = 256;
    public int MergeDataMiB { get; init; } = 512;
    public int SparseDataMiB { get; init; } = 64;
    public IReadOnlyList<int> SparseSizesGiB { get; init; } = [1, 10, 100];
    public int Overlays { get; init; } = 200;
    public int IdleVolumes { get; init; } = 100_000;
    public int IdleSeconds { get; init; } = 30;
    public bool Warm { get; init; }
    public bool Diagnostics { get; init; }
    public bool Keep { get; init; }
    public bool Help { get; init; }

    public bool Includes(string scenario) => Only.Contains(scenario);

    /// <summary>True when a scenario that times the engine runs (they share a warm-up).</summary>
    public bool TimesTheEngine => Only.Any(s => s is "create" or "delete" or "clone" or "sparse");

    public static Settings Parse(string[] args)
    {
        var quick = args.Contains("--quick");
        var s = quick ? new Settings { Quick = true, Runs = 2, CloneDataMiB = 256, DeleteDataMiB = 64, Overlays = 40, MergeDataMiB = 128 } : new Settings();
        for (var i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            int NextInt() => int.TryParse(Next(), NumberStyles.None, CultureInfo.InvariantCulture, out var v) && v > 0
                ? v : throw new ArgumentException($"{args[i - 1]} needs a positive integer");
            s = args[i] switch
            {
                "--quick" => s,
                "--dir" => s with { ParentDir = Path.GetFullPath(Next()) },
                "--runs" => s with { Runs = NextInt() },
                "--only" => s with { Only = ParseOnly(Next()) },
                "--clone-data-mib" => s with { CloneDataMiB = NextInt() },
                "--delete-data-mib" => s with { DeleteDataMiB = NextInt() },
                "--merge-data-mib" => s with { MergeDataMiB = NextInt() },
                "--sparse-data-mib" => s with { SparseDataMiB = NextInt() },
                "--overlays" => s with { Overlays = NextInt() },
                "--sparse-sizes" => s with { SparseSizesGiB = Next().Split(',').Select(x => int.Parse(x, CultureInfo.InvariantCulture)).ToArray() },
                "--idle-volumes" => s with { IdleVolumes = NextInt() },
                "--idle-seconds" => s with { IdleSeconds = NextInt() },
                "--warm" => s with { Warm = true },
                "--diag" => s with { Diagnostics = true },
                "--keep" => s with { Keep = true },
                "-h" or "--help" => s with { Help = true },
                _ => throw new ArgumentException($"unknown option {args[i]}"),
            };
        }
        return s;
    }

    private static HashSet<string> ParseOnly(string list)
    {
        var known = new[] { "create", "delete", "clone", "sparse", "reflink", "overlay", "merge", IdleSweepBench.Scenario };
        var set = list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToHashSet();
        var unknown = set.Except(known).ToList();
        return unknown.Count == 0 ? set : throw new ArgumentException($"--only: unknown scenario(s) {string.Join(',', unknown)}; known: {string.Join(',', known)}");
    }
}
