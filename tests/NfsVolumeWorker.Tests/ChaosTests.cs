using System.Diagnostics;
using System.Globalization;
using System.Text;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Storage.Recovery;
using NfsVolumeWorker.Storage.Shares;
using NfsVolumeWorker.Testing;
using NfsVolumeWorker.Tests.Support;
using NfsVolumeWorker.Tests.Support.Chaos;

namespace NfsVolumeWorker.Tests;

/// <summary>
/// Chaos: worker processes are killed with <c>kill -9</c> at random (seeded) while volumes go through mixed
/// scripts — creates, guest writes into the active image between snapshots, snapshots, merges, clones of
/// volumes and of snapshots, reverts, extends, deletes — and a model says what every image must hold.
/// By default a short run (2 workers, 10 kills, 12 volumes at a time: under 3 minutes); the long run is the
/// same test with NFSVOL_CHAOS_KILLS (and NFSVOL_CHAOS_SEED, NFSVOL_CHAOS_WORKERS, NFSVOL_CHAOS_VOLUMES,
/// NFSVOL_CHAOS_INTERVAL "min-max" seconds) set, as <c>ops/chaos/run</c> does. See docs/chaos.md.
/// </summary>
public sealed class ChaosTests(ITestOutputHelper output)
{
    private sealed record Settings(int Kills, int Seed, int Workers, int Volumes, TimeSpan MinInterval, TimeSpan MaxInterval)
    {
        public static Settings FromEnvironment()
        {
            static int Int(string name, int fallback) =>
                Environment.GetEnvironmentVariable(name) is { Length: > 0 } v ? int.Parse(v, CultureInfo.InvariantCulture) : fallback;
            var interval = (Environment.GetEnvironmentVariable("NFSVOL_CHAOS_INTERVAL") is { Length: > 0 } i ? i : "2-6").Split('-');
            return new Settings(
                Int("NFSVOL_CHAOS_KILLS", 10),
                Int("NFSVOL_CHAOS_SEED", Random.Shared.Next(1, int.MaxValue)),
                Int("NFSVOL_CHAOS_WORKERS", 2),
                Int("NFSVOL_CHAOS_VOLUMES", 12),
                TimeSpan.FromSeconds(double.Parse(interval[0], CultureInfo.InvariantCulture)),
                TimeSpan.FromSeconds(double.Parse(interval[^1], CultureInfo.InvariantCulture)));
        }

        public override string ToString() => string.Create(CultureInfo.InvariantCulture,
            $"seed {Seed}, {Kills} kills, {Workers} workers, {Volumes} volumes at a time, kill every {MinInterval.TotalSeconds:0.#}-{MaxInterval.TotalSeconds:0.#} s");
    }

