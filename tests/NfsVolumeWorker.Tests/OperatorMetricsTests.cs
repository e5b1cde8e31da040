using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Messaging;
using NfsVolumeWorker.Tests.Support;

namespace NfsVolumeWorker.Tests;

/// <summary>The dashboard and the alerts name only metrics the worker really exports: the worker runs a few
/// commands (a copy, a merge, a rejected one, a failing one, a dead letter), <c>/metrics</c> is scraped, and every
/// metric name inside the PromQL of <c>ops/grafana/nfsvolumeworker.json</c> and <c>ops/prometheus/alerts.yml</c>
/// must be in the scrape, except those listed here as coming from elsewhere.</summary>
public sealed class OperatorMetricsTests(ITestOutputHelper output)
{
    private const long MiB = WorkerTestBed.MiB;

    /// <summary>Series that are not the worker's (docs/operations.md, "Where each metric comes from"):
    /// Prometheus's own <c>up</c>, and RabbitMQ 3.10's <c>rabbitmq_prometheus</c> plugin, scraped at
    /// <c>/metrics/per-object</c> (these names and their <c>queue</c> label were read from 3.10.8's).</summary>
    public static readonly string[] NotFromTheWorker =
    [
        "up",
        "rabbitmq_queue_messages_ready",
        "rabbitmq_queue_messages_unacked",
        "rabbitmq_queue_messages",
        "rabbitmq_queue_consumers",
    ];

