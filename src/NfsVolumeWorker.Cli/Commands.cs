using System.CommandLine;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Messaging;
using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Recovery;
using NfsVolumeWorker.Storage.Shares;

namespace NfsVolumeWorker.Cli;

/// <summary>The command tree of nfsvol.</summary>
internal static class Commands
{
    public static readonly string RootDescription =
        "nfsvol: inspect, check, repair and operate Cinder-compatible qcow2 snapshot chains on NFS shares "
        + "(the same files, .info format and locks as NfsVolumeWorker; safe to run next to it). "
        + "Ids are UUIDs. Give the share with --share, --shares-config or NFSVOL_SHARE. "
        + ExitCodes.HelpText
        + " Test hook: NFSVOL_PAUSE_AT_STEP=<step> makes an operation print 'PAUSED <step>' to stderr at that step and hang (for crash tests).";

    public static RootCommand Build(GlobalOptions globals, CliEnvironment environment)
    {
        var root = new RootCommand(RootDescription);
        globals.AddTo(root);
        root.Add(ChainCommand(globals, environment));
        root.Add(DiffCommand(globals, environment));
        root.Add(CheckCommand(globals, environment));
        root.Add(VolumeCommand(globals, environment));
        root.Add(SnapshotCommand(globals, environment));
        root.Add(ConnectionInfoCommand(globals, environment));
        root.Add(BrokerCommands.Send(globals, environment));
        root.Add(BrokerCommands.Watch(globals, environment));
        root.Add(StatusCommand.Build(globals, environment));
        return root;
    }

    private static Argument<string> Id(string name, string description) => new(name) { Description = description };

    private static Option<string> SizeOption(bool required, string description) => new("--size")
    {
        Description = description + " Bytes, or a number with K, M, G, T (binary units), e.g. 10G.",
        Required = required,
        HelpName = "size",
    };

    private static Option<string?> FormatOption()
    {
        var o = new Option<string?>("--format")
        {
            Description = "Format of the new volume: raw or qcow2. Default raw (qcow2 with --qcow2-volumes).",
            HelpName = "raw|qcow2",
        };
        o.AcceptOnlyFromAmong("raw", "qcow2");
        return o;
    }

    private static ImageFormat? ParseFormat(string? value) => value switch
    {
        null => null,
        "raw" => ImageFormat.Raw,
        "qcow2" => ImageFormat.Qcow2,
        _ => throw new CliUsageException($"--format must be raw or qcow2; got '{value}'."),
    };

    private static Guid ParseId(string? value, string what) => Ids.Parse(value, what);

    /// <summary>Sets an action that runs with a session and maps failures to exit codes.</summary>
    private static void Handle(Command command, GlobalOptions globals, CliEnvironment environment, Func<ParseResult, CliSession, CancellationToken, Task<int>> body)
    {
        command.SetAction(async (parse, ct) =>
        {
            var json = parse.GetValue(globals.Json);
            try
            {
                using var session = CliSession.Create(parse, globals, environment);
                return await body(parse, session, ct).ConfigureAwait(false);
            }
            catch (CliUsageException e)
            {
                return Output.Fail(environment, json, ErrorCodes.Usage, e.Message);
            }
            catch (StorageException e)
            {
                return Output.Fail(environment, json, e.Code.ToErrorCode(), e.Message);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                return Output.Fail(environment, json, ErrorCodes.ShareUnavailable, e.Message);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                // A bug, not an expected failure: say so, with the stack for the report.
                return Output.Fail(environment, json, ErrorCodes.InternalError, e.ToString());
            }
        });
    }

    private static Command ChainCommand(GlobalOptions globals, CliEnvironment environment)
    {
        var volume = Id("volume-id", "The volume.");
        var command = new Command("chain", "Show a volume's chain as a tree, active image at the top: file, format, virtual and allocated size, "
            + "the snapshot each overlay was created at and the snapshot whose data each image holds (data of snapshot S = backing file of info[S]).")
        {
            volume,
        };
        Handle(command, globals, environment, (parse, session, _) =>
        {
            var id = ParseId(parse.GetValue(volume), "volume id");
            var chain = session.Engine.ReadChain(session.TargetShare, id);
            var view = ChainView.From(chain);
            if (session.Json)
            {
                Output.WriteJson(environment.Out, view);
            }
            else
            {
                Output.RenderChain(session.Console, view);
            }
            return Task.FromResult(ExitCodes.Ok);
        });
        return command;
    }

