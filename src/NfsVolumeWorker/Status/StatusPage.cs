using System.Globalization;
using System.Text;
using System.Text.Encodings.Web;

namespace NfsVolumeWorker.Status;

/// <summary>
/// The status page: plain HTML rendered on the server from a <see cref="StatusReport"/>, inline CSS, no script
/// and no external asset; the browser reloads it every <see cref="RefreshSeconds"/> seconds. Every value that
/// comes from outside (volume ids, shares, messages, instance names) is HTML-encoded. Each section has an id
/// (<c>instances</c>, <c>partitions</c>, <c>shares</c>, <c>inbox</c>, <c>running</c>, <c>failures</c>, <c>oslo</c>).
/// </summary>
public static class StatusPage
{
    public const int RefreshSeconds = 5;

    private const string Style = """
        body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f4f5f7;color:#1d2330}
        header{background:#1d2330;color:#fff;padding:12px 20px;display:flex;gap:24px;align-items:baseline;flex-wrap:wrap}
        header h1{font-size:18px;margin:0}header span{color:#b8c0cc}
        main{padding:12px 20px;display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:14px}
        section{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:10px 14px;overflow:auto}
        section.wide{grid-column:1/-1}
        h2{font-size:15px;margin:0 0 8px}
        table{border-collapse:collapse;width:100%}
        th,td{text-align:left;padding:3px 8px;border-bottom:1px solid #eef0f3;vertical-align:top;white-space:nowrap}
        th{font-weight:600;color:#5a6473;font-size:12px}
        td.msg{white-space:normal;max-width:520px}
        .mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
        .ok{color:#1a7f37}.bad{color:#c62828;font-weight:600}.warn{color:#9a6700}.muted{color:#7a8491}
        .code{font-family:ui-monospace,Menlo,Consolas,monospace;font-weight:600;color:#c62828}
        .bar{position:relative;width:220px;height:16px;background:#e6e9ee;border-radius:3px;overflow:hidden}
        .bar>div{height:100%;background:#2f81f7}
        .bar>span{position:absolute;left:0;right:0;top:0;text-align:center;font-size:11px;line-height:16px;color:#1d2330}
        .chip{display:inline-block;min-width:22px;text-align:center;padding:0 4px;margin:1px;border-radius:3px;background:#dbe9ff;font-size:12px}
        .chip.mine{background:#2f81f7;color:#fff}.chip.wait{background:#eef0f3;color:#7a8491}.chip.none{background:#ffd8d8;color:#c62828}
        .empty{color:#7a8491;font-style:italic}
        """;

