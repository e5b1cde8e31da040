using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using NfsVolumeWorker.Benchmarks;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Testing;

namespace NfsVolumeWorker.PipelineBenchmark;

/// <summary>The figures of issue #9's "Performance targets", measured on one share (one column of the table).</summary>
internal sealed class PipelineFigures(PipelineSettings settings, RabbitMqBroker broker, BenchShare share, string logDir, Report report)
{
    private const long VolumeBytes = 1L << 30;

    /// <summary>The worker's fsync counter as the Prometheus exporter names it (StorageTelemetry.Syncs).</summary>
    private const string SyncsMetric = "nfsvolumeworker_storage_syncs_total";

    /// <summary>The worker's own histograms (sum and count) for figure a's breakdown: the engine operation, and the
    /// command from its start to its terminal event confirmed (WorkerTelemetry.CommandDuration).</summary>
    private const string EngineMetric = "nfsvolumeworker_operation_duration_seconds";
    private const string CommandMetric = "nfsvolumeworker_command_duration_seconds";

    /// <summary>The runtime's JIT time so far (the System.Runtime meter the worker exports).</summary>
    private const string JitTimeMetric = "dotnet_jit_compilation_time_seconds_total";

    private string Column => share.Name;

    public static void DefineRows(Report report, PipelineSettings settings)
    {
        report.Row("a.create.p50", "a snapshot create p50 (vs qemu-img create)", "<= 0.5x floor");
        report.Row("a.create.p99", "a snapshot create p99 (vs the floor's p99)", "<= 1.0x floor");
        report.Row("a.create.p99m", "a snapshot create p99 (vs the floor's p50)", "");
        report.Row("a.delete.p50", "a delete newest p50 (vs qemu-img commit -d)", "<= 0.5x floor");
        report.Row("a.delete.p99", "a delete newest p99 (vs the floor's p99)", "<= 1.0x floor");
        report.Row("a.delete.p99m", "a delete newest p99 (vs the floor's p50)", "");
        report.Row("a.broker", "a broker's 3 hops alone p50 (vs qemu-img create)", "");
        report.Row("a.worker", "a the worker's part, mean: engine | run to event confirmed", "");
        report.Row("a.floor.create", "a floor p99: qemu-img create", "");
        report.Row("a.floor.commit", "a floor p99: qemu-img commit -d", "");
        report.Row("a.fsync", "a the disk alone: 4 KiB write+fsync p50 | p99", "");
        report.Row("b.rate", "b storm commands/s (floor: Cinder serial)", ">= 300, >= 50x");
        report.Row("b.order", "b storm per-volume order / failures", "intact, 0");
        report.Row("b.cpu", "b storm CPU per command: worker | whole machine", "");
        report.Row("c.serial", "c syncs per snapshot command, serial (a)", "");
        report.Row("c.storm", "c syncs per command, amortised (storm b)", "<= 4");
        report.Row("c.qemu", "c qemu-img's own syncs: create | commit -d", "");
        report.Row("d.p99", "d p99 on B, clone of A in B's partition", "<= 2x unloaded");
        report.Row("d.p50", "d p50 on B, clone running | unloaded", "");
        report.Row("d.clone", "d clone of A: duration, B commands during it", "");
        report.Row("d.fsync", "d the disk alone: 4 KiB write+fsync p99, clone | idle", "");
        if (settings.CloneLimitMBps > 0)
        {
            report.Row("dl.p99", $"d, copy at most {settings.CloneLimitMBps} MB/s: p99 on B", "<= 2x unloaded");
            report.Row("dl.p50", "d, copy limited: p50 on B, clone | unloaded", "");
            report.Row("dl.clone", "d, copy limited: duration, B commands during it", "");
            report.Row("dl.fsync", "d, copy limited: the disk alone, clone | idle", "");
        }
        report.Row("e.idle", "e idle CPU, inbox with N volume dirs", "<= 1% core");
        report.Row("f.rss", "f worker max RSS with N commands queued", "<= 200 MiB");
        report.Row("f.queued", "f published, finished while measured", "");
    }

    public async Task RunAsync(CancellationToken ct)
    {
        if (settings.RunsLatency || settings.RunsStorm || settings.Includes("d"))
        {
            var (path, backing) = share.Subdirectory("main");
            await using var session = await WorkerSession.StartAsync(broker, "main-" + Slug, path, backing, logDir, settings, ct);
            if (settings.RunsLatency)
            {
                await GuardAsync("a", () => LatencyAsync(session, ct));
            }
            if (settings.RunsStorm)
            {
                await GuardAsync("b", () => StormAsync(session, ct));
            }
            if (settings.Includes("c"))
            {
                await GuardAsync("c", () => QemuImgSyncsAsync(session, ct));
            }
            if (settings.Includes("d"))
            {
                await GuardAsync("d", () => HeadOfLineAsync(session, "d", ct));
            }
        }
        if (settings.Includes("d") && settings.CloneLimitMBps > 0)
        {
            // The same figure with the operator's trade: a worker whose full copies are rate-limited.
            var bytesPerSecond = (long)(settings.CloneLimitMBps * 1e6);
            var limited = settings with { WorkerArgs = [.. settings.WorkerArgs, $"--Engine:CopyBytesPerSecond={bytesPerSecond}"] };
            var (path, backing) = share.Subdirectory("limited");
            await using var session = await WorkerSession.StartAsync(broker, "limited-" + Slug, path, backing, logDir, limited, ct);
            await GuardAsync("dl", () => HeadOfLineAsync(session, "dl", ct));
        }
        if (settings.Includes("e"))
        {
            await GuardAsync("e", () => IdleSweepAsync(ct));
        }
        if (settings.Includes("f"))
        {
            await GuardAsync("f", () => QueuedMemoryAsync(ct));
        }
    }

