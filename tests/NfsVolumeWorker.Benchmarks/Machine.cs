using System.Runtime.InteropServices;

namespace NfsVolumeWorker.Benchmarks;

/// <summary>Facts about the machine, and the page-cache controls the harness uses between runs.</summary>
internal static partial class Machine
{
    [LibraryImport("libc", EntryPoint = "sync")]
    private static partial void LibcSync();

    /// <summary>The kernel's clock ticks per second (getconf CLK_TCK), the unit of /proc's CPU times.</summary>
    public static readonly long ClockTicksPerSecond = long.Parse(
        Proc.RunAsync("getconf", "CLK_TCK").GetAwaiter().GetResult().Stdout.Trim(), System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>CPU time every core has spent busy since boot (/proc/stat: user, system and interrupts; not idle, iowait
    /// or steal), in seconds: the difference over an interval is what every process of the machine used in it.</summary>
    public static double BusyCpuSeconds()
    {
        var cpu = File.ReadLines("/proc/stat").First(l => l.StartsWith("cpu ", StringComparison.Ordinal));
        var ticks = cpu.Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1).Select(f => long.Parse(f, System.Globalization.CultureInfo.InvariantCulture)).ToArray();
        // user nice system idle iowait irq softirq steal ...: idle and iowait are not work, steal is the host's (another
        // guest's), and guest time is already counted in user.
        return (ticks.Take(7).Sum() - ticks[3] - ticks[4]) / (double)ClockTicksPerSecond;
    }

    /// <summary>sync(2): flushes every dirty page, so one run's writes are not paid for by the next.</summary>
    public static void Sync() => LibcSync();

    /// <summary>Flushes and drops the page cache (needs root; may be refused in a container).</summary>
    public static bool TryDropCaches()
    {
        Sync();
        try
        {
            File.WriteAllText("/proc/sys/vm/drop_caches", "3");
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    public static async Task PrintFactsAsync(string dir, TextWriter output)
    {
        output.WriteLine("== machine ==");
        output.WriteLine($"date        {DateTimeOffset.UtcNow:yyyy-MM-dd HH:mm} UTC");
        output.WriteLine($"cpu         {CpuModel()} x {Environment.ProcessorCount} (nproc {await Proc.FirstLineAsync("nproc")})");
        output.WriteLine($"memory      {MemTotal()}");
        output.WriteLine($"load        {LoadLine()}");
        output.WriteLine($"kernel      {await Proc.FirstLineAsync("uname", "-srm")}");
        var df = await Proc.RunAsync("df", ["-hT", dir], check: false);
        var dfLines = df.Stdout.Trim().Split('\n');
        output.WriteLine($"disk of dir {(dfLines.Length > 1 ? string.Join(' ', dfLines[^1].Split(' ', StringSplitOptions.RemoveEmptyEntries)) : df.Stderr.Trim())}  [{dir}]");
        output.WriteLine($"qemu-img    {await Proc.FirstLineAsync("qemu-img", "--version")}");
        output.WriteLine($"python3     {await Proc.FirstLineAsync(CinderNfsDriver.Python, "--version")}, {await Proc.FirstLineAsync("dpkg-query", "-W", "python3-cinder")}, {await Proc.FirstLineAsync("dpkg-query", "-W", "python3-oslo.concurrency")}");
        output.WriteLine($".NET        {Environment.Version} ({RuntimeInformation.RuntimeIdentifier})");
    }

    /// <summary>The 1-, 5- and 15-minute load averages, and a warning when the machine is busy: other work
    /// on the same cores and disk makes every figure noisy.</summary>
    public static string LoadLine()
    {
        try
        {
            var parts = File.ReadAllText("/proc/loadavg").Split(' ');
            var one = double.Parse(parts[0], System.Globalization.CultureInfo.InvariantCulture);
            var busy = one > Environment.ProcessorCount / 2.0;
            return $"{parts[0]} {parts[1]} {parts[2]} on {Environment.ProcessorCount} cores" +
                (busy ? " -- BUSY: other work shares these cores and this disk; figures will be noisy, prefer a quiet machine" : "");
        }
        catch (IOException)
        {
            return "?";
        }
    }

    private static string CpuModel()
    {
        try
        {
            var line = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal));
            return line is null ? "?" : line[(line.IndexOf(':', StringComparison.Ordinal) + 1)..].Trim();
        }
        catch (IOException)
        {
            return "?";
        }
    }

    private static string MemTotal()
    {
        try
        {
            var line = File.ReadLines("/proc/meminfo").First(l => l.StartsWith("MemTotal:", StringComparison.Ordinal));
            var kb = long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], System.Globalization.CultureInfo.InvariantCulture);
            return $"{kb / 1024.0 / 1024.0:F1} GiB";
        }
        catch (IOException)
        {
            return "?";
        }
    }
}