    private static Command DiffCommand(GlobalOptions globals, CliEnvironment environment)
    {
        var volume = Id("volume-id", "The volume.");
        var from = new Argument<string>("from") { Description = "The older point: 'base' or a snapshot id." };
        var to = new Argument<string>("to") { Description = "The newer point: a snapshot id or 'active'." };
        var command = new Command("diff", "List the byte ranges of a volume that may differ between two points of its history (for incremental "
            + "backup): what the images written in between hold (qemu-img map), plus any growth. Exact while the snapshots in between exist, "
            + "a safe superset after merges. Writes nothing. Table with totals, or --json.")
        {
            volume, from, to,
        };
        Handle(command, globals, environment, async (parse, session, ct) =>
        {
            var id = ParseId(parse.GetValue(volume), "volume id");
            var changed = await session.Engine.GetChangedExtentsAsync(session.TargetShare, id,
                VolumePoint.Parse(parse.GetValue(from)!), VolumePoint.Parse(parse.GetValue(to)!), cancellationToken: ct).ConfigureAwait(false);
            var view = DiffView.Of(changed);
            if (session.Json)
            {
                Output.WriteJson(environment.Out, view);
            }
            else
            {
                Output.RenderDiff(session.Console, view);
            }
            return ExitCodes.Ok;
        });
        return command;
    }

    private static Command CheckCommand(GlobalOptions globals, CliEnvironment environment)
    {
        var volume = new Option<string?>("--volume") { Description = "Check only this volume.", HelpName = "volume-id" };
        var repair = new Option<bool>("--repair")
        {
            Description = "Repair what the qcow2 headers prove, each action logged and under the volume's lock: rebuild an empty/truncated/corrupt .info, "
                + "re-point an image whose backing file is missing onto the only unreferenced image, finish journaled operations, drop stale snapshot records, "
                + "remove orphan overlays and temp files. Security refusals are never repaired.",
        };
        var baseFormat = new Option<string?>("--base-format")
        {
            Description = "Format of the volumes' base images when known (raw or qcow2); default: read from the header. Used when re-pointing onto a base image.",
            HelpName = "raw|qcow2",
        };
        baseFormat.AcceptOnlyFromAmong("raw", "qcow2");
        var measureCopy = new Option<bool>("--measure-copy")
        {
            Description = "Also measure which copy mode is faster on each share (O_DIRECT or page cache + fsync: a scratch image in the worker's tmp "
                + "directory copied three times each way, then removed), as the engine does before its first full copy.",
        };
        var probeSize = new Option<string>("--probe-size")
        {
            Description = "Size of the scratch image --measure-copy copies (default 256M, the engine's Engine:CopyModeProbeBytes).",
            HelpName = "size",
        };
        var command = new Command("check", "Diagnose every volume on the share(s) (or one): .info file, chain, orphan overlays, stale records, temp files, "
            + "journal, security refusals, dirty images; and what each share's file system offers (extent sharing, server-side copy, copy mode). "
            + "Exit code 0 healthy (or all repaired), 1 problems found, 3 a repair failed.")
        {
            volume, repair, baseFormat, measureCopy, probeSize,
        };
        Handle(command, globals, environment, async (parse, session, ct) =>
        {
            Guid? id = parse.GetValue(volume) is { } v ? ParseId(v, "volume id") : null;
            var format = ParseFormat(parse.GetValue(baseFormat));
            var doRepair = parse.GetValue(repair);
            var shares = id is null || session.TargetShare is null ? session.CheckShares : [session.TargetShare];
            var findings = new List<CheckFinding>();
            var repairs = new List<RepairAction>();
            var remaining = new List<CheckFinding>();
            foreach (var share in shares)
            {
                var report = await session.Check.CheckAsync(share, id, doRepair, format, ct).ConfigureAwait(false);
                findings.AddRange(report.Findings);
                repairs.AddRange(report.Repairs);
                remaining.AddRange(report.Remaining);
            }
            var total = new CheckReport(findings, repairs, remaining);
            var checkedShares = shares.Select(session.Shares.Resolve).Where(s => Directory.Exists(s.LocalPath)).ToList();
            if (parse.GetValue(measureCopy))
            {
                var bytes = parse.GetValue(probeSize) is { } size ? SizeParser.Parse(size, "--probe-size") : session.EngineOptions.CopyModeProbeBytes;
                if (bytes < 1024 * 1024)
                {
                    throw new CliUsageException($"--probe-size must be at least 1 MiB; got {bytes} bytes.");
                }
                foreach (var share in checkedShares)
                {
                    await CopyModeProbe.MeasureAsync(share, session.QemuImg, bytes, session.EngineOptions.CopyCoroutines,
                        TimeSpan.Zero, TimeProvider.System, ct).ConfigureAwait(false);
                }
            }
            var shareViews = checkedShares.Select(ShareView.Of).ToList();
            if (session.Json)
            {
                Output.WriteJson(environment.Out, CheckView.From(total, shareViews));
            }
            else
            {
                Output.RenderCheck(session.Console, total, doRepair, shareViews);
            }
            return total.AnyRepairFailed ? ExitCodes.Failed : total.Healthy ? ExitCodes.Ok : ExitCodes.ProblemsFound;
        });
        return command;
    }

