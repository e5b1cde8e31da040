using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using NfsVolumeWorker.Storage.Chains;
using NfsVolumeWorker.Storage.Durability;
using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Recovery;
using NfsVolumeWorker.Contracts;
using Spectre.Console;

namespace NfsVolumeWorker.Cli;

/// <summary>One image of <c>nfsvol chain</c>'s output.</summary>
/// <param name="File">Bare file name.</param>
/// <param name="Format">raw or qcow2.</param>
/// <param name="VirtualSize">Guest-visible bytes.</param>
/// <param name="AllocatedBytes">Bytes allocated on disk.</param>
/// <param name="BackingFile">The backing file, or null for the base.</param>
/// <param name="BackingFormat">Its recorded format.</param>
/// <param name="OverlayOfSnapshot">The snapshot this overlay was created at (info[S] == this file).</param>
/// <param name="DataOfSnapshot">The snapshot whose data this image holds (this file is the backing file of info[S]).</param>
/// <param name="Active">True for the active image.</param>
/// <param name="Dirty">qcow2 dirty flag.</param>
public sealed record ChainImageView(string File, string Format, long VirtualSize, long AllocatedBytes, string? BackingFile, string? BackingFormat,
    Guid? OverlayOfSnapshot, Guid? DataOfSnapshot, bool Active, bool Dirty);

/// <summary><c>nfsvol chain --json</c>.</summary>
public sealed record ChainView(Guid VolumeId, string Share, string Directory, string Active, IReadOnlyDictionary<string, string> Snapshots,
    IReadOnlyList<ChainImageView> Images, IReadOnlyList<string> Problems)
{
    public static ChainView From(VolumeChain chain)
    {
        var info = chain.Info;
        var images = chain.Images.Select(i =>
        {
            var dataOf = info.Snapshots.Where(kv => chain.Find(kv.Value)?.BackingFile == i.FileName).Select(kv => (Guid?)kv.Key).FirstOrDefault();
            return new ChainImageView(i.FileName, i.Format.ToQemuName(), i.VirtualSize, FileOwnership.AllocatedBytes(chain.PathOf(i.FileName)),
                i.BackingFile, i.BackingFormat?.ToQemuName(), i.SnapshotId, dataOf, i.FileName == chain.Active.FileName, i.IsDirty);
        }).ToList();
        var snapshots = info.Snapshots.OrderBy(kv => kv.Value, StringComparer.Ordinal)
            .ToDictionary(kv => VolumeFileNames.Format(kv.Key), kv => kv.Value, StringComparer.Ordinal);
        return new ChainView(chain.VolumeId, chain.Share.Export, chain.Share.LocalPath, info.Active, snapshots, images, chain.Problems);
    }
}

/// <summary><c>nfsvol check --json</c>.</summary>
public sealed record CheckView(bool Healthy, IReadOnlyList<CheckFinding> Findings, IReadOnlyList<RepairAction> Repairs, IReadOnlyList<CheckFinding> Remaining,
    IReadOnlyList<ShareView> Shares)
{
    public static CheckView From(CheckReport report, IReadOnlyList<ShareView> shares) => new(report.Healthy, report.Findings, report.Repairs, report.Remaining, shares);
}

/// <summary>A checked share and what its file system offers (<c>check --json</c>).</summary>
/// <param name="ServerSideCopy">The file system copies itself (<c>copy_file_range</c>; NFS 4.2 server-side COPY).</param>
/// <param name="CopyMode">With <c>--measure-copy</c>: the faster copy mode (<c>DirectIo</c> or <c>PageCache</c>) and both rates.</param>
/// <param name="CopiesOnServer">That copy runs on a file server, not in this host's kernel (only then do clones use it by default).</param>
public sealed record ShareView(string Export, string LocalPath, bool ExtentSharing, long? MaxFileSize, long? FreeBytes, bool ServerSideCopy = false,
    NfsVolumeWorker.Storage.Shares.CopyModeMeasurement? CopyMode = null, bool CopiesOnServer = false)
{
    public static ShareView Of(NfsVolumeWorker.Storage.Shares.Share share)
    {
        var capabilities = NfsVolumeWorker.Storage.Shares.ShareCapabilities.Of(share);
        long? free = null;
        try
        {
            free = NfsVolumeWorker.Storage.Shares.ShareSpace.Available(share);
        }
        catch (IOException)
        {
        }
        return new ShareView(share.Export, share.LocalPath, capabilities.ExtentSharing, capabilities.MaxFileSize, free, capabilities.ServerSideCopy, capabilities.CopyMode, capabilities.CopiesOnServer);
    }
}