    [Fact]
    public async Task Kill_9_of_worker_processes_under_mixed_load_loses_no_command_and_every_image_holds_what_the_model_says()
    {
        var settings = Settings.FromEnvironment();
        output.WriteLine($"chaos: {settings} (repeat with NFSVOL_CHAOS_SEED={settings.Seed})");
        var broker = await RabbitMqBroker.SharedAsync();
        await using var vhost = await broker.CreateVirtualHostAsync("chaos");
        using var root = new TempDirectory();
        var share = Directory.CreateDirectory(Path.Combine(root.Path, "share")).FullName;
        var workerSettings = new Dictionary<string, string?>
        {
            ["Balancing:Interval"] = "00:00:01",
            ["Engine:LockTimeout"] = "00:05:00",
        };
        if (broker.ManagementUri is { } management)
        {
            workerSettings["Broker:ManagementUrl"] = management.ToString(); // balancing on, as in production
        }

        var master = new Random(settings.Seed);
        var monkey = new ChaosMonkey(new Random(master.Next()), name => WorkerProcess.Start(vhost.AmqpUri, share, name, workerSettings),
            settings.Workers, settings.MinInterval, settings.MaxInterval, output);
        var ledger = new ChaosLedger();
        using var abort = new CancellationTokenSource();
        var logs = Path.Combine(Path.GetTempPath(), $"nfsvol-chaos-{settings.Seed}");
        try
        {
            await using var events = await EventCollector.StartAsync(vhost.AmqpUri);
            await using var producer = await CommandBus.StartAsync(vhost.AmqpUri, "chaos-producer");
            await Ownership.WaitForAsync(vhost, monkey.StartInitial(), TimeSpan.FromSeconds(120));

            var sw = Stopwatch.StartNew();
            var chaosDone = false;
            var lanes = Enumerable.Range(0, settings.Volumes).Select(lane =>
            {
                var script = new VolumeScript(lane, new Random(master.Next()), share, producer, events, ledger, TimeSpan.FromMinutes(5));
                return Task.Run(async () =>
                {
                    try
                    {
                        while (true)
                        {
                            // Decided at the end of each script: the volume that ends after the last kill stays.
                            var kept = false;
                            await script.RunAsync(() => kept = Volatile.Read(ref chaosDone), abort.Token);
                            if (kept || abort.IsCancellationRequested)
                            {
                                return;
                            }
                        }
                    }
                    catch
                    {
                        await abort.CancelAsync();
                        throw;
                    }
                });
            }).ToList();

            await monkey.RunAsync(settings.Kills, abort.Token);
            var chaosTime = sw.Elapsed;
            Volatile.Write(ref chaosDone, true);
            var laneErrors = new List<Exception>();
            foreach (var lane in lanes)
            {
                try
                {
                    await lane;
                }
                catch (Exception e)
                {
                    laneErrors.Add(e);
                }
            }
            Assert.True(laneErrors.Count == 0, $"chaos {settings}: {laneErrors.Count} lane(s) failed; worker logs in {logs}{Environment.NewLine}"
                + string.Join(Environment.NewLine + "---" + Environment.NewLine, laneErrors.Select(e => e.Message)));

            var sent = ledger.Sent;
            await events.WaitForAllAsync(sent.Select(c => c.CommandId).ToList(), TimeSpan.FromMinutes(5));
            var inbox = await Eventually.WaitAsync(() => Tools.InboxEntries(share), e => e.Count == 0, TimeSpan.FromMinutes(2), 500);
            var elapsed = sw.Elapsed;

            var repeats = events.AssertOneTerminalEventEach(sent.Select(c => c.CommandId));
            var violations = events.OrderingViolations(ledger.Scripts);
            var firstEvents = sent.Select(c => events.TerminalOf(c.CommandId)[0]).ToList();
            var alreadyDone = firstEvents.Count(e => e.AlreadyDone);
            var failed = firstEvents.Count(e => e.Type == nameof(CommandFailed));

            var problems = new StringBuilder();
            foreach (var model in ledger.Kept)
            {
                problems.Append(await ModelCheck.VerifyAsync(share, model));
            }
            foreach (var gone in ledger.Deleted)
            {
                problems.Append(ModelCheck.VerifyGone(share, gone));
            }
            problems.Append(await Tools.CheckShareAsync(share));
            var s = new Share(share, share, null);
            foreach (var finding in ShareCheck.VolumesOn(s).SelectMany(v => ShareCheck.Diagnose(s, v)).Where(f => f.IsProblem))
            {
                problems.AppendLine(CultureInfo.InvariantCulture, $"check: {finding.Severity} {finding.Kind} volume {finding.VolumeId}: {finding.Message}");
            }
            var crashed = monkey.DiedUnasked.Select(w => w.InstanceName).ToList();
            var hostFailures = monkey.All.Count(w => w.Output.Contains("BackgroundService failed", StringComparison.Ordinal));

            var report = new StringBuilder()
                .AppendLine(CultureInfo.InvariantCulture, $"chaos test: {settings}")
                .AppendLine(CultureInfo.InvariantCulture, $"kill -9: {monkey.Kills} over {chaosTime.TotalSeconds:0} s ({monkey.All.Count} worker processes started); all events in and inboxes empty after {elapsed.TotalSeconds:0} s")
                .AppendLine(CultureInfo.InvariantCulture, $"commands: {sent.Count} over {ledger.Scripts.Count()} volume ids ({ledger.Kept.Count} volumes and clones kept, {ledger.Deleted.Count} deleted); guest writes: {ledger.Writes}; volumes verified against the model mid-run: {ledger.Verifications}")
                .AppendLine(CultureInfo.InvariantCulture, $"AlreadyDone: {alreadyDone}; repeated terminal events (same id and content): {repeats}; failed: {failed} (expected by the model: {ledger.ExpectedFailures})")
                .AppendLine(CultureInfo.InvariantCulture, $"violations: ordering {violations}, lost commands 0, conflicting terminal events 0, model/check problems {problems.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries).Length}, inbox entries left {inbox.Count}, worker crashes {crashed.Count}, host failures {hostFailures}")
                .AppendLine(CultureInfo.InvariantCulture, $"machine: {Environment.ProcessorCount} cpus, {Environment.OSVersion}, .NET {Environment.Version}, {DateTimeOffset.UtcNow:yyyy-MM-dd HH:mm} UTC")
                .ToString();
            output.WriteLine(report);
            var results = Path.Combine(RepositoryRoot.TryFind() ?? AppContext.BaseDirectory, "TestResults");
            Directory.CreateDirectory(results);
            await File.WriteAllTextAsync(Path.Combine(results, "chaos.txt"), report);

            Assert.True(problems.Length == 0, $"chaos {settings}:{Environment.NewLine}{problems}");
            Assert.Equal(0, violations);
            Assert.Equal(ledger.ExpectedFailures, failed);
            Assert.Empty(inbox);
            Assert.True(crashed.Count == 0, $"worker processes exited without being killed: {string.Join(", ", crashed)}; logs in {logs}");
            Assert.Equal(0, hostFailures);
            Assert.Equal(settings.Kills, monkey.Kills);
        }
        finally
        {
            await abort.CancelAsync();
            var workers = monkey.All;
            await Task.WhenAll(workers.Select(w => w.DisposeAsync().AsTask()));
            Directory.CreateDirectory(logs);
            foreach (var w in workers)
            {
                await File.WriteAllTextAsync(Path.Combine(logs, $"{w.InstanceName}.log"), w.Output);
            }
            output.WriteLine($"worker logs: {logs}");
        }
    }
}
