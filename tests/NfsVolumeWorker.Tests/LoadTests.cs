using System.Diagnostics;
using System.Globalization;
using System.Text;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Tests.Support;

namespace NfsVolumeWorker.Tests;

/// <summary>Many commands over many volumes from several producers at once: per volume, one producer's
/// commands finish in the order it sent them, and no two operations on a volume ever overlap.</summary>
public sealed class LoadTests(ITestOutputHelper output)
{
    private const long MiB = WorkerTestBed.MiB;
    private const int Publishers = 4;
    private const int VolumesPerPublisher = 25;

    /// <summary>20 commands for one volume, in the order they must run. Out of order, some would fail
    /// (a snapshot of a volume not yet created, an extend to a smaller size, a delete of an unknown snapshot
    /// done before its create would leave the snapshot behind).</summary>
    internal static List<VolumeCommand> Script(Guid vol)
    {
        var snaps = Enumerable.Range(0, 6).Select(_ => Guid.NewGuid()).ToArray();
        var list = new List<VolumeCommand> { new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = vol, SizeBytes = 1 * MiB } };
        for (var i = 0; i < 6; i++)
        {
            list.Add(new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = vol, SnapshotId = snaps[i] });
            list.Add(new ExtendVolume { CommandId = Guid.NewGuid(), VolumeId = vol, NewSizeBytes = (2 + i) * MiB });
        }
        foreach (var i in new[] { 2, 0, 4, 5, 1, 3 })
        {
            list.Add(new DeleteSnapshot { CommandId = Guid.NewGuid(), VolumeId = vol, SnapshotId = snaps[i] });
        }
        list.Add(new DeleteVolume { CommandId = Guid.NewGuid(), VolumeId = vol });
        return list;
    }

    internal static Task Publish(CommandBus bus, VolumeCommand c) => c switch
    {
        CreateVolume x => bus.PublishAsync(x),
        CreateSnapshot x => bus.PublishAsync(x),
        ExtendVolume x => bus.PublishAsync(x),
        DeleteSnapshot x => bus.PublishAsync(x),
        DeleteVolume x => bus.PublishAsync(x),
        _ => throw new ArgumentException(c.GetType().Name),
    };

    [Fact]
    public async Task Two_thousand_commands_over_a_hundred_volumes_from_four_producers_run_in_order_without_overlap()
    {
        await using var bed = await WorkerTestBed.StartAsync(output, "load");
        var producers = new List<CommandBus>();
        for (var p = 0; p < Publishers; p++)
        {
            producers.Add(await CommandBus.StartAsync(bed.VirtualHost.AmqpUri, $"load-producer-{p}"));
        }
        try
        {
            var scripts = Enumerable.Range(0, Publishers).Select(_ => Enumerable.Range(0, VolumesPerPublisher).Select(_ => Guid.NewGuid()).ToDictionary(v => v, Script)).ToList();
            var all = scripts.SelectMany(s => s.Values.SelectMany(c => c)).ToList();
            Assert.True(all.Count >= 2000);

            var sw = Stopwatch.StartNew();
            // Each producer goes round its own volumes, one step at a time: its commands for one volume are
            // interleaved with its commands for the others, and with the other producers'.
            await Task.WhenAll(scripts.Select((script, p) => Task.Run(async () =>
            {
                for (var step = 0; step < 20; step++)
                {
                    foreach (var commands in script.Values)
                    {
                        await Publish(producers[p], commands[step]);
                    }
                }
            })));
            var published = sw.Elapsed;
            await bed.Events.WaitForAllAsync(all.Select(c => c.CommandId).ToList(), TimeSpan.FromMinutes(4));
            var elapsed = sw.Elapsed;

            var repeats = bed.Events.AssertOneTerminalEventEach(all.Select(c => c.CommandId));
            var failures = bed.Events.Terminal.Where(e => e.Type == nameof(CommandFailed)).ToList();
            var violations = bed.Events.OrderingViolations(scripts.SelectMany(s => s.Values));
            var overlaps = bed.Worker.Engine.OverlapsDetected;
            var rate = all.Count / elapsed.TotalSeconds;

            var report = new StringBuilder()
                .AppendLine(CultureInfo.InvariantCulture, $"load test: {all.Count} commands, {Publishers * VolumesPerPublisher} volumes, {Publishers} producers, 1 worker (in-process, MaxParallelVolumes 8, {WorkerSettings.Partitions} partitions)")
                .AppendLine(CultureInfo.InvariantCulture, $"published in {published.TotalSeconds:0.0} s; all terminal events after {elapsed.TotalSeconds:0.0} s: {rate:0.0} commands/s")
                .AppendLine(CultureInfo.InvariantCulture, $"ordering violations (volumes whose events differ from send order): {violations}; overlaps: {overlaps}; failed commands: {failures.Count}; repeated terminal events: {repeats}")
                .AppendLine(CultureInfo.InvariantCulture, $"machine: {Environment.ProcessorCount} cpus (nproc), {Environment.OSVersion}, .NET {Environment.Version}, {DateTimeOffset.UtcNow:yyyy-MM-dd HH:mm} UTC")
                .ToString();
            output.WriteLine(report);
            var root = NfsVolumeWorker.Testing.RepositoryRoot.TryFind() ?? AppContext.BaseDirectory;
            Directory.CreateDirectory(Path.Combine(root, "TestResults"));
            await File.WriteAllTextAsync(Path.Combine(root, "TestResults", "load-test.txt"), report);

            Assert.True(failures.Count == 0, string.Join(Environment.NewLine, failures.Take(5)));
            Assert.Equal(0, violations);
            Assert.Equal(0, overlaps);
            Assert.Empty(Directory.EnumerateFiles(bed.Share, "volume-*"));
            Assert.Equal("", await Tools.CheckShareAsync(bed.Share));
        }
        finally
        {
            foreach (var p in producers)
            {
                await p.DisposeAsync();
            }
        }
    }
}
