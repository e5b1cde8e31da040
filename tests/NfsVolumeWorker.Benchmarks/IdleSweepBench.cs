using System.Diagnostics;
using System.Globalization;
using NfsVolumeWorker.Storage.Inbox;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Shares;

namespace NfsVolumeWorker.Benchmarks;

/// <summary>The CPU an idle sweep costs, and where it went, for one phase of <see cref="IdleSweepBench"/>.</summary>
/// <param name="Phase">What ran.</param>
/// <param name="Sweeps">Sweeps done.</param>
/// <param name="Wall">Time the phase lasted.</param>
/// <param name="Cpu">CPU time of this process meanwhile (user + system, every thread).</param>
public sealed record IdleSweepPhase(string Phase, int Sweeps, TimeSpan Wall, TimeSpan Cpu)
{
    /// <summary>Share of one core: CPU time / wall time.</summary>
    public double CoreShare => Wall > TimeSpan.Zero ? Cpu / Wall : double.NaN;

    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"{Phase}: {Sweeps} sweeps in {Wall.TotalSeconds:0.0} s, CPU {Cpu.TotalSeconds:0.000} s = {CoreShare * 100:0.00}% of a core");
}

/// <summary>The three phases measured over one share: the format-1 sweep, the cleanup, the idle sweep after it.</summary>
public sealed record IdleSweepFigures(int Volumes, TimeSpan Setup, IdleSweepPhase Format1, IdleSweepPhase Cleanup, IdleSweepPhase Idle);

/// <summary>
/// The cost of an idle worker's inbox sweep over a share where <c>volumes</c> volumes each had a command once, as a
/// format-1 worker leaves it: one empty inbox directory per volume (with its two lock files). Three phases, each
/// sweeping every <c>interval</c> on a <see cref="PeriodicTimer"/> like the worker's InboxSweeper (which runs the
/// same Storage calls):
/// <list type="number">
/// <item>before: the format-1 sweep, every volume directory opened and listed each time (the walk of the release
///   before format 2, kept here as the reference), for <c>window</c>;</item>
/// <item>cleanup: the format-2 sweep on that share, removing empty directories in batches of
///   <see cref="VolumeInbox.RemovalBatch"/>, until none is left;</item>
/// <item>after: the format-2 sweep on the cleaned share, for <c>window</c>.</item>
/// </list>
/// CPU is this process's (<see cref="Process.TotalProcessorTime"/>), so it includes the runtime's own threads, as a
/// worker's would. Entry point: <see cref="MeasureAsync"/>; the pipeline benchmark can call it as it is.
/// </summary>
public static class IdleSweepBench
{
    public const string Scenario = "idle-sweep";

    /// <summary>Builds the share under <paramref name="workDir"/>, runs the three phases, prints a line per phase to
    /// <paramref name="output"/>, and returns the figures. Removes the share it built.</summary>
    public static async Task<IdleSweepFigures> MeasureAsync(string workDir, int volumes, TimeSpan window, TimeSpan interval, TextWriter output, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(output);
        var root = Path.Combine(workDir, "idle-sweep-share");
        Directory.CreateDirectory(root);
        try
        {
            var share = new Share("bench:/idle-sweep", root, null);
            var setup = Stopwatch.StartNew();
            BuildFormat1Share(share, volumes);
            setup.Stop();
            output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"idle-sweep  {volumes} empty format-1 inbox directories built in {setup.Elapsed.TotalSeconds:0.0} s"));

            var format1 = await RunAsync("before (format-1 sweep, every volume directory opened)", interval, s => s.Elapsed < window, () => Format1Walk(share), cancellationToken);
            output.WriteLine($"idle-sweep  {format1}");

            // The format-2 worker meets the share: the marker and format record, then batches until nothing is left.
            ShareMarker.EnsureAvailable(share);
            var left = int.MaxValue;
            var cleanup = await RunAsync("cleanup (format-2 sweep removing the empty directories in batches)", interval, _ => left > 0, () =>
            {
                var survey = Format2Sweep(share);
                left = survey.Empty.Count + survey.EmptyLeft + survey.Leftovers.Count;
            }, cancellationToken);
            output.WriteLine($"idle-sweep  {cleanup}");

            var idle = await RunAsync("after (format-2 sweep, idle share)", interval, s => s.Elapsed < window, () => Format2Sweep(share), cancellationToken);
            output.WriteLine($"idle-sweep  {idle}");
            var directories = Directory.EnumerateFileSystemEntries(Path.Combine(share.WorkerDirectory, "inbox")).Count();
            output.WriteLine($"idle-sweep  inbox folder after the cleanup: {directories} entries");
            return new IdleSweepFigures(volumes, setup.Elapsed, format1, cleanup, idle);
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    /// <summary>What the worker's InboxSweeper does per share: availability, the survey, the batch of removals.</summary>
    private static InboxSurvey Format2Sweep(Share share)
    {
        ShareMarker.EnsureAvailable(share);
        var survey = VolumeInbox.Survey(share, VolumeInbox.RemovalBatch, VolumeInbox.IdleGrace);
        if (survey.Empty.Count > 0 || survey.Leftovers.Count > 0)
        {
            VolumeInbox.RemoveEmpty(share, survey);
        }
        return survey;
    }

    /// <summary>The format-1 sweep (the release before format 2): every volume directory listed for entries.</summary>
    private static int Format1Walk(Share share)
    {
        var root = Path.Combine(share.WorkerDirectory, "inbox");
        var waiting = 0;
        foreach (var dir in Directory.EnumerateDirectories(root, VolumeFileNames.Prefix + "*"))
        {
            if (VolumeFileNames.TryParse(Path.GetFileName(dir), out _, out var kind) && kind == VolumeFileKind.Base
                && Directory.EnumerateFiles(dir, "*.cmd").Count() is var count and > 0)
            {
                waiting += count;
            }
        }
        return waiting;
    }

    private static void BuildFormat1Share(Share share, int volumes)
    {
        var root = Path.Combine(share.WorkerDirectory, "inbox");
        Directory.CreateDirectory(root);
        for (var i = 0; i < volumes; i++)
        {
            var dir = Path.Combine(root, VolumeFileNames.Base(Guid.NewGuid()));
            Directory.CreateDirectory(dir);
            File.WriteAllBytes(Path.Combine(dir, ".append.lock"), []);
            File.WriteAllBytes(Path.Combine(dir, ".drain.lock"), []);
        }
    }

    /// <summary>Sweeps on a timer while <paramref name="goOn"/> says so (it gets the phase's stopwatch); CPU and wall.</summary>
    private static async Task<IdleSweepPhase> RunAsync(string phase, TimeSpan interval, Func<Stopwatch, bool> goOn, Action sweep, CancellationToken cancellationToken)
    {
        using var process = Process.GetCurrentProcess();
        GC.Collect();
        process.Refresh();
        var cpu = process.TotalProcessorTime;
        var wall = Stopwatch.StartNew();
        var sweeps = 0;
        using var timer = new PeriodicTimer(interval);
        do
        {
            sweep();
            sweeps++;
        }
        while (goOn(wall) && await timer.WaitForNextTickAsync(cancellationToken).ConfigureAwait(false) && goOn(wall));
        wall.Stop();
        process.Refresh();
        return new IdleSweepPhase(phase, sweeps, wall.Elapsed, process.TotalProcessorTime - cpu);
    }
}