    [Fact]
    public async Task Every_metric_a_dashboard_panel_or_an_alert_names_is_in_the_scrape()
    {
        var expressions = PromQl.DashboardExpressions(PromQl.DashboardPath).Concat(PromQl.AlertExpressions(PromQl.AlertsPath)).ToList();
        var named = expressions.SelectMany(e => PromQl.MetricNames(e.Expr).Select(n => (Name: n, e.Where))).ToList();
        // The parser found what the files hold (a parser that finds nothing would pass anything).
        Assert.Contains(named, n => n.Name == "nfsvolumeworker_command_duration_seconds_bucket" && n.Where.StartsWith("panel", StringComparison.Ordinal));
        Assert.Contains(named, n => n.Name == "up" && n.Where.StartsWith("alert", StringComparison.Ordinal));

        await using var bed = await WorkerTestBed.StartAsync(output, "metrics");
        var vol = Guid.NewGuid();
        await bed.RunOkAsync(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = vol, SizeBytes = 8 * MiB }, nameof(VolumeCreated));
        await Tools.WriteAsync(bed.PathOf($"volume-{vol}"), "raw", 0x11, 0, 2 * MiB);
        var snap = Guid.NewGuid();
        await bed.RunOkAsync(new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = vol, SnapshotId = snap }, nameof(SnapshotCreated));
        await Tools.WriteAsync(bed.PathOf($"volume-{vol}.{snap}"), "qcow2", 0x22, 0, 1 * MiB);
        await bed.RunOkAsync(new CloneVolume { CommandId = Guid.NewGuid(), VolumeId = vol, NewVolumeId = Guid.NewGuid() }, nameof(VolumeCloned));
        await bed.RunOkAsync(new DeleteSnapshot { CommandId = Guid.NewGuid(), VolumeId = vol, SnapshotId = snap }, nameof(SnapshotDeleted));
        var failed = await bed.RunAsync(new RevertToSnapshot { CommandId = Guid.NewGuid(), VolumeId = vol, SnapshotId = Guid.NewGuid() });
        Assert.Equal("SnapshotNotFound", failed.Text("errorCode"));
        var rejected = await bed.RunAsync(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = Guid.NewGuid(), SizeBytes = MiB, Share = "nowhere:/export" });
        Assert.Equal("ShareNotConfigured", rejected.Text("errorCode"));
        await RawSend.ToQueueAsync(bed.VirtualHost.AmqpUri, Topology.IngressQueue, "{ this is not json");
        await Task.Delay(TimeSpan.FromSeconds(2)); // the dead letter moved; a sweep has counted the inboxes

        var scrape = await ScrapeAsync(bed.Worker);
        var scraped = PromQl.ScrapedNames(scrape);
        var missing = named
            .Where(n => !NotFromTheWorker.Contains(n.Name) && !scraped.Contains(n.Name))
            .Select(n => $"{n.Name} ({n.Where})").Distinct().ToList();
        output.WriteLine($"{named.Select(n => n.Name).Distinct().Count()} metric names in {expressions.Count} expressions; {scraped.Count} series names scraped");
        Assert.True(missing.Count == 0,
            "Named by the dashboard or an alert but not in the worker's /metrics (nor listed as RabbitMQ's or Prometheus's):\n  "
            + string.Join("\n  ", missing) + "\nScraped:\n  " + string.Join("\n  ", scraped));

        // The gauges added for the operator carry what they claim.
        Assert.Matches(@"nfsvolumeworker_share_free_bytes\{[^}]*share=""[^""]+""[^}]*\} [1-9]", scrape);
        Assert.Matches(@"nfsvolumeworker_share_size_bytes\{[^}]*share=""[^""]+""[^}]*\} [1-9]", scrape);
        Assert.Matches(@"nfsvolumeworker_inbox_commands\{[^}]*share=""[^""]+""[^}]*\} 0", scrape);
        Assert.Matches(@"nfsvolumeworker_partition_blocked_seconds\{[^}]*partition=""ingress""[^}]*\} 0", scrape);
        Assert.Matches(@"nfsvolumeworker_data_written_bytes_total\{[^}]*kind=""copy""[^}]*\} [1-9]", scrape);
        Assert.Matches(@"nfsvolumeworker_data_written_bytes_total\{[^}]*kind=""merge""[^}]*\} [1-9]", scrape);
    }

    [Fact]
    public async Task The_inbox_backlog_gauge_counts_the_commands_waiting_on_the_share()
    {
        await using var bed = await WorkerTestBed.StartAsync(output, "metrics-inbox");
        // Entries the worker cannot drain: another holder has each volume's drain lock (as a busy instance would).
        var share = new Storage.Shares.Share(bed.Share, bed.Share, null);
        var locks = new List<IDisposable>();
        try
        {
            foreach (var (volume, count) in new[] { (Guid.NewGuid(), 3), (Guid.NewGuid(), 2) })
            {
                locks.Add(Storage.Inbox.VolumeInbox.TryTakeDrain(share, volume) ?? throw new InvalidOperationException("drain lock taken"));
                for (var i = 0; i < count; i++)
                {
                    var command = new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = volume, SizeBytes = MiB };
                    await bed.Producer.PublishAsync(command);
                }
            }
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
            string scrape;
            do
            {
                await Task.Delay(500);
                scrape = await ScrapeAsync(bed.Worker);
            }
            while (!InboxLine(scrape).EndsWith(" 5", StringComparison.Ordinal) && DateTime.UtcNow < deadline);
            output.WriteLine(InboxLine(scrape));
            Assert.EndsWith(" 5", InboxLine(scrape));
            Assert.Matches(@"nfsvolumeworker_inbox_volumes\{[^}]*\} 2", scrape);
        }
        finally
        {
            locks.ForEach(l => l.Dispose());
        }
    }

    private static string InboxLine(string scrape) =>
        scrape.Split('\n').FirstOrDefault(l => l.StartsWith("nfsvolumeworker_inbox_commands{", StringComparison.Ordinal))?.Trim() ?? "";

    public static async Task<string> ScrapeAsync(InProcessWorker worker)
    {
        var addresses = worker.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses;
        using var http = new HttpClient { BaseAddress = new Uri(addresses.First()) };
        return await http.GetStringAsync(new Uri("/metrics", UriKind.Relative));
    }
}