/// <summary><c>diff --json</c>: the ranges that may differ between two points, with totals.</summary>
public sealed record DiffView(string From, string To, long VirtualSize, long TotalBytes, int Count, IReadOnlyList<ByteRange> Extents)
{
    public static DiffView Of(ChangedExtents changed) =>
        new(changed.From.ToString(), changed.To.ToString(), changed.VirtualSize, changed.TotalBytes, changed.Extents.Count, changed.Extents);
}

/// <summary><c>--json</c> output of an operation.</summary>
public sealed record OperationView(string Outcome, string Message, string? ActiveFile, IReadOnlyList<string> FinishedInterrupted);

internal static class Output
{
    /// <summary>Reports a failure: <c>nfsvol: &lt;code&gt;: &lt;message&gt;</c> on stderr, <c>{"error": {code, message}}</c> on
    /// stdout with --json; returns the exit code the table maps <paramref name="code"/> to.</summary>
    public static int Fail(CliEnvironment environment, bool json, ErrorCode code, string message)
    {
        environment.Error.WriteLine($"nfsvol: {code.Name}: {message}");
        if (json)
        {
            WriteJson(environment.Out, new { error = new { code = code.Name, message } });
        }
        return ExitCodes.For(code);
    }

    public static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        Converters = { new JsonStringEnumConverter() },
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    };

    public static void WriteJson<T>(TextWriter writer, T value)
    {
        writer.WriteLine(JsonSerializer.Serialize(value, Json));
        writer.Flush();
    }

    public static int Result(CliSession session, OperationResult result)
    {
        if (session.Json)
        {
            WriteJson(session.Environment.Out, new OperationView(result.Outcome.ToString(), result.Message, result.ActiveFile, result.FinishedInterrupted));
            return ExitCodes.Ok;
        }
        foreach (var finished in result.FinishedInterrupted)
        {
            session.Console.MarkupLine($"[yellow]first finished an interrupted {Markup.Escape(finished)}[/]");
        }
        var label = result.Outcome == OperationOutcome.Completed ? "[green]done[/]" : "[blue]already done[/]";
        session.Console.MarkupLine($"{label}: {Markup.Escape(result.Message)}");
        if (result.ActiveFile is not null)
        {
            session.Console.MarkupLine($"active file: {Markup.Escape(result.ActiveFile)}");
        }
        return ExitCodes.Ok;
    }

    public static async Task<OperationResult> WithProgressAsync(CliSession session, string label, Func<IProgress<OperationProgress>?, Task<OperationResult>> operation)
    {
        if (!session.ShowProgress)
        {
            return await operation(null).ConfigureAwait(false);
        }
        OperationResult? result = null;
        await session.Console.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
            .StartAsync(async ctx =>
            {
                var task = ctx.AddTask(label, maxValue: 100);
                var progress = new DirectProgress(p =>
                {
                    task.Description = Markup.Escape(p.Phase + ProgressText.Figures(p.BytesDone, p.BytesTotal, p.TimeLeft?.TotalSeconds, " "));
                    task.Value = Math.Clamp(p.Fraction, 0, 1) * 100;
                });
                result = await operation(progress).ConfigureAwait(false);
                task.Value = 100;
            }).ConfigureAwait(false);
        return result!;
    }

    public static void RenderChain(IAnsiConsole console, ChainView view)
    {
        var tree = new Tree(new Markup($"volume [bold]{view.VolumeId}[/] on {Markup.Escape(view.Share)} ({Markup.Escape(view.Directory)})"));
        IHasTreeNodes parent = tree;
        foreach (var image in view.Images)
        {
            var parts = new List<string>
            {
                $"[bold]{Markup.Escape(image.File)}[/]" + (image.Active ? " [green](active)[/]" : ""),
                image.Format,
                $"virtual {SizeParser.Format(image.VirtualSize)}",
                $"allocated {SizeParser.Format(image.AllocatedBytes)}",
            };
            if (image.OverlayOfSnapshot is { } o)
            {
                parts.Add($"overlay of snapshot {o}");
            }
            if (image.DataOfSnapshot is { } d)
            {
                parts.Add($"holds data of snapshot {d}");
            }
            if (image.Dirty)
            {
                parts.Add("[yellow]dirty[/]");
            }
            parent = parent.AddNode(new Markup(string.Join(", ", parts)));
        }
        console.Write(tree);
        foreach (var problem in view.Problems)
        {
            console.MarkupLine($"[yellow]problem:[/] {Markup.Escape(problem)}");
        }
    }

    public static void RenderDiff(IAnsiConsole console, DiffView view)
    {
        var table = new Table().AddColumns("Offset", "Length", "End");
        foreach (var e in view.Extents)
        {
            table.AddRow(e.Offset.ToString(CultureInfo.InvariantCulture), e.Length.ToString(CultureInfo.InvariantCulture),
                (e.Offset + e.Length).ToString(CultureInfo.InvariantCulture));
        }
        if (view.Count > 0)
        {
            console.Write(table);
        }
        console.MarkupLine(Markup.Escape($"{view.From} -> {view.To}: {view.Count} range(s), {SizeParser.Format(view.TotalBytes)} "
            + $"({view.TotalBytes} bytes) of {SizeParser.Format(view.VirtualSize)} may differ"));
    }

    public static void RenderCheck(IAnsiConsole console, CheckReport report, bool repaired, IReadOnlyList<ShareView> shares)
    {
        foreach (var share in shares)
        {
            console.MarkupLine(Markup.Escape($"share {share.Export}: {(share.ExtentSharing ? "extent sharing (reflink): clones share the base's extents" : "no extent sharing: clones copy")}"
                + (!share.ServerSideCopy ? ", no server-side copy"
                    : share.CopiesOnServer ? ", server-side copy (copy_file_range)"
                    : ", in-kernel copy (copy_file_range; local, not used)")
                + (share.CopyMode is { } mode ? ", " + mode.Describe() : "")
                + (share.FreeBytes is { } free ? $", {SizeParser.Format(free)} free" : "")));
        }
        if (report.Findings.Count == 0)
        {
            console.MarkupLine("[green]healthy[/]: no findings");
            return;
        }
        console.Write(FindingsTable(report.Findings, repaired ? "Findings" : null));
        if (!repaired)
        {
            console.MarkupLine(report.Healthy ? "[green]healthy[/]" : "[yellow]problems found[/]; 'nfsvol check --repair' fixes those marked repairable");
            return;
        }
        var actions = new Table().Title("Repairs").AddColumns("Volume", "Finding", "Action", "Result");
        foreach (var r in report.Repairs)
        {
            actions.AddRow(Cell(r.VolumeId.ToString()), Cell(r.Kind.ToString()), Cell(r.Action),
                r.Succeeded ? new Markup("[green]ok[/]") : new Markup($"[red]failed[/]: {Markup.Escape(r.Error ?? "")}"));
        }
        console.Write(actions);
        if (report.Remaining.Any(f => f.IsProblem))
        {
            console.Write(FindingsTable(report.Remaining, "Remaining"));
            console.MarkupLine("[yellow]problems remain[/]");
        }
        else
        {
            console.MarkupLine("[green]healthy[/] after repair");
        }
    }

    private static Table FindingsTable(IEnumerable<CheckFinding> findings, string? title)
    {
        var table = new Table().AddColumns("Volume", "Severity", "Finding", "Repairable", "Details");
        if (title is not null)
        {
            table.Title(title);
        }
        foreach (var f in findings)
        {
            var severity = f.Severity switch
            {
                FindingSeverity.Error => new Markup("[red]error[/]"),
                FindingSeverity.Warning => new Markup("[yellow]warning[/]"),
                _ => new Markup("info"),
            };
            table.AddRow(Cell(f.VolumeId.ToString()), severity, Cell(f.Kind.ToString()), Cell(f.Repairable ? "yes" : "no"), Cell(f.Message));
        }
        return table;
    }

    public static void RenderConnectionInfo(CliSession session, ConnectionInfo info)
    {
        var cinderShape = new Dictionary<string, object?>
        {
            ["driver_volume_type"] = info.DriverVolumeType,
            ["data"] = new Dictionary<string, object?>
            {
                ["export"] = info.Export,
                ["name"] = info.Name,
                ["options"] = info.Options,
                ["format"] = info.Format,
            },
            ["mount_point_base"] = info.MountPointBase,
            ["virtual_size"] = info.VirtualSize,
        };
        if (session.Json)
        {
            WriteJson(session.Environment.Out, cinderShape);
            return;
        }
        var table = new Table().AddColumns("Key", "Value");
        table.AddRow(Cell("driver_volume_type"), Cell(info.DriverVolumeType));
        table.AddRow(Cell("export"), Cell(info.Export));
        table.AddRow(Cell("name"), Cell(info.Name));
        table.AddRow(Cell("format"), Cell(info.Format));
        table.AddRow(Cell("options"), Cell(info.Options ?? "(none)"));
        table.AddRow(Cell("mount_point_base"), Cell(info.MountPointBase));
        table.AddRow(Cell("virtual size"), Cell($"{SizeParser.Format(info.VirtualSize)} ({info.VirtualSize} bytes)"));
        session.Console.Write(table);
    }

    private static Text Cell(string text) => new(text);

    private sealed class DirectProgress(Action<OperationProgress> report) : IProgress<OperationProgress>
    {
        public void Report(OperationProgress value) => report(value);
    }
}