    public static string Render(StatusReport report)
    {
        ArgumentNullException.ThrowIfNull(report);
        var h = new StringBuilder(16 * 1024);
        h.Append("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">")
            .Append(Inv($"<meta http-equiv=\"refresh\" content=\"{RefreshSeconds}\">"))
            .Append("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">")
            .Append("<title>nfsvol ").Append(E(report.Instance)).Append("</title><style>").Append(Style).Append("</style></head><body>\n");
        h.Append("<header><h1>NfsVolumeWorker <span id=\"instance\">").Append(E(report.Instance)).Append("</span></h1>")
            .Append("<span>version ").Append(E(report.Version)).Append("</span>")
            .Append("<span>up ").Append(Duration((report.GeneratedAt - report.StartedAt).TotalSeconds)).Append("</span>")
            .Append("<span id=\"generated\">").Append(Time(report.GeneratedAt)).Append(" UTC</span>")
            .Append(Inv($"<span>refreshes every {RefreshSeconds} s · <a style=\"color:#9cc4ff\" href=\"status.json\">status.json</a></span></header>\n<main>\n"));

        Instances(h, report);
        Running(h, report);
        Failures(h, report);
        Shares(h, report);
        Partitions(h, report);
        Inbox(h, report);
        Oslo(h, report);

        h.Append("</main></body></html>\n");
        return h.ToString();
    }

    private static void Instances(StringBuilder h, StatusReport r)
    {
        h.Append("<section id=\"instances\" class=\"wide\"><h2>Instances and their partitions</h2>");
        if (r.Fleet is not { } fleet)
        {
            h.Append("<p class=\"empty\">No fleet view: partition balancing is off (no Broker:ManagementUrl) or has not read the broker yet. ")
                .Append("This instance only:</p><table><tr><th>instance</th><th>subscribed partitions</th></tr><tr class=\"instance\"><td>")
                .Append(E(r.Instance)).Append("</td><td>");
            foreach (var p in r.Partitions.Where(p => p.Subscribed))
            {
                h.Append(Inv($"<span class=\"chip\">{p.Partition:D2}</span>"));
            }
            h.Append("</td></tr></table></section>\n");
            return;
        }
        h.Append("<table><tr><th>instance</th><th>active</th><th>partitions (active)</th><th>waiting on</th><th>status</th></tr>");
        foreach (var i in fleet.Instances)
        {
            var mine = i.Instance == r.Instance;
            h.Append("<tr class=\"instance\" data-instance=\"").Append(E(i.Instance)).Append("\"><td>").Append(mine ? "<b>" : "").Append(E(i.Instance)).Append(mine ? "</b> (this)" : "")
                .Append(Inv($"</td><td>{i.Active.Count}</td><td>"));
            foreach (var p in i.Active)
            {
                h.Append(Inv($"<span class=\"chip{(mine ? " mine" : "")}\">{p:D2}</span>"));
            }
            h.Append("</td><td>");
            foreach (var p in i.Waiting)
            {
                h.Append(Inv($"<span class=\"chip wait\">{p:D2}</span>"));
            }
            h.Append("</td><td>");
            if (i.StatusUrl is { } url && Uri.TryCreate(url, UriKind.Absolute, out var u) && u.Scheme is "http" or "https")
            {
                h.Append("<a href=\"").Append(E(url.TrimEnd('/') + "/status")).Append("\">").Append(E(url)).Append("</a>");
            }
            else
            {
                h.Append("<span class=\"muted\">not advertised</span>");
            }
            h.Append("</td></tr>");
        }
        h.Append("</table>");
        if (fleet.Unowned.Count > 0)
        {
            h.Append("<p class=\"bad\">Without an active consumer: ");
            foreach (var p in fleet.Unowned)
            {
                h.Append(Inv($"<span class=\"chip none\">{p:D2}</span>"));
            }
            h.Append("</p>");
        }
        h.Append("<p class=\"muted\">Read from RabbitMQ's management API by the balancer at ").Append(Time(fleet.ReadAt)).Append(" UTC.</p></section>\n");
    }

    private static void Partitions(StringBuilder h, StatusReport r)
    {
        h.Append("<section id=\"partitions\"><h2>This instance's partition queues</h2><table><tr><th>queue</th><th>subscribed</th><th>active here</th><th>blocked</th></tr>");
        h.Append("<tr><td class=\"mono\">nfsvol.ingress</td><td>").Append(r.Ingress.Subscribed ? "<span class=\"ok\">yes</span>" : "<span class=\"bad\">no</span>")
            .Append("</td><td class=\"muted\">–</td><td>").Append(Blocked(r.Ingress.RetryingSince, r.GeneratedAt)).Append("</td></tr>");
        foreach (var p in r.Partitions)
        {
            h.Append(Inv($"<tr class=\"partition\" data-partition=\"{p.Partition}\"><td class=\"mono\">nfsvol.partition.{p.Partition:D2}</td><td>"))
                .Append(p.Subscribed ? "<span class=\"ok\">yes</span>" : "<span class=\"bad\">no</span>").Append("</td><td>")
                .Append(p.Active switch { true => "<b>active</b>", false => "<span class=\"muted\">waiting</span>", null => "<span class=\"muted\">unknown</span>" })
                .Append("</td><td>").Append(Blocked(p.RetryingSince, r.GeneratedAt)).Append("</td></tr>");
        }
        h.Append("</table></section>\n");
    }

    private static string Blocked(DateTimeOffset? since, DateTimeOffset now) =>
        since is { } s ? $"<span class=\"warn\">retrying for {Duration((now - s).TotalSeconds)}</span>" : "<span class=\"muted\">no</span>";

    private static void Running(StringBuilder h, StatusReport r)
    {
        h.Append(Inv($"<section id=\"running\" class=\"wide\"><h2>Running operations ({r.Running.Count}; {r.Volumes.Active} volume(s) draining)</h2>"));
        if (r.Running.Count == 0)
        {
            h.Append("<p class=\"empty\">Nothing running.</p>");
        }
        else
        {
            h.Append("<table><tr><th>command</th><th>volume</th><th>share</th><th>phase</th><th>progress</th><th>elapsed</th><th>time left</th><th>command id</th></tr>");
            foreach (var o in r.Running)
            {
                h.Append("<tr class=\"operation\" data-command-id=\"").Append(o.CommandId).Append("\"><td>").Append(E(o.CommandType))
                    .Append("</td><td class=\"mono\">").Append(o.VolumeId).Append("</td><td>").Append(E(o.Share))
                    .Append("</td><td>").Append(E(o.Phase ?? "–")).Append("</td><td>");
                if (o.Percent is { } pct)
                {
                    h.Append(Inv($"<div class=\"bar\" role=\"progressbar\" aria-valuenow=\"{pct:0.#}\" aria-valuemin=\"0\" aria-valuemax=\"100\"><div style=\"width:{pct:0.#}%\"></div><span>{pct:0.#} %</span></div>"));
                }
                else
                {
                    h.Append("<span class=\"muted\">no progress reported</span>");
                }
                h.Append("</td><td>").Append(Duration(o.ElapsedSeconds)).Append("</td><td>")
                    .Append(o.SecondsLeft is { } left ? "about " + Duration(left) : "<span class=\"muted\">–</span>")
                    .Append("</td><td class=\"mono\">").Append(ShortId(o.CommandId)).Append("</td></tr>");
            }
            h.Append("</table>");
        }
        if (r.Volumes.BackingOff.Count > 0)
        {
            h.Append("<h2 class=\"warn\">Volumes backing off (share or broker fault)</h2><table id=\"backing-off\"><tr><th>share</th><th>volume</th><th>attempts</th><th>next attempt</th><th>last error</th></tr>");
            foreach (var b in r.Volumes.BackingOff)
            {
                h.Append("<tr><td>").Append(E(b.Share)).Append("</td><td class=\"mono\">").Append(b.VolumeId).Append(Inv($"</td><td>{b.Attempts}</td><td>"))
                    .Append(Time(b.NextAttemptAt)).Append("</td><td class=\"msg\">").Append(E(b.LastError)).Append("</td></tr>");
            }
            h.Append("</table>");
        }
        h.Append("</section>\n");
    }

    private static void Failures(StringBuilder h, StatusReport r)
    {
        h.Append(Inv($"<section id=\"failures\" class=\"wide\"><h2>Failed commands, last hour ({r.Failures.Count})</h2>"));
        if (r.Failures.Count == 0)
        {
            h.Append("<p class=\"empty\">None.</p></section>\n");
            return;
        }
        h.Append("<table><tr><th>time (UTC)</th><th>command</th><th>code</th><th>volume</th><th>share</th><th>message</th><th>command id</th></tr>");
        foreach (var f in r.Failures)
        {
            h.Append("<tr class=\"failure\" data-command-id=\"").Append(f.CommandId).Append("\"><td>").Append(Time(f.At)).Append("</td><td>").Append(E(f.CommandType))
                .Append("</td><td class=\"code\">").Append(E(f.ErrorCode)).Append(f.Transient ? " <span class=\"muted\">(transient)</span>" : "")
                .Append("</td><td class=\"mono\">").Append(f.VolumeId).Append("</td><td>").Append(E(f.Share ?? "–"))
                .Append("</td><td class=\"msg\">").Append(E(f.Message)).Append("</td><td class=\"mono\">").Append(ShortId(f.CommandId)).Append("</td></tr>");
        }
        h.Append("</table></section>\n");
    }

    private static void Shares(StringBuilder h, StatusReport r)
    {
        h.Append("<section id=\"shares\" class=\"wide\"><h2>Shares</h2><table><tr><th>share</th><th>state</th><th>free</th><th>size</th><th>max file</th><th>mount point</th><th>inbox</th></tr>");
        foreach (var s in r.Shares)
        {
            h.Append("<tr class=\"share\"><td>").Append(E(s.Export)).Append(s.Export == s.LocalPath ? "" : "<br><span class=\"muted mono\">" + E(s.LocalPath) + "</span>")
                .Append("</td><td>").Append(s.Available ? "<span class=\"ok\">available</span>" : "<span class=\"bad\">unavailable</span><br><span class=\"msg\">" + E(s.Problem ?? "") + "</span>")
                .Append("</td><td>").Append(Bytes(s.FreeBytes));
            if (s.FreeBytes is { } free && s.SizeBytes is { } size and > 0)
            {
                var pct = 100.0 * free / size;
                h.Append(Inv($" <span class=\"{(pct < 10 ? "bad" : "muted")}\">({pct:0} %)</span>"));
            }
            h.Append("</td><td>").Append(Bytes(s.SizeBytes)).Append("</td><td>").Append(Bytes(s.MaxFileSizeBytes))
                .Append("</td><td>").Append(s.MountPoint ? "yes" : "no").Append(s.MustBeMounted ? " <span class=\"muted\">(required)</span>" : "")
                .Append("</td><td>").Append(s.InboxCommands is { } c ? Inv($"{c} command(s), {s.InboxVolumes} volume(s)") : "<span class=\"muted\">unknown</span>").Append("</td></tr>");
        }
        h.Append("</table></section>\n");
    }

    private static void Inbox(StringBuilder h, StatusReport r)
    {
        h.Append(Inv($"<section id=\"inbox\"><h2>Deepest volume inboxes (at most {StatusCollector.InboxListed})</h2>"));
        if (r.Inbox.Count == 0)
        {
            h.Append("<p class=\"empty\">No command waits.</p></section>\n");
            return;
        }
        h.Append("<table><tr><th>waiting</th><th>volume</th><th>share</th><th>draining here</th></tr>");
        foreach (var v in r.Inbox)
        {
            h.Append(Inv($"<tr class=\"inbox-volume\"><td>{v.Waiting}</td><td class=\"mono\">{v.VolumeId}</td><td>"))
                .Append(E(v.Share)).Append("</td><td>").Append(v.Running ? "yes" : "<span class=\"muted\">no</span>").Append("</td></tr>");
        }
        h.Append("</table></section>\n");
    }

    private static void Oslo(StringBuilder h, StatusReport r)
    {
        var o = r.Oslo;
        h.Append("<section id=\"oslo\"><h2>oslo.messaging adapter (Cinder RPC)</h2><table>")
            .Append("<tr><th>enabled</th><td>").Append(o.Enabled ? "yes" : "no").Append("</td></tr>");
        if (o.Enabled)
        {
            h.Append("<tr><th>host</th><td class=\"mono\">").Append(E(o.Host ?? "")).Append("</td></tr>")
                .Append("<tr><th>serving</th><td>").Append(o.Serving ? "<span class=\"ok\">yes</span>" : "<span class=\"bad\">no</span>").Append("</td></tr>")
                .Append(Inv($"<tr><th>awaiting events</th><td>{o.Pending ?? 0}</td></tr>"));
        }
        h.Append("</table></section>\n");
    }

    private static string E(string value) => HtmlEncoder.Default.Encode(value);

    /// <summary>The first 8 hex digits, the whole id in the tooltip (and in the row's data-command-id).</summary>
    private static string ShortId(Guid id) => $"<span title=\"{id}\">{id.ToString()[..8]}…</span>";

    private static string Inv(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);

    private static string Time(DateTimeOffset t) => t.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture);

    public static string Duration(double seconds)
    {
        var t = TimeSpan.FromSeconds(Math.Max(0, Math.Round(seconds)));
        return t.TotalHours >= 1 ? Inv($"{(int)t.TotalHours} h {t.Minutes:D2} min") : t.TotalMinutes >= 1 ? Inv($"{t.Minutes} min {t.Seconds:D2} s") : Inv($"{t.Seconds} s");
    }

    internal static string Bytes(long? bytes)
    {
        if (bytes is not { } b)
        {
            return "<span class=\"muted\">unknown</span>";
        }
        string[] units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
        double v = b;
        var u = 0;
        while (v >= 1024 && u < units.Length - 1)
        {
            v /= 1024;
            u++;
        }
        return u == 0 ? Inv($"{b} B") : Inv($"{v:0.#} {units[u]}");
    }
}