    private static Command VolumeCommand(GlobalOptions globals, CliEnvironment environment)
    {
        var command = new Command("volume", "Create, delete, extend or clone volumes.");

        var createId = Id("volume-id", "The new volume.");
        var createSize = SizeOption(true, "Size of the volume.");
        var createFormat = FormatOption();
        var create = new Command("create", "Create an empty volume.") { createId, createSize, createFormat };
        Handle(create, globals, environment, async (parse, session, ct) =>
        {
            var request = new CreateVolumeRequest(session.TargetShare, ParseId(parse.GetValue(createId), "volume id"),
                SizeParser.Parse(parse.GetValue(createSize)!, "size"), ParseFormat(parse.GetValue(createFormat)));
            return Output.Result(session, await session.Engine.CreateVolumeAsync(request, ct).ConfigureAwait(false));
        });
        command.Add(create);

        var deleteId = Id("volume-id", "The volume.");
        var delete = new Command("delete", "Delete every file of a volume (images from the top down, then .info).") { deleteId };
        Handle(delete, globals, environment, async (parse, session, ct) =>
        {
            var request = new DeleteVolumeRequest(session.TargetShare, ParseId(parse.GetValue(deleteId), "volume id"));
            return Output.Result(session, await session.Engine.DeleteVolumeAsync(request, ct).ConfigureAwait(false));
        });
        command.Add(delete);

        var extendId = Id("volume-id", "The volume.");
        var extendSize = SizeOption(true, "New size (not smaller than now).");
        var extend = new Command("extend", "Grow a volume (its active image).") { extendId, extendSize };
        Handle(extend, globals, environment, async (parse, session, ct) =>
        {
            var request = new ExtendVolumeRequest(session.TargetShare, ParseId(parse.GetValue(extendId), "volume id"), SizeParser.Parse(parse.GetValue(extendSize)!, "size"));
            return Output.Result(session, await session.Engine.ExtendVolumeAsync(request, ct).ConfigureAwait(false));
        });
        command.Add(extend);

        var cloneSource = Id("source-volume-id", "The volume to copy.");
        var cloneTarget = Id("new-volume-id", "The new volume.");
        var cloneFormat = FormatOption();
        var cloneSize = SizeOption(false, "Size of the new volume (default: the source's).");
        var clone = new Command("clone", "Create a new volume as a full copy of a volume's current data (progress bar on a terminal).")
        {
            cloneSource, cloneTarget, cloneFormat, cloneSize,
        };
        Handle(clone, globals, environment, async (parse, session, ct) =>
        {
            var request = new CloneVolumeRequest(session.TargetShare, ParseId(parse.GetValue(cloneSource), "source volume id"),
                ParseId(parse.GetValue(cloneTarget), "new volume id"), ParseFormat(parse.GetValue(cloneFormat)),
                parse.GetValue(cloneSize) is { } s ? SizeParser.Parse(s, "size") : null);
            var result = await Output.WithProgressAsync(session, "copy", p => session.Engine.CloneVolumeAsync(request, p, ct)).ConfigureAwait(false);
            return Output.Result(session, result);
        });
        command.Add(clone);
        return command;
    }

