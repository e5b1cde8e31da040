using System.Net.Http.Json;
using System.Text.RegularExpressions;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Status;
using NfsVolumeWorker.Tests.Support;

namespace NfsVolumeWorker.Tests;

/// <summary>The status page as a browser shows it: an in-process worker runs a few commands (one fails, one is
/// rejected, a clone copies slowly with a command waiting behind it), then headless Chromium loads
/// <c>/status</c>, takes a screenshot and dumps the DOM it parsed.</summary>
public sealed class StatusPageTests(ITestOutputHelper output)
{
    private const long MiB = WorkerTestBed.MiB;

    /// <summary>A share name that is markup: it must come out as text.</summary>
    private const string HostileShare = "<b id=\"injected\">x</b>:/export";

    [Fact]
    public async Task The_status_page_shows_partitions_a_running_clone_with_progress_the_failed_commands_and_the_shares()
    {
        var broker = await RabbitMqBroker.SharedAsync();
        Assert.True(broker.ManagementUri is not null, "the test broker has no management API: no fleet view");
        var settings = SlowCopy.Settings(8L << 20);
        settings["Broker:ManagementUrl"] = broker.ManagementUri.ToString();
        settings["Balancing:Interval"] = "00:00:01";
        // A fixed port, so that the instance can advertise its URL in its AMQP connection (with port 0 the port is
        // known only after the partitions are subscribed).
        settings["Http:Urls"] = $"http://127.0.0.1:{FreePort()}";
        await using var bed = await WorkerTestBed.StartAsync(output, "status-page", settings, broker);
        var baseUri = BaseUri(bed.Worker);

        var vol = Guid.NewGuid();
        await bed.RunOkAsync(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = vol, SizeBytes = 512 * MiB }, nameof(VolumeCreated));
        var revert = new RevertToSnapshot { CommandId = Guid.NewGuid(), VolumeId = vol, SnapshotId = Guid.NewGuid() };
        Assert.Equal("SnapshotNotFound", (await bed.RunAsync(revert)).Text("errorCode"));
        var rejected = new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = Guid.NewGuid(), SizeBytes = MiB, Share = HostileShare };
        Assert.Equal("ShareNotConfigured", (await bed.RunAsync(rejected)).Text("errorCode"));

        await Tools.WriteAsync(bed.PathOf($"volume-{vol}"), "raw", 0x42, 0, 256 * MiB); // about 32 s of copying at 8 MiB/s
        var clone = new CloneVolume { CommandId = Guid.NewGuid(), VolumeId = vol, NewVolumeId = Guid.NewGuid() };
        await bed.Producer.PublishAsync(clone);
        var behind = new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = vol, SnapshotId = Guid.NewGuid() };
        await bed.Producer.PublishAsync(behind); // waits in the inbox behind the clone

        using var http = new HttpClient { BaseAddress = baseUri };
        var report = await Eventually.WaitAsync(() => http.GetFromJsonAsync<StatusReport>("status.json", StatusReport.Json),
            // The fleet comes from the management API, whose consumer lists lag the subscriptions by a moment.
            r => r!.Running.Any(o => o.CommandId == clone.CommandId && o.Percent > 0) && r.Inbox.Any(i => i.VolumeId == vol && i.Waiting == 2)
                && r.Fleet is { } fleet && fleet.Instances.Any(i => i.Instance == "in-process"),
            TimeSpan.FromSeconds(30), pollMs: 300);
        output.WriteLine(System.Text.Json.JsonSerializer.Serialize(report, StatusReport.Json));

        // The JSON behind the page.
        Assert.NotNull(report);
        var running = Assert.Single(report.Running, o => o.CommandId == clone.CommandId);
        Assert.Equal(nameof(CloneVolume), running.CommandType);
        Assert.InRange(running.Percent!.Value, 0.1, 99.9);
        Assert.Contains(report.Inbox, i => i.VolumeId == vol && i.Waiting == 2 && i.Running);
        Assert.Contains(report.Failures, f => f.CommandId == revert.CommandId && f.ErrorCode == "SnapshotNotFound" && f.Share == bed.Share);
        Assert.Contains(report.Failures, f => f.CommandId == rejected.CommandId && f.ErrorCode == "ShareNotConfigured");
        var share = Assert.Single(report.Shares);
        Assert.True(share.Available);
        Assert.True(share.FreeBytes > 0 && share.SizeBytes >= share.FreeBytes);
        Assert.True(share.MaxFileSizeBytes > 0);
        Assert.Equal(WorkerSettings.Partitions, report.Partitions.Count);
        Assert.All(report.Partitions, p => Assert.True(p.Subscribed));
        var me = Assert.Single(report.Fleet!.Instances, i => i.Instance == "in-process");
        Assert.Equal(Enumerable.Range(0, WorkerSettings.Partitions), me.Active);
        Assert.Equal(baseUri.ToString().TrimEnd('/'), me.StatusUrl);
        Assert.Equal(me.StatusUrl, report.StatusUrl);
        Assert.False(report.Oslo.Enabled);

        // The page, as Chromium renders it.
        var page = new Uri(baseUri, "status");
        var png = Path.Combine(AppContext.BaseDirectory, "TestResults", "status-page.png");
        Directory.CreateDirectory(Path.GetDirectoryName(png)!);
        File.Delete(png);
        await Chromium.ScreenshotAsync(page, png, 1400, 1250);
        Assert.True(new FileInfo(png).Length > 0);
        output.WriteLine($"screenshot: {png} ({new FileInfo(png).Length} bytes)");
        var dom = await Chromium.DumpDomAsync(page);

        foreach (var id in new[] { "instances", "partitions", "running", "failures", "shares", "inbox", "oslo" })
        {
            Assert.True(Section(dom, id) is not null, $"no section #{id} in the page:\n{dom}");
        }
        Assert.Contains("http-equiv=\"refresh\"", dom, StringComparison.Ordinal);
        var failures = Section(dom, "failures")!;
        Assert.Matches($"data-command-id=\"{revert.CommandId}\"[^>]*>.*?<td class=\"code\">SnapshotNotFound", failures);
        Assert.Contains("ShareNotConfigured", failures, StringComparison.Ordinal);
        var runningSection = Section(dom, "running")!;
        Assert.Contains(clone.CommandId.ToString(), runningSection, StringComparison.Ordinal);
        Assert.Matches("role=\"progressbar\" aria-valuenow=\"[0-9.]+\"", runningSection);
        Assert.Contains(vol.ToString(), Section(dom, "inbox")!, StringComparison.Ordinal);
        Assert.Contains(bed.Share, Section(dom, "shares")!, StringComparison.Ordinal);
        Assert.Matches("class=\"instance\" data-instance=\"in-process\"", Section(dom, "instances")!);
        // The share name that is markup stays text: no element of it in the DOM, its escaped form in the table.
        Assert.DoesNotContain("<b id=\"injected\">", dom, StringComparison.Ordinal);
        Assert.Contains("&lt;b id=\"injected\"&gt;x&lt;/b&gt;", failures, StringComparison.Ordinal);

        await bed.Events.WaitForAllAsync([clone.CommandId, behind.CommandId], TimeSpan.FromSeconds(120));
        var after = await http.GetFromJsonAsync<StatusReport>("status.json", StatusReport.Json);
        Assert.DoesNotContain(after!.Running, o => o.CommandId == clone.CommandId);
    }

    private static int FreePort()
    {
        using var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        return ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
    }

    private static Uri BaseUri(InProcessWorker worker) =>
        new(worker.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First().TrimEnd('/') + "/");

    private static string? Section(string dom, string id) =>
        Regex.Match(dom, $"<section id=\"{id}\"[^>]*>(.*?)</section>", RegexOptions.Singleline) is { Success: true } m ? m.Groups[1].Value : null;
}
