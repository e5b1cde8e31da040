using System.Runtime.InteropServices;
using NfsVolumeWorker.Benchmarks;
using NfsVolumeWorker.PipelineBenchmark;
using NfsVolumeWorker.Testing;

PipelineSettings settings;
try
{
    settings = PipelineSettings.Parse(args);
}
catch (ArgumentException e)
{
    await Console.Error.WriteLineAsync(e.Message);
    return 2;
}
if (settings.Help)
{
    Console.WriteLine(PipelineSettings.Usage);
    return 0;
}

// Ctrl-C and SIGTERM end the run through the finally blocks: worker killed, FUSE unmounted, broker stopped, directory removed.
using var cancel = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) =>
{
    e.Cancel = true;
    Console.Error.WriteLine("interrupted: stopping what the benchmark started ...");
    cancel.Cancel();
};
using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c =>
{
    c.Cancel = true;
    cancel.Cancel();
});

var work = Path.Combine(settings.ParentDir, $"nfsvol-pipeline-{Environment.ProcessId}");
Directory.CreateDirectory(work);
var logDir = Path.Combine(settings.ParentDir, $"nfsvol-pipeline-{Environment.ProcessId}-logs");
Directory.CreateDirectory(logDir);
var report = new Report();
PipelineFigures.DefineRows(report, settings);
var status = 0;
try
{
    await Machine.PrintFactsAsync(work, Console.Out);
    Console.WriteLine($"settings    {(settings.Quick ? "--quick " : "")}figures {string.Join(",", settings.Only.Order())}; shares {string.Join(",", settings.Shares)}; " +
        $"samples {settings.Samples}; storm {settings.StormVolumes} volumes x (1 + {settings.StormPairs} pairs), {settings.Publishers} publishers; " +
        $"cinder {settings.CinderPairs} pairs; clone {settings.CloneGiB} GiB; idle {settings.IdleVolumes} dirs / {settings.IdleSeconds} s; queued {settings.Queued}" +
        (settings.WorkerArgs.Count > 0 ? $"; worker args {string.Join(' ', settings.WorkerArgs)}" : ""));
    Console.WriteLine($"logs        {logDir} (worker logs; removed unless a figure failed or --keep)");
    await using var broker = await RabbitMqBroker.StartDedicatedAsync();
    Console.Error.WriteLine($"broker: {broker}");
    foreach (var kind in settings.Shares)
    {
        cancel.Token.ThrowIfCancellationRequested();
        BenchShare share;
        try
        {
            share = kind switch
            {
                "local" => BenchShare.Local(Path.Combine(work, "local")),
                "ext4" => BenchShare.LoopExt4(Path.Combine(work, "ext4")),
                _ => await BenchShare.MountDelayedAsync(Path.Combine(work, "fuse"), settings.FuseDelayMs, cancel.Token),
            };
        }
        catch (HarnessException e)
        {
            // One column that cannot be set up (no FUSE here) leaves the other one's figures.
            report.Note($"share {kind} not measured: {e.Message}");
            status = 1;
            continue;
        }
        await using var mounted = share;
        Console.Error.WriteLine($"== share {share.Name}: {share.Path}");
        await new PipelineFigures(settings, broker, share, logDir, report).RunAsync(cancel.Token);
    }
}
catch (OperationCanceledException) when (cancel.IsCancellationRequested)
{
    report.Note("interrupted: the figures above are incomplete");
    status = 130;
}
catch (HarnessException e)
{
    report.Note("benchmark failed: " + e.Message);
    status = 1;
}
finally
{
    report.Print(Console.Out);
    if (!settings.Keep)
    {
        Console.Error.WriteLine($"removing {work} (with figure e's inbox directories this takes a while) ...");
        Directory.Delete(work, recursive: true);
        if (!report.HasFailures)
        {
            Directory.Delete(logDir, recursive: true);
        }
    }
}
return status;