    private static Command SnapshotCommand(GlobalOptions globals, CliEnvironment environment)
    {
        var command = new Command("snapshot", "Create, delete, clone from or revert to snapshots.");

        var createVolume = Id("volume-id", "The volume.");
        var createSnapshot = Id("snapshot-id", "The new snapshot.");
        var create = new Command("create", "Take a snapshot (a new qcow2 overlay becomes active).") { createVolume, createSnapshot };
        Handle(create, globals, environment, async (parse, session, ct) =>
        {
            var request = new CreateSnapshotRequest(session.TargetShare, ParseId(parse.GetValue(createVolume), "volume id"), ParseId(parse.GetValue(createSnapshot), "snapshot id"));
            return Output.Result(session, await session.Engine.CreateSnapshotAsync(request, ct).ConfigureAwait(false));
        });
        command.Add(create);

        var deleteVolume = Id("volume-id", "The volume.");
        var deleteSnapshot = Id("snapshot-id", "The snapshot.");
        var delete = new Command("delete", "Delete a snapshot anywhere in the chain (merges its data; progress bar on a terminal).") { deleteVolume, deleteSnapshot };
        Handle(delete, globals, environment, async (parse, session, ct) =>
        {
            var request = new DeleteSnapshotRequest(session.TargetShare, ParseId(parse.GetValue(deleteVolume), "volume id"), ParseId(parse.GetValue(deleteSnapshot), "snapshot id"));
            var result = await Output.WithProgressAsync(session, "merge", p => session.Engine.DeleteSnapshotAsync(request, p, ct)).ConfigureAwait(false);
            return Output.Result(session, result);
        });
        command.Add(delete);

        var cloneVolume = Id("volume-id", "The volume.");
        var cloneSnapshot = Id("snapshot-id", "The snapshot to copy.");
        var cloneTarget = Id("new-volume-id", "The new volume.");
        var cloneFormat = FormatOption();
        var cloneSize = SizeOption(false, "Size of the new volume (default: the snapshot's).");
        var clone = new Command("clone", "Create a new volume as a full copy of a snapshot (progress bar on a terminal).")
        {
            cloneVolume, cloneSnapshot, cloneTarget, cloneFormat, cloneSize,
        };
        Handle(clone, globals, environment, async (parse, session, ct) =>
        {
            var request = new CreateVolumeFromSnapshotRequest(session.TargetShare, ParseId(parse.GetValue(cloneVolume), "volume id"),
                ParseId(parse.GetValue(cloneSnapshot), "snapshot id"), ParseId(parse.GetValue(cloneTarget), "new volume id"),
                ParseFormat(parse.GetValue(cloneFormat)), parse.GetValue(cloneSize) is { } s ? SizeParser.Parse(s, "size") : null);
            var result = await Output.WithProgressAsync(session, "copy", p => session.Engine.CreateVolumeFromSnapshotAsync(request, p, ct)).ConfigureAwait(false);
            return Output.Result(session, result);
        });
        command.Add(clone);

        var revertVolume = Id("volume-id", "The volume.");
        var revertSnapshot = Id("snapshot-id", "The newest snapshot.");
        var revert = new Command("revert", "Discard every change since the newest snapshot.") { revertVolume, revertSnapshot };
        Handle(revert, globals, environment, async (parse, session, ct) =>
        {
            var request = new RevertToSnapshotRequest(session.TargetShare, ParseId(parse.GetValue(revertVolume), "volume id"), ParseId(parse.GetValue(revertSnapshot), "snapshot id"));
            return Output.Result(session, await session.Engine.RevertToSnapshotAsync(request, ct).ConfigureAwait(false));
        });
        command.Add(revert);
        return command;
    }

    private static Command ConnectionInfoCommand(GlobalOptions globals, CliEnvironment environment)
    {
        var volume = Id("volume-id", "The volume.");
        var size = SizeOption(false, "The size the volume should have; refused (SizeMismatch, exit 3) when the active image differs.");
        var command = new Command("connection-info", "Print what Cinder's initialize_connection returns for the volume, after its format and size checks.") { volume, size };
        Handle(command, globals, environment, (parse, session, _) =>
        {
            var request = new ConnectionInfoRequest(session.TargetShare, ParseId(parse.GetValue(volume), "volume id"),
                parse.GetValue(size) is { } s ? SizeParser.Parse(s, "size") : null);
            var info = session.Engine.GetConnectionInfo(request);
            Output.RenderConnectionInfo(session, info);
            return Task.FromResult(ExitCodes.Ok);
        });
        return command;
    }
}