    private string Slug => share.Name.StartsWith("fuse", StringComparison.Ordinal) ? "fuse" : share.Name.StartsWith("ext4", StringComparison.Ordinal) ? "ext4" : "local";

    private async Task GuardAsync(string figure, Func<Task> run)
    {
        try
        {
            await run();
        }
        catch (Exception e) when (e is HarnessException or IOException or HttpRequestException or TimeoutException or UnauthorizedAccessException
            or JsonException or System.ComponentModel.Win32Exception or RabbitMQ.Client.Exceptions.RabbitMQClientException or InvalidOperationException)
        {
            report.Fail(figure, Column, e.Message);
        }
    }

    // ---- a (and c, serial): publish -> terminal event against the bare qemu-img process ----------------------

    private async Task LatencyAsync(WorkerSession s, CancellationToken ct)
    {
        var volume = Guid.NewGuid();
        await s.Driver.RunFirstAsync(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = volume, SizeBytes = VolumeBytes, Format = VolumeFormat.Raw }, settings.CommandTimeout, ct);
        var floorVolume = CreateRawVolume(s.SharePath, Guid.NewGuid());
        var warmUp = 2;
        var creates = new List<TimeSpan>();
        var deletes = new List<TimeSpan>();
        var floorCreates = new List<TimeSpan>();
        var floorCommits = new List<TimeSpan>();
        var hops = new List<TimeSpan>();
        var bareSyncs = new List<TimeSpan>();
        await using var brokerHops = await BrokerHops.OpenAsync(s.VirtualHost.AmqpUri, ct);
        var syncs0 = await s.Worker.CounterAsync(SyncsMetric, ct);
        var engine0 = await s.Worker.HistogramAsync(EngineMetric, ct);
        var command0 = await s.Worker.HistogramAsync(CommandMetric, ct);
        for (var i = 0; i < warmUp + settings.Samples; i++)
        {
            // Interleaved, so the pipeline and its floor share whatever else the machine is doing at that moment.
            var snapshot = Guid.NewGuid();
            var create = await s.Driver.RunAsync(new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = volume, SnapshotId = snapshot }, settings.CommandTimeout, ct);
            var overlay = Path.Combine(s.SharePath, $"volume-{floorVolume:D}.{Guid.NewGuid():D}");
            var floorCreate = await TimeAsync("qemu-img", ["create", "-q", "-f", "qcow2", "-b", $"volume-{floorVolume:D}", "-F", "raw", "-u", overlay, VolumeBytes.ToString(CultureInfo.InvariantCulture)]);
            var delete = await s.Driver.RunAsync(new DeleteSnapshot { CommandId = Guid.NewGuid(), VolumeId = volume, SnapshotId = snapshot }, settings.CommandTimeout, ct);
            var floorCommit = await TimeAsync("qemu-img", ["commit", "-f", "qcow2", "-d", "-q", overlay]);
            File.Delete(overlay);
            var hop = await brokerHops.RoundTripAsync(settings.CommandTimeout, ct);
            var bareSync = (await SyncLatenciesAsync(s.BackingPath, () => false, TimeSpan.Zero, ct, samples: 1))[0];
            if (i >= warmUp)
            {
                bareSyncs.Add(bareSync);
                creates.Add(create);
                deletes.Add(delete);
                floorCreates.Add(floorCreate);
                floorCommits.Add(floorCommit);
                hops.Add(hop);
            }
        }
        var syncs = await SettledCounterAsync(s.Worker, ct) - syncs0;
        var engine = await s.Worker.HistogramAsync(EngineMetric, ct) - engine0;
        var command = await s.Worker.HistogramAsync(CommandMetric, ct) - command0;
        report.Set("a.worker", Column, new Cell(Report.Ms(engine.Mean), Report.Ms(command.Mean)));
        Latency("a.create", creates, floorCreates);
        Latency("a.delete", deletes, floorCommits);
        var hops50 = Percentile(hops, 0.5);
        report.Set("a.broker", Column, new Cell(Report.Ms(hops50), Report.Ms(Percentile(floorCreates, 0.5)), Report.Times(hops50 / Percentile(floorCreates, 0.5))));
        report.Set("a.floor.create", Column, new Cell(Report.Ms(Percentile(floorCreates, 0.99))));
        report.Set("a.floor.commit", Column, new Cell(Report.Ms(Percentile(floorCommits, 0.99))));
        report.Set("a.fsync", Column, new Cell(Report.Ms(Percentile(bareSyncs, 0.5)), Report.Ms(Percentile(bareSyncs, 0.99))));
        report.Set("c.serial", Column, new Cell(Report.Number(syncs / (2.0 * (warmUp + settings.Samples)), "F2")));
    }

    /// <summary>Each percentile against the same percentile of the floor (the one qemu-img process Cinder cannot
    /// avoid, timed interleaved with the pipeline, so both see the machine's same moments), and the p99 also against
    /// the floor's median, the stricter reading this benchmark printed first.</summary>
    private void Latency(string key, List<TimeSpan> pipeline, List<TimeSpan> floor)
    {
        foreach (var (suffix, q, floorQ, limit) in new[] { ("p50", 0.5, 0.5, 0.5), ("p99", 0.99, 0.99, 1.0), ("p99m", 0.99, 0.5, double.NaN) })
        {
            var value = Percentile(pipeline, q);
            var floorValue = Percentile(floor, floorQ);
            var ratio = value / floorValue;
            report.Set($"{key}.{suffix}", Column, new Cell(Report.Ms(value), Report.Ms(floorValue), Report.Times(ratio), double.IsNaN(limit) ? null : ratio <= limit));
        }
    }

    // ---- b (and c, amortised): the storm from several publishers against Cinder's driver run serially --------

    /// <summary>A smaller storm first, untimed for the figure: a worker that has just started runs much of this path
    /// for the first time, and spends a third of its CPU in the JIT and the runtime's tiering (perf, 2026-12-06) until
    /// its hot code is compiled; a worker that has run for a minute does not. Its rate is printed as a note.</summary>
    private async Task StormAsync(WorkerSession s, CancellationToken ct)
    {
        if (settings.StormWarmUpVolumes > 0)
        {
            var cold = await StormRoundAsync(s, settings.StormWarmUpVolumes, ct);
            report.Note($"[{Column}] storm warm-up (a worker that has just started, not the figure): {cold.Commands} commands over {settings.StormWarmUpVolumes} volumes, {cold.Rate:F1} commands/s, CPU per command {Report.Ms(cold.WorkerCpu)} in the worker, {Report.Ms(cold.MachineCpu)} in all");
        }
        var storm = await StormRoundAsync(s, settings.StormVolumes, ct);
        report.Note($"[{Column}] storm: {storm.Commands} commands over {settings.StormVolumes} volumes from {s.Driver.Publishers} publishers, published in {storm.Published.TotalSeconds:F1} s, all terminal events in {storm.Elapsed.TotalSeconds:F1} s");
        if (storm.FirstFailure is not null)
        {
            report.Note($"[{Column}] storm: first failure: {storm.FirstFailure}");
        }
        report.Set("b.order", Column, new Cell(storm.OutOfOrder == 0 ? "intact" : $"{storm.OutOfOrder} out", storm.Failures.ToString(CultureInfo.InvariantCulture) + " failed", "", storm.OutOfOrder == 0 && storm.Failures == 0));
        report.Set("b.cpu", Column, new Cell(Report.Ms(storm.WorkerCpu), Report.Ms(storm.MachineCpu)));
        report.Set("c.storm", Column, new Cell(Report.Number(storm.Syncs, "F2"), "", "", storm.Syncs <= 4));

        var cinder = await CinderSerialAsync(ct);
        var ratio = storm.Rate / cinder;
        report.Set("b.rate", Column, new Cell(Report.Number(storm.Rate), Report.Number(cinder, "F2"), Report.Times(ratio), storm.Rate >= 300 && ratio >= 50));
    }

    /// <summary>What one storm measured: its rate, order, failures, syncs and CPU per command.</summary>
    private sealed record StormResult(int Commands, TimeSpan Published, TimeSpan Elapsed, int OutOfOrder, int Failures, string? FirstFailure,
        double Syncs, TimeSpan WorkerCpu, TimeSpan MachineCpu)
    {
        public double Rate => Commands / Elapsed.TotalSeconds;
    }

    /// <summary>Creates <paramref name="volumeCount"/> volumes and runs their snapshot pairs, from every publisher at once.</summary>
    private async Task<StormResult> StormRoundAsync(WorkerSession s, int volumeCount, CancellationToken ct)
    {
        var volumes = Enumerable.Range(0, volumeCount).Select(_ => Guid.NewGuid()).ToArray();
        var perVolume = volumes.Select(v =>
        {
            var list = new List<VolumeCommand> { new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = v, SizeBytes = VolumeBytes, Format = VolumeFormat.Raw } };
            for (var p = 0; p < settings.StormPairs; p++)
            {
                var snapshot = Guid.NewGuid();
                list.Add(new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = v, SnapshotId = snapshot });
                list.Add(new DeleteSnapshot { CommandId = Guid.NewGuid(), VolumeId = v, SnapshotId = snapshot });
            }
            return list;
        }).ToArray();
        var position = new Dictionary<Guid, (int Volume, int Index)>();
        for (var v = 0; v < perVolume.Length; v++)
        {
            for (var i = 0; i < perVolume[v].Count; i++)
            {
                position[perVolume[v][i].CommandId] = (v, i);
            }
        }
        var lastSeen = Enumerable.Repeat(-1, volumes.Length).ToArray();
        var outOfOrder = 0;
        s.Driver.OnTerminal = a =>
        {
            if (position.TryGetValue(a.Event.CommandId, out var at))
            {
                lock (lastSeen)
                {
                    // Each volume's events must come in the order its commands were published, none skipped.
                    if (at.Index != lastSeen[at.Volume] + 1)
                    {
                        outOfOrder++;
                    }
                    lastSeen[at.Volume] = Math.Max(lastSeen[at.Volume], at.Index);
                }
            }
        };
        var total = position.Count;
        var expected = perVolume.SelectMany(c => c).Select(c => s.Driver.Expect(c.CommandId)).ToList();
        var syncs0 = await s.Worker.CounterAsync(SyncsMetric, ct);
        var workerCpu0 = s.Worker.CpuSeconds();
        var machineCpu0 = Machine.BusyCpuSeconds();
        var start = Stopwatch.GetTimestamp();
        // Publisher p owns volumes p, p+n, ...; it sends round by round (every volume's first command, then every
        // volume's second, ...), so the worker sees many volumes at once and each volume's commands in order.
        var publishers = Enumerable.Range(0, s.Driver.Publishers).Select(p => Task.Run(async () =>
        {
            var mine = Enumerable.Range(0, volumes.Length).Where(v => v % s.Driver.Publishers == p).ToList();
            for (var round = 0; round < 1 + (2 * settings.StormPairs); round++)
            {
                foreach (var v in mine)
                {
                    await s.Driver.PublishAsync(p, perVolume[v][round], ct);
                }
            }
        }, ct)).ToList();
        await Task.WhenAll(publishers);
        var published = Stopwatch.GetElapsedTime(start);
        var timeout = settings.CommandTimeout + TimeSpan.FromSeconds(total);
        Arrival[] arrivals;
        try
        {
            arrivals = await Task.WhenAll(expected).WaitAsync(timeout, ct);
        }
        catch (TimeoutException)
        {
            throw new HarnessException($"storm: {expected.Count(t => t.IsCompleted)} of {total} terminal events within {timeout.TotalSeconds:F0} s");
        }
        finally
        {
            s.Driver.OnTerminal = null;
        }
        var elapsed = Stopwatch.GetElapsedTime(start, arrivals.Max(a => a.At));
        var workerCpu = s.Worker.CpuSeconds() - workerCpu0;
        var machineCpu = Machine.BusyCpuSeconds() - machineCpu0;
        var failures = arrivals.Where(a => a.Event.IsFailure).ToList();
        var syncs = await SettledCounterAsync(s.Worker, ct) - syncs0;
        return new StormResult(total, published, elapsed, outOfOrder, failures.Count, failures.FirstOrDefault()?.Event.Message.ToJsonString(),
            syncs / total, TimeSpan.FromSeconds(workerCpu / total), TimeSpan.FromSeconds(machineCpu / total));
    }

    /// <summary>Cinder's driver, serially, on the same kind of files (ops/bench/cinder-serial-storm): commands/s.</summary>
    private async Task<double> CinderSerialAsync(CancellationToken ct)
    {
        var (path, _) = share.Subdirectory("cinder-" + Guid.NewGuid().ToString("N")[..8]);
        var volumes = (int)Math.Ceiling(settings.CinderPairs / (double)settings.StormPairs);
        var script = Path.Combine(RepositoryRoot.Find(), "ops", "bench", "cinder-serial-storm");
        var r = await Proc.RunAsync(script, ["--dir", path, "--volumes", volumes.ToString(CultureInfo.InvariantCulture), "--pairs", settings.StormPairs.ToString(CultureInfo.InvariantCulture)]);
        ct.ThrowIfCancellationRequested();
        using var json = JsonDocument.Parse(r.Stdout);
        var commands = json.RootElement.GetProperty("commands").GetDouble();
        var seconds = json.RootElement.GetProperty("seconds").GetDouble();
        report.Note($"[{Column}] Cinder serial: {commands} commands ({volumes} volumes x (create + {settings.StormPairs} pairs)) in {seconds:F1} s");
        return commands / seconds;
    }

    // ---- c: qemu-img's own syncs ------------------------------------------------------------------------------

    private async Task QemuImgSyncsAsync(WorkerSession s, CancellationToken ct)
    {
        if (!File.Exists("/usr/bin/strace"))
        {
            report.Set("c.qemu", Column, new Cell("no strace"));
            report.Note("strace is not installed (apt-get install strace): qemu-img's own syncs not counted");
            return;
        }
        var volume = CreateRawVolume(s.SharePath, Guid.NewGuid());
        var overlay = Path.Combine(s.SharePath, $"volume-{volume:D}.{Guid.NewGuid():D}");
        var create = await StraceSyncsAsync(["create", "-q", "-f", "qcow2", "-b", $"volume-{volume:D}", "-F", "raw", "-u", overlay, VolumeBytes.ToString(CultureInfo.InvariantCulture)]);
        var commit = await StraceSyncsAsync(["commit", "-f", "qcow2", "-d", "-q", overlay]);
        ct.ThrowIfCancellationRequested();
        report.Set("c.qemu", Column, new Cell($"{create} | {commit}"));
    }

    /// <summary>fsync, fdatasync and syncfs calls of one qemu-img run and its threads (strace -f -c).</summary>
    private static async Task<long> StraceSyncsAsync(string[] qemuArgs)
    {
        var output = Path.GetTempFileName();
        try
        {
            await Proc.RunAsync("strace", ["-f", "-c", "-e", "trace=fsync,fdatasync,syncfs", "-o", output, "qemu-img", .. qemuArgs]);
            long calls = 0;
            foreach (var line in File.ReadLines(output))
            {
                var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                // "% time seconds usecs/call calls [errors] syscall": the calls column of each syscall's line.
                if (f.Length >= 5 && f[^1] is "fsync" or "fdatasync" or "syncfs" && long.TryParse(f[3], CultureInfo.InvariantCulture, out var n))
                {
                    calls += n;
                }
            }
            return calls;
        }
        finally
        {
            File.Delete(output);
        }
    }

    // ---- d: head-of-line ----------------------------------------------------------------------------------------

    /// <summary>Figure d, its rows under <paramref name="key"/> (<c>d</c>, or <c>dl</c> for the rate-limited pass).</summary>
    private async Task HeadOfLineAsync(WorkerSession s, string key, CancellationToken ct)
    {
        var pass = key == "d" ? "head-of-line" : $"head-of-line, copy at most {settings.CloneLimitMBps} MB/s";
        var a = Guid.NewGuid();
        var partition = PartitionKey.PartitionOf(a, WorkerUnderTest.PartitionCount);
        Guid b;
        do
        {
            b = Guid.NewGuid();
        }
        while (PartitionKey.PartitionOf(b, WorkerUnderTest.PartitionCount) != partition);
        var cloneBytes = (long)(settings.CloneGiB * (1L << 30));
        var fill = Stopwatch.StartNew();
        await WriteDataVolumeAsync(Path.Combine(s.BackingPath, $"volume-{a:D}"), cloneBytes, ct);
        // A's data on disk, not in the page cache, as a volume cloned long after it was written would be (a full
        // run only: dropping the cache slows everyone else on a shared machine, which is where --quick runs).
        var dropped = false;
        if (settings.Quick)
        {
            Machine.Sync();
        }
        else
        {
            dropped = Machine.TryDropCaches();
        }
        report.Note($"[{Column}] {pass}: volume A ({settings.CloneGiB} GiB of data) written in {fill.Elapsed.TotalSeconds:F1} s; A and B in partition {partition}; " +
            (dropped ? "page cache dropped" : "A may still be in the page cache (--quick, or not root)"));
        await s.Driver.RunAsync(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = b, SizeBytes = VolumeBytes, Format = VolumeFormat.Raw }, settings.CommandTimeout, ct);

        // A share's first full copy of at least the probe's size (256 MiB) measures its copy modes (six scratch copies
        // of 256 MiB, once a day): done here, with a clone of a 256 MiB volume, so that the figure is the steady state
        // and not that once-a-day measurement.
        var warmUpSource = Guid.NewGuid();
        await WriteDataVolumeAsync(Path.Combine(s.BackingPath, $"volume-{warmUpSource:D}"), 256L << 20, ct);
        var warmUp = new CloneVolume { CommandId = Guid.NewGuid(), VolumeId = warmUpSource, NewVolumeId = Guid.NewGuid() };
        var warmUpTime = await s.Driver.RunAsync(warmUp, settings.CommandTimeout, ct);
        foreach (var leftover in Directory.EnumerateFiles(s.BackingPath, $"volume-{warmUpSource:D}*")
                     .Concat(Directory.EnumerateFiles(s.BackingPath, $"volume-{warmUp.NewVolumeId:D}*")))
        {
            File.Delete(leftover);
        }
        report.Note($"[{Column}] {pass}: a first clone (of 256 MiB) measured the share's copy modes in {warmUpTime.TotalSeconds:F1} s before anything was timed");
        var unloaded = new List<TimeSpan>();
        for (var i = 0; i < settings.Samples; i++)
        {
            unloaded.AddRange(await SnapshotPairAsync(s, b, ct));
        }
        // The disk's own share of the figure: what one small durable write costs beside the clone, against idle (6 s: the
        // p99 of 2 s, about 100 writes, was their one slowest).
        var fsyncIdle = await SyncLatenciesAsync(s.BackingPath, () => false, TimeSpan.FromSeconds(settings.Quick ? 2 : 6), ct);

        var clone = new CloneVolume { CommandId = Guid.NewGuid(), VolumeId = a, NewVolumeId = Guid.NewGuid() };
        var cloneDone = s.Driver.Expect(clone.CommandId);
        var cloneStart = Stopwatch.GetTimestamp();
        await s.Driver.PublishAsync(0, clone, ct);
        var fsyncDuring = SyncLatenciesAsync(s.BackingPath, () => cloneDone.IsCompleted, TimeSpan.FromHours(1), ct);
        var loaded = new List<(TimeSpan Latency, long End)>();
        while (!cloneDone.IsCompleted)
        {
            // The pair runs one after the other: each command ends where the time so far ends.
            var end = Stopwatch.GetTimestamp();
            foreach (var t in await SnapshotPairAsync(s, b, ct))
            {
                end += (long)(t.TotalSeconds * Stopwatch.Frequency);
                loaded.Add((t, end));
            }
        }
        var cloneEnd = (await s.Driver.WaitAsync(cloneDone, clone, settings.CommandTimeout, ct)).At;
        // Only commands that ran while the clone did: those finished after it had nothing to wait behind.
        var during = loaded.Where(x => x.End <= cloneEnd).Select(x => x.Latency).ToList();
        var cloneSeconds = Stopwatch.GetElapsedTime(cloneStart, cloneEnd).TotalSeconds;
        report.Set($"{key}.clone", Column, new Cell($"{cloneSeconds:F1} s", $"{during.Count} cmds"));
        foreach (var leftover in Directory.EnumerateFiles(s.BackingPath, $"volume-{clone.NewVolumeId:D}*"))
        {
            File.Delete(leftover);
        }
        File.Delete(Path.Combine(s.BackingPath, $"volume-{a:D}"));
        if (during.Count == 0)
        {
            // The first command on B was still waiting when the clone ended: its whole wait is the figure.
            during = [.. loaded.Take(1).Select(x => x.Latency)];
        }
        if (during.Count == 0)
        {
            throw new HarnessException("no command on B finished while the clone ran (clone too short: raise --clone-gib)");
        }
        if (key == "d")
        {
            report.Row("d.p99", $"d p99 on B, {settings.CloneGiB} GiB clone of A same partition", "<= 2x unloaded");
        }
        var p99Loaded = Percentile(during, 0.99);
        var p99Unloaded = Percentile(unloaded, 0.99);
        var ratio = p99Loaded / p99Unloaded;
        report.Set($"{key}.p99", Column, new Cell(Report.Ms(p99Loaded), Report.Ms(p99Unloaded), Report.Times(ratio), ratio <= 2));
        var p50Loaded = Percentile(during, 0.5);
        var p50Unloaded = Percentile(unloaded, 0.5);
        report.Set($"{key}.p50", Column, new Cell(Report.Ms(p50Loaded), Report.Ms(p50Unloaded), Report.Times(p50Loaded / p50Unloaded)));
        var during99 = Percentile(await fsyncDuring, 0.99);
        var idle99 = Percentile(fsyncIdle, 0.99);
        report.Set($"{key}.fsync", Column, new Cell(Report.Ms(during99), Report.Ms(idle99), Report.Times(during99 / idle99)));
    }

    /// <summary>A 4 KiB write and fsync of one file in <paramref name="directory"/> every 20 ms, until
    /// <paramref name="stop"/> or <paramref name="limit"/> (at least <paramref name="samples"/>): the latency of the
    /// smallest durable write.</summary>
    private static async Task<List<TimeSpan>> SyncLatenciesAsync(string directory, Func<bool> stop, TimeSpan limit, CancellationToken ct, int samples = 0)
    {
        var path = Path.Combine(directory, $"fsync-probe-{Guid.NewGuid():N}");
        var block = new byte[4096];
        var latencies = new List<TimeSpan>();
        var started = Stopwatch.GetTimestamp();
        try
        {
            await using var file = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1, FileOptions.None);
            while (latencies.Count < samples || (!stop() && Stopwatch.GetElapsedTime(started) < limit))
            {
                var t = Stopwatch.GetTimestamp();
                file.Position = 0;
                file.Write(block);
                file.Flush(flushToDisk: true);
                latencies.Add(Stopwatch.GetElapsedTime(t));
                if (latencies.Count >= samples && (stop() || Stopwatch.GetElapsedTime(started) >= limit))
                {
                    break;
                }
                await Task.Delay(20, ct);
            }
        }
        finally
        {
            File.Delete(path);
        }
        return latencies;
    }

    private async Task<TimeSpan[]> SnapshotPairAsync(WorkerSession s, Guid volume, CancellationToken ct)
    {
        var snapshot = Guid.NewGuid();
        var create = await s.Driver.RunAsync(new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = volume, SnapshotId = snapshot }, settings.CommandTimeout, ct);
        var delete = await s.Driver.RunAsync(new DeleteSnapshot { CommandId = Guid.NewGuid(), VolumeId = volume, SnapshotId = snapshot }, settings.CommandTimeout, ct);
        return [create, delete];
    }

    /// <summary>A raw volume full of data (not zeros: qemu-img skips zeroes), so a clone of it has to copy every byte.</summary>
    private static async Task WriteDataVolumeAsync(string path, long bytes, CancellationToken ct)
    {
        var block = new byte[1 << 20];
        Random.Shared.NextBytes(block);
        await using var stream = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20, useAsync: true);
        for (long written = 0; written < bytes; written += block.Length)
        {
            block[0]++; // no two megabytes alike
            await stream.WriteAsync(block.AsMemory(0, (int)Math.Min(block.Length, bytes - written)), ct);
        }
        await stream.FlushAsync(ct);
    }

    // ---- e: idle sweep -----------------------------------------------------------------------------------------

    private async Task IdleSweepAsync(CancellationToken ct)
    {
        var (path, backing) = share.Subdirectory("idle");
        double empty;
        await using (var s = await WorkerSession.StartAsync(broker, "idle-empty-" + Slug, path, backing, logDir, settings, ct))
        {
            empty = await IdleCoreFractionAsync(s.Worker, "empty share", ct);
        }
        var created = Stopwatch.StartNew();
        CreateLegacyInbox(backing, settings.IdleVolumes);
        report.Note($"[{Column}] idle sweep: {settings.IdleVolumes} inbox directories created in {created.Elapsed.TotalSeconds:F1} s (on the backing directory, no delay)");
        double full;
        await using (var s = await WorkerSession.StartAsync(broker, "idle-full-" + Slug, path, backing, logDir, settings, ct))
        {
            // A worker of command-store format 2 removes what format 1 left, once, in batches: measure its idle cost
            // after that (the cleanup itself is a note), as an operator sees it from then on.
            var cleanup = Stopwatch.StartNew();
            var cpu0 = s.Worker.CpuSeconds();
            while (LegacyInboxDirectories(backing) > 0 && cleanup.Elapsed < TimeSpan.FromMinutes(30))
            {
                await Task.Delay(TimeSpan.FromSeconds(1), ct);
            }
            report.Note($"[{Column}] idle sweep: the worker removed the {settings.IdleVolumes} format-1 inbox directories in {cleanup.Elapsed.TotalSeconds:F1} s "
                + $"({(s.Worker.CpuSeconds() - cpu0) / cleanup.Elapsed.TotalSeconds * 100:F0}% of a core meanwhile); {LegacyInboxDirectories(backing)} left");
            full = await IdleCoreFractionAsync(s.Worker, $"after the {settings.IdleVolumes} directories", ct);
        }
        report.Row("e.idle", $"e idle CPU after {settings.IdleVolumes} volume dirs", "<= 1% core");
        report.Set("e.idle", Column, new Cell(Percent(full), Percent(empty), Report.Times(full / empty), full <= 0.01));
    }

    /// <summary>What an older worker leaves for each volume that ever got a command: its inbox directory with the two
    /// lock files, no entries.</summary>
    private static void CreateLegacyInbox(string backingShare, int volumes)
    {
        var inbox = Path.Combine(backingShare, ".nfsvolumeworker", "inbox");
        Directory.CreateDirectory(inbox);
        for (var i = 0; i < volumes; i++)
        {
            var dir = Path.Combine(inbox, $"volume-{Guid.NewGuid():D}");
            Directory.CreateDirectory(dir);
            File.Create(Path.Combine(dir, ".append.lock")).Dispose();
            File.Create(Path.Combine(dir, ".drain.lock")).Dispose();
        }
    }

    private static int LegacyInboxDirectories(string backingShare)
    {
        var inbox = Path.Combine(backingShare, ".nfsvolumeworker", "inbox");
        return Directory.Exists(inbox) ? Directory.EnumerateDirectories(inbox, "volume-*").Count() : 0;
    }

    /// <summary>The worker's CPU over --idle-seconds, once its start has settled, as a fraction of one core. Settled
    /// means the runtime has stopped compiling too: for a minute or two after a start, .NET's tiered compiler
    /// recompiles optimised whatever has been called 30 times, which for code run every few seconds (timers, the
    /// sweep) goes on until about two minutes in, at about 1% of a core here: the start's cost, not the idle
    /// worker's. The JIT time inside the window is a note, so that neither reading is hidden.</summary>
    private async Task<double> IdleCoreFractionAsync(WorkerUnderTest worker, string which, CancellationToken ct)
    {
        await Task.Delay(TimeSpan.FromSeconds(settings.Quick ? 3 : 10), ct);
        var settling = Stopwatch.StartNew();
        var jit = await worker.CounterAsync(JitTimeMetric, ct);
        while (!settings.Quick && settling.Elapsed < TimeSpan.FromMinutes(5))
        {
            await Task.Delay(TimeSpan.FromSeconds(10), ct);
            var now = await worker.CounterAsync(JitTimeMetric, ct);
            var rate = (now - jit) / 10;
            jit = now;
            if (rate < 0.001)
            {
                break;
            }
        }
        var cpu0 = worker.CpuSeconds();
        var wall = Stopwatch.StartNew();
        await Task.Delay(TimeSpan.FromSeconds(settings.IdleSeconds), ct);
        var cpu = worker.CpuSeconds() - cpu0;
        var seconds = wall.Elapsed.TotalSeconds;
        var jitInWindow = await worker.CounterAsync(JitTimeMetric, ct) - jit;
        report.Note($"[{Column}] idle sweep, {which}: the JIT settled {settling.Elapsed.TotalSeconds:F0} s after the first {(settings.Quick ? 3 : 10)} s "
            + $"(under 0.1% of a core compiling{(settings.Quick ? "; --quick does not wait" : "")}); in the {seconds:F0} s measured, CPU {cpu * 1000:F0} ms, "
            + $"of which JIT {jitInWindow * 1000:F0} ms");
        return cpu / seconds;
    }

    private static string Percent(double fraction) => (fraction * 100).ToString("F2", CultureInfo.InvariantCulture) + "%";

    // ---- f: memory with commands queued -------------------------------------------------------------------------

    private async Task QueuedMemoryAsync(CancellationToken ct)
    {
        var (path, backing) = share.Subdirectory("queue");
        var volumes = Enumerable.Range(0, Math.Clamp(settings.Queued / 100, 1, 1000)).Select(_ => Guid.NewGuid()).ToArray();
        foreach (var v in volumes)
        {
            CreateRawVolume(backing, v);
        }
        // More publishers than the storm's: the point is a backlog, published faster than the worker drains it.
        await using var s = await WorkerSession.StartAsync(broker, "queue-" + Slug, path, backing, logDir, settings, ct, publishers: Math.Max(settings.Publishers, 16));
        // One command through first: the worker's queues are bound before the flood.
        await s.Driver.RunFirstAsync(new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = volumes[0], SnapshotId = Guid.NewGuid() }, settings.CommandTimeout, ct);
        var terminal0 = s.Driver.TerminalEvents;
        long maxRss = 0;
        using var sampling = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var sampler = Task.Run(async () =>
        {
            while (!sampling.IsCancellationRequested)
            {
                maxRss = Math.Max(maxRss, s.Worker.Memory().Rss);
                try
                {
                    await Task.Delay(100, sampling.Token);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
            }
        }, CancellationToken.None);
        var start = Stopwatch.StartNew();
        var perPublisher = settings.Queued / s.Driver.Publishers;
        var publishers = Enumerable.Range(0, s.Driver.Publishers).Select(p => Task.Run(async () =>
        {
            var mine = Enumerable.Range(0, volumes.Length).Where(v => v % s.Driver.Publishers == p).Select(v => volumes[v]).ToList();
            if (mine.Count == 0)
            {
                mine = [volumes[p % volumes.Length]];
            }
            var sent = 0;
            while (sent < perPublisher)
            {
                foreach (var v in mine)
                {
                    var snapshot = Guid.NewGuid();
                    await s.Driver.PublishAsync(p, new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = v, SnapshotId = snapshot }, ct);
                    await s.Driver.PublishAsync(p, new DeleteSnapshot { CommandId = Guid.NewGuid(), VolumeId = v, SnapshotId = snapshot }, ct);
                    sent += 2;
                    if (sent >= perPublisher)
                    {
                        break;
                    }
                }
            }
            return sent;
        }, ct)).ToList();
        var published = (await Task.WhenAll(publishers)).Sum();
        var publishing = start.Elapsed;
        // The worker keeps working through the backlog: a few more seconds of it count too.
        await Task.Delay(TimeSpan.FromSeconds(settings.Quick ? 5 : 15), ct);
        await sampling.CancelAsync();
        await sampler;
        var (_, peak) = s.Worker.Memory();
        var finished = s.Driver.TerminalEvents - terminal0;
        var max = Math.Max(maxRss, peak);
        report.Row("f.rss", $"f worker max RSS, {settings.Queued} commands queued", "<= 200 MiB");
        report.Set("f.rss", Column, new Cell(Report.Number(max / 1048576.0) + " MiB", "", "", max <= 200L << 20));
        report.Set("f.queued", Column, new Cell(published.ToString(CultureInfo.InvariantCulture), finished.ToString(CultureInfo.InvariantCulture) + " done"));
        report.Note($"[{Column}] queued: {published} commands published in {publishing.TotalSeconds:F1} s ({published / publishing.TotalSeconds:F0}/s) over {volumes.Length} volumes; {finished} finished by the end of the measurement");
    }

    // ---- shared ----------------------------------------------------------------------------------------------

    /// <summary>A sparse raw volume file, as Cinder's driver creates one (no .info until its first snapshot).</summary>
    private static Guid CreateRawVolume(string directory, Guid volume)
    {
        using var f = new FileStream(Path.Combine(directory, $"volume-{volume:D}"), FileMode.CreateNew, FileAccess.Write);
        f.SetLength(VolumeBytes);
        return volume;
    }

    /// <summary>The counter once the worker's last writes of the commands (after their events) have been made.</summary>
    private static async Task<double> SettledCounterAsync(WorkerUnderTest worker, CancellationToken ct)
    {
        var previous = await worker.CounterAsync(SyncsMetric, ct);
        for (var i = 0; i < 10; i++)
        {
            await Task.Delay(1000, ct);
            var now = await worker.CounterAsync(SyncsMetric, ct);
            if (now == previous)
            {
                break;
            }
            previous = now;
        }
        return previous;
    }

    private static async Task<TimeSpan> TimeAsync(string file, string[] args)
    {
        var start = Stopwatch.GetTimestamp();
        await Proc.RunAsync(file, args);
        return Stopwatch.GetElapsedTime(start);
    }

    /// <summary>Nearest-rank percentile.</summary>
    private static TimeSpan Percentile(List<TimeSpan> values, double q)
    {
        if (values.Count == 0)
        {
            throw new HarnessException("no samples");
        }
        var sorted = values.Order().ToList();
        var rank = (int)Math.Ceiling(q * sorted.Count);
        return sorted[Math.Clamp(rank - 1, 0, sorted.Count - 1)];
    }
}
