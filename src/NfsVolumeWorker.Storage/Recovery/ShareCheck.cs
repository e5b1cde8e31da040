using System.Collections.Immutable;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Storage.Chains;
using NfsVolumeWorker.Storage.Durability;
using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Storage.Info;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Locking;
using NfsVolumeWorker.Storage.Qcow2;
using NfsVolumeWorker.Storage.QemuImg;
using NfsVolumeWorker.Storage.Shares;

namespace NfsVolumeWorker.Storage.Recovery;

/// <summary>
/// <c>nfsvol check</c>: diagnoses every volume on a share (the .info file, the chain, leftovers, the
/// journal) and, on request, repairs what the qcow2 headers prove, one logged action at a time, each
/// under the volume's lock. Security refusals are reported and never repaired.
/// </summary>
public sealed class ShareCheck
{
    private const int MaxRepairsPerVolume = 32;

    private readonly ShareMap _shares;
    private readonly QemuImgRunner _qemuImg;
    private readonly VolumeEngine _engine;
    private readonly VolumeEngineOptions _options;
    private readonly ILogger _logger;

    public ShareCheck(ShareMap shares, QemuImgRunner qemuImg, VolumeEngine engine, IOptions<VolumeEngineOptions> options, ILogger<ShareCheck> logger)
    {
        _shares = shares;
        _qemuImg = qemuImg;
        _engine = engine;
        _options = options.Value;
        _logger = logger;
    }

    /// <summary>Checks (and with <paramref name="repair"/> repairs) one share.</summary>
    /// <param name="share">The share's export, or null for the only configured one.</param>
    /// <param name="volumeId">Only this volume; null for every volume on the share.</param>
    /// <param name="repair">Repair what the headers prove.</param>
    /// <param name="baseFormat">The base images' format when the operator knows it; null to read it from the header.</param>
    /// <param name="cancellationToken">Stops between volumes and repairs.</param>
    public async Task<CheckReport> CheckAsync(string? share, Guid? volumeId, bool repair, ImageFormat? baseFormat = null, CancellationToken cancellationToken = default)
    {
        var s = _shares.Resolve(share);
        if (!Directory.Exists(s.LocalPath))
        {
            throw new StorageException(StorageErrorCode.ShareUnavailable, $"Share {s.Export} is not available: {s.LocalPath} does not exist (not mounted?).");
        }
        var volumes = volumeId is { } only ? [Ids.Require(only, "volume id")] : VolumesOn(s);
        if (volumeId is { } requested && !VolumesOn(s).Contains(requested))
        {
            throw new StorageException(StorageErrorCode.VolumeNotFound, $"Volume {requested} has no files and no journal entry on {s.Export}.") { VolumeId = requested };
        }
        var findings = new List<CheckFinding>();
        var repairs = new List<RepairAction>();
        var remaining = new List<CheckFinding>();
        foreach (var v in volumes)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var first = Diagnose(s, v, baseFormat);
            findings.AddRange(first);
            if (repair && first.Any(f => f.Repairable))
            {
                repairs.AddRange(await RepairVolumeAsync(s, v, baseFormat, cancellationToken).ConfigureAwait(false));
                remaining.AddRange(Diagnose(s, v, baseFormat));
            }
            else
            {
                remaining.AddRange(first);
            }
        }
        return new CheckReport(findings, repairs, remaining);
    }

    /// <summary>Every volume with a file, a temp file or a journal entry on the share, in id order.</summary>
    public static IReadOnlyList<Guid> VolumesOn(Share share)
    {
        var ids = new HashSet<Guid>();
        foreach (var path in Directory.EnumerateFiles(share.LocalPath))
        {
            var name = Path.GetFileName(path);
            if (VolumeFileNames.TryParse(name, out var id, out _) || TryParseTemp(name, out id))
            {
                ids.Add(id);
            }
        }
        foreach (var id in OperationJournal.VolumesWithEntries(share))
        {
            ids.Add(id);
        }
        return [.. ids.OrderBy(i => VolumeFileNames.Format(i), StringComparer.Ordinal)];
    }

    /// <summary>Diagnoses one volume (takes no lock, changes nothing).</summary>
    public static IReadOnlyList<CheckFinding> Diagnose(Share share, Guid volumeId, ImageFormat? baseFormat = null)
    {
        var findings = new List<CheckFinding>();
        void Add(FindingSeverity severity, FindingKind kind, string message, string? file = null, RepairPlan? plan = null) =>
            findings.Add(new CheckFinding(share.Export, volumeId, severity, kind, message, plan is not null, file) { Plan = plan });

        var baseName = VolumeFileNames.Base(volumeId);
        var infoName = VolumeFileNames.Info(volumeId);
        var images = new List<string>();
        var temps = new List<string>();
        var hasInfo = false;
        foreach (var path in Directory.EnumerateFiles(share.LocalPath, "*" + baseName + "*"))
        {
            var name = Path.GetFileName(path);
            if (VolumeFileNames.IsImageOf(volumeId, name))
            {
                images.Add(name);
            }
            else if (name == infoName)
            {
                hasInfo = true;
            }
            else if (TryParseTemp(name, out var owner) && owner == volumeId)
            {
                temps.Add(name);
            }
        }
        images.Sort(StringComparer.Ordinal);
        temps.Sort(StringComparer.Ordinal);

        if (VolumeLock.IsHeld(share, volumeId))
        {
            Add(FindingSeverity.Info, FindingKind.VolumeBusy, "an operation holds the volume's lock right now; what follows may be its intermediate state");
        }

        try
        {
            if (OperationJournal.Read(share, volumeId) is { } pending)
            {
                Add(FindingSeverity.Warning, FindingKind.PendingOperation,
                    $"interrupted operation in the journal: {pending.Describe()} (started {pending.StartedAt:u}); the next operation on the volume finishes it",
                    null, new RepairPlan.FinishJournal());
            }
        }
        catch (StorageException e)
        {
            Add(FindingSeverity.Error,
                e.Code == StorageErrorCode.UnsafePath ? FindingKind.SecurityRefusal : FindingKind.InfoFileCorrupt,
                $"journal entry unreadable: {e.Message}");
        }

        foreach (var temp in temps)
        {
            Add(FindingSeverity.Warning, FindingKind.TempFile, $"leftover temp file {temp} from an interrupted write", temp, new RepairPlan.RemoveFile(temp));
        }

        // Headers of every image of the volume (not only the chain): orphans and rebuilds need them.
        var headers = new Dictionary<string, ImageHeader>(StringComparer.Ordinal);
        foreach (var name in images)
        {
            try
            {
                DurableFile.EnsureNotSymlink(share.PathOf(name));
                headers[name] = ImageHeaderReader.Read(share.PathOf(name));
            }
            catch (StorageException e) when (e.Code == StorageErrorCode.UnsafePath)
            {
                Add(FindingSeverity.Error, FindingKind.SecurityRefusal, e.Message, name);
            }
            catch (StorageException e)
            {
                Add(FindingSeverity.Error, FindingKind.ImageUnusable, $"{name}: {e.Message}", name);
            }
        }

        if (images.Count == 0 && !hasInfo)
        {
            return findings;
        }
        if (!images.Contains(baseName) && !hasInfo)
        {
            Add(FindingSeverity.Error, FindingKind.VolumeIncomplete,
                $"files of the volume exist ({string.Join(", ", images)}) but neither {baseName} nor {infoName}; not touched");
            return findings;
        }

        // The .info file.
        VolumeInfo? info;
        try
        {
            info = VolumeChainReader.ReadInfo(share, volumeId);
        }
        catch (StorageException e) when (e.Code == StorageErrorCode.InfoFileCorrupt && !ParsesAsInfo(share.PathOf(infoName)))
        {
            var rebuilt = TryRebuildInfo(volumeId, headers, out var why);
            Add(FindingSeverity.Error, FindingKind.InfoFileCorrupt,
                rebuilt is null ? $"{e.Message} It cannot be rebuilt from the headers: {why}." : $"{e.Message} The headers prove its content: {Describe(rebuilt)}.",
                infoName, rebuilt is null ? null : new RepairPlan.WriteInfo(rebuilt, "the .info file was corrupt"));
            return findings;
        }
        catch (StorageException e)
        {
            // A symlink, or names of foreign files in .info: someone arranged this; never repaired.
            Add(FindingSeverity.Error, FindingKind.SecurityRefusal, e.Message, infoName);
            return findings;
        }

        // The chain.
        VolumeChain chain;
        try
        {
            chain = VolumeChainReader.Read(share, volumeId, baseFormat);
        }
        catch (StorageException e) when (e.Code == StorageErrorCode.ChainBroken)
        {
            DiagnoseBrokenChain(share, volumeId, info, images, headers, baseFormat, e, findings);
            return findings;
        }
        catch (StorageException e) when (e.Code is StorageErrorCode.InvalidBackingFile or StorageErrorCode.UnsafePath)
        {
            Add(FindingSeverity.Error, FindingKind.SecurityRefusal, e.Message);
            return findings;
        }
        catch (StorageException e)
        {
            Add(FindingSeverity.Error, FindingKind.ImageUnusable, e.Message);
            return findings;
        }

        var effective = chain.Info;
        var staleKeys = new List<Guid>();
        foreach (var (snapshotId, overlay) in effective.Snapshots.OrderBy(kv => kv.Value, StringComparer.Ordinal))
        {
            if (chain.Find(overlay) is not null)
            {
                continue;
            }
            if (!File.Exists(share.PathOf(overlay)))
            {
                staleKeys.Add(snapshotId);
                Add(FindingSeverity.Warning, FindingKind.StaleSnapshotRecord,
                    $"snapshot {snapshotId} is recorded as {overlay}, which does not exist", overlay,
                    new RepairPlan.WriteInfo(staleKeys.Aggregate(effective, (i, k) => i.WithoutSnapshot(k)), $"dropped stale snapshot record(s) {string.Join(", ", staleKeys)}"));
            }
            else
            {
                Add(FindingSeverity.Warning, FindingKind.StaleSnapshotRecord,
                    $"snapshot {snapshotId}'s overlay {overlay} exists but is not in the active chain (an interrupted delete?); run 'nfsvol snapshot delete' for it again", overlay);
            }
        }
        foreach (var image in chain.Images.Where(i => i.FileName != baseName && i.SnapshotId is null))
        {
            var rebuilt = TryRebuildInfo(volumeId, headers, out var why);
            Add(FindingSeverity.Warning, FindingKind.UnrecordedOverlay,
                rebuilt is null
                    ? $"{image.FileName} is in the chain but no snapshot in the .info file names it; the headers do not prove a mapping: {why}"
                    : $"{image.FileName} is in the chain but no snapshot in the .info file names it; the headers prove {Describe(rebuilt)}",
                image.FileName, rebuilt is null ? null : new RepairPlan.WriteInfo(rebuilt, $"recorded {image.FileName}"));
        }
        if (chain.Base.FileName != baseName)
        {
            Add(FindingSeverity.Error, FindingKind.ChainBroken, $"the chain ends at {chain.Base.FileName}, not at {baseName}", chain.Base.FileName);
        }
        foreach (var image in chain.Images.Where(i => i.IsDirty))
        {
            Add(FindingSeverity.Warning, FindingKind.DirtyImage,
                $"{image.FileName} has the qcow2 dirty flag (not closed cleanly); 'qemu-img check -r leaks' fixes refcounts, nfsvol does not", image.FileName);
        }

        // Orphans: overlays nothing reaches (not in the chain, not in .info, no image's backing file).
        var referenced = new HashSet<string>(chain.Images.Select(i => i.FileName), StringComparer.Ordinal);
        referenced.UnionWith(effective.Snapshots.Values);
        referenced.Add(effective.Active);
        foreach (var header in headers.Values)
        {
            if (header.Qcow2?.BackingFile is { } b)
            {
                referenced.Add(b);
            }
        }
        foreach (var name in images.Where(n => n != baseName && !referenced.Contains(n)))
        {
            Add(FindingSeverity.Warning, FindingKind.OrphanOverlay,
                $"orphan overlay {name}: not in the chain, not in the .info file, no image uses it (a crash before the .info write?)", name,
                headers.ContainsKey(name) ? new RepairPlan.RemoveFile(name) : null);
        }
        return findings;
    }

    private static void DiagnoseBrokenChain(Share share, Guid volumeId, VolumeInfo? info, List<string> images,
        Dictionary<string, ImageHeader> headers, ImageFormat? baseFormat, StorageException error, List<CheckFinding> findings)
    {
        void Add(FindingSeverity severity, FindingKind kind, string message, string? file = null, RepairPlan? plan = null) =>
            findings.Add(new CheckFinding(share.Export, volumeId, severity, kind, message, plan is not null, file) { Plan = plan });

        var baseName = VolumeFileNames.Base(volumeId);
        var active = info?.Active ?? baseName;
        if (!headers.ContainsKey(active))
        {
            var rebuilt = TryRebuildInfo(volumeId, headers, out var whyNoRebuild);
            Add(FindingSeverity.Error, FindingKind.ActiveMissing,
                rebuilt is null
                    ? $"the active file {active} named by the .info file does not exist; the headers do not prove another: {whyNoRebuild}"
                    : $"the active file {active} named by the .info file does not exist (an interrupted delete of the newest snapshot?); the headers prove {Describe(rebuilt)}",
                active, rebuilt is null ? null : new RepairPlan.WriteInfo(rebuilt, $"the active file {active} was missing"));
            return;
        }

        // Walk down from the active image to the first missing backing file.
        var above = new List<string>();
        var name = active;
        string? missing = null;
        while (true)
        {
            if (above.Contains(name))
            {
                Add(FindingSeverity.Error, FindingKind.ChainBroken, error.Message, name);
                return;
            }
            above.Add(name);
            var backing = BackingOf(name, headers, baseName);
            if (backing is null)
            {
                break;
            }
            if (!headers.ContainsKey(backing))
            {
                missing = backing;
                break;
            }
            name = backing;
        }
        if (missing is null)
        {
            Add(FindingSeverity.Error, FindingKind.ChainBroken, error.Message);
            return;
        }

        var broken = above[^1];
        // Candidates: the base or recorded overlays (an unrecorded overlay is never what a snapshot delete
        // left behind) that no other such image names as backing file, outside the part above the break,
        // whose own chain reaches the base.
        var eligible = images.Where(i => headers.ContainsKey(i) && (i == baseName || (info?.Snapshots.ContainsValue(i) ?? false))).ToList();
        var referenced = eligible.Select(i => BackingOf(i, headers, baseName)).OfType<string>().ToHashSet(StringComparer.Ordinal);
        var candidates = eligible.Where(i => !above.Contains(i) && !referenced.Contains(i) && ReachesBase(i, headers, baseName)).ToList();
        var dropKeys = info?.Snapshots.Where(kv => kv.Value == missing).Select(kv => kv.Key).ToList() ?? [];
        RepairPlan? plan = null;
        var why = candidates.Count == 1 ? null : $"{candidates.Count} candidate images ({string.Join(", ", candidates)}), need exactly one";
        if (candidates.Count == 1)
        {
            var format = FormatOf(candidates[0], headers, baseName, baseFormat, out var whyNot);
            if (format is { } f)
            {
                plan = new RepairPlan.Repoint(broken, candidates[0], f, dropKeys);
            }
            else
            {
                why = whyNot;
            }
        }
        Add(FindingSeverity.Error, FindingKind.BackingFileMissing,
            plan is RepairPlan.Repoint p
                ? $"{broken} names backing file {missing}, which does not exist (Cinder's middle-snapshot delete interrupted after the delete, before the rebase); the only unreferenced image is {p.NewBacking}: re-point {broken} onto it ({p.NewBackingFormat.ToQemuName()})"
                  + (dropKeys.Count > 0 ? $" and drop snapshot record(s) {string.Join(", ", dropKeys)}" : "")
                : $"{broken} names backing file {missing}, which does not exist; not repairable: {why}",
            broken, plan);
    }

    /// <summary>
    /// The .info the headers prove: the one image nobody backs onto whose chain reaches the base is
    /// active, and each overlay <c>volume-&lt;vol&gt;.&lt;snap&gt;</c> in that chain is snapshot &lt;snap&gt;.
    /// Null (with the reason) when the headers do not decide.
    /// </summary>
    internal static VolumeInfo? TryRebuildInfo(Guid volumeId, IReadOnlyDictionary<string, ImageHeader> headers, out string why)
    {
        var baseName = VolumeFileNames.Base(volumeId);
        if (!headers.ContainsKey(baseName))
        {
            why = $"{baseName} does not exist or is unreadable";
            return null;
        }
        foreach (var (name, header) in headers)
        {
            if (header.Qcow2?.BackingFile is { } b && (name != baseName || header.Kind == ImageKind.Qcow2) && !VolumeFileNames.IsImageOf(volumeId, b))
            {
                why = $"{name} names backing file '{b}', which is not a file of the volume";
                return null;
            }
        }
        var referenced = headers.Where(kv => kv.Key != baseName).Select(kv => kv.Value.Qcow2?.BackingFile).OfType<string>().ToHashSet(StringComparer.Ordinal);
        var tops = headers.Keys.Where(n => !referenced.Contains(n) && ReachesBase(n, headers, baseName)).Order(StringComparer.Ordinal).ToList();
        if (tops.Count != 1)
        {
            why = tops.Count == 0 ? "no image chain reaches the base" : $"{tops.Count} images could be active ({string.Join(", ", tops)})";
            return null;
        }
        var snapshots = ImmutableDictionary.CreateBuilder<Guid, string>();
        for (var name = tops[0]; name != baseName; name = BackingOf(name, headers, baseName)!)
        {
            var suffix = name[(baseName.Length + 1)..];
            if (!Guid.TryParseExact(suffix, "D", out var snapshotId) || VolumeFileNames.Format(snapshotId) != suffix)
            {
                why = $"{name} is not named volume-<volume>.<snapshot uuid>, so its snapshot is unknown";
                return null;
            }
            snapshots.Add(snapshotId, name);
        }
        why = "";
        return new VolumeInfo(tops[0], snapshots.ToImmutable());
    }

    /// <summary>The backing file an image names; the base never has one (its header may be guest data).</summary>
    private static string? BackingOf(string name, IReadOnlyDictionary<string, ImageHeader> headers, string baseName) =>
        name == baseName ? null : headers.TryGetValue(name, out var h) ? h.Qcow2?.BackingFile : null;

    private static bool ReachesBase(string name, IReadOnlyDictionary<string, ImageHeader> headers, string baseName)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var current = name;
        while (current != baseName)
        {
            if (!seen.Add(current) || !headers.TryGetValue(current, out var h) || h.Qcow2 is null || h.Qcow2.BackingFile is not { } next)
            {
                return false;
            }
            current = next;
        }
        return headers.ContainsKey(baseName);
    }

    private static ImageFormat? FormatOf(string name, Dictionary<string, ImageHeader> headers, string baseName, ImageFormat? baseFormat, out string why)
    {
        why = "";
        var header = headers[name];
        if (name != baseName)
        {
            if (header.Kind == ImageKind.Qcow2)
            {
                return ImageFormat.Qcow2;
            }
            why = $"{name} is an overlay without a qcow2 header";
            return null;
        }
        if (baseFormat is { } known)
        {
            return known;
        }
        switch (header.Kind)
        {
            case ImageKind.Qcow2 when header.Qcow2?.BackingFile is null:
                return ImageFormat.Qcow2;
            case ImageKind.Qcow2:
                why = $"{name} has a qcow2 header naming a backing file; give --base-format if it is raw";
                return null;
            case ImageKind.Raw:
                return ImageFormat.Raw;
            default:
                why = $"{name} is encrypted";
                return null;
        }
    }

    private static bool ParsesAsInfo(string path)
    {
        try
        {
            InfoFile.Read(path);
            return true;
        }
        catch (StorageException)
        {
            return false;
        }
    }

    /// <summary>Temp files are <c>.&lt;target&gt;.tmp-&lt;hex&gt;</c>; the target names the volume.</summary>
    internal static bool TryParseTemp(string name, out Guid volumeId)
    {
        volumeId = Guid.Empty;
        if (!DurableFile.IsTempName(name) || !name.StartsWith("." + VolumeFileNames.Prefix, StringComparison.Ordinal))
        {
            return false;
        }
        var start = 1 + VolumeFileNames.Prefix.Length;
        return name.Length >= start + 36 && Guid.TryParseExact(name.AsSpan(start, 36), "D", out volumeId);
    }

    private static string Describe(VolumeInfo info) =>
        $"active {info.Active}" + (info.Snapshots.Count == 0 ? ", no snapshots" : ", snapshots " + string.Join(", ", info.Snapshots.OrderBy(kv => kv.Value, StringComparer.Ordinal).Select(kv => $"{kv.Key} -> {kv.Value}")));

    private async Task<List<RepairAction>> RepairVolumeAsync(Share share, Guid volumeId, ImageFormat? baseFormat, CancellationToken cancellationToken)
    {
        var actions = new List<RepairAction>();
        var attempted = new HashSet<(FindingKind, string?)>();
        for (var i = 0; i < MaxRepairsPerVolume; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var next = Diagnose(share, volumeId, baseFormat)
                .Where(f => f.Plan is not null && !attempted.Contains((f.Kind, f.File)))
                .OrderBy(f => Priority(f.Kind))
                .FirstOrDefault();
            if (next is null)
            {
                break;
            }
            attempted.Add((next.Kind, next.File));
            actions.Add(await RepairAsync(share, volumeId, next, baseFormat, cancellationToken).ConfigureAwait(false));
        }
        return actions;
    }

    // Header-proven repairs of the chain first (an engine resume needs a readable chain), then the
    // journal (the engine finishes its own operation), then leftovers.
    private static int Priority(FindingKind kind) => kind switch
    {
        FindingKind.InfoFileCorrupt or FindingKind.ActiveMissing => 0,
        FindingKind.BackingFileMissing => 1,
        FindingKind.PendingOperation => 2,
        FindingKind.StaleSnapshotRecord or FindingKind.UnrecordedOverlay => 3,
        FindingKind.OrphanOverlay => 4,
        _ => 5,
    };

    private async Task<RepairAction> RepairAsync(Share share, Guid volumeId, CheckFinding finding, ImageFormat? baseFormat, CancellationToken cancellationToken)
    {
        var description = finding.Kind.ToString();
        try
        {
            if (finding.Plan is RepairPlan.FinishJournal)
            {
                description = "finished the journaled operation";
                var finished = await _engine.FinishInterruptedAsync(share.Export, volumeId, cancellationToken).ConfigureAwait(false);
                description = finished is null ? "journal entry already gone" : $"finished the interrupted {finished}";
                RecoveryLog.Repaired(_logger, share.Export, volumeId, finding.Kind.ToString(), description);
                return new RepairAction(share.Export, volumeId, finding.Kind, description, true);
            }

            using var volumeLock = await VolumeLock.AcquireAsync(share, volumeId, _options.LockTimeout, cancellationToken).ConfigureAwait(false);
            // Diagnose again under the lock: act only on what is still true now.
            var current = Diagnose(share, volumeId, baseFormat).FirstOrDefault(f => f.Kind == finding.Kind && f.File == finding.File && f.Plan is not null);
            if (current is null)
            {
                description = $"{finding.Kind} of {finding.File ?? "the volume"} no longer present; nothing done";
                return new RepairAction(share.Export, volumeId, finding.Kind, description, true);
            }
            switch (current.Plan)
            {
                case RepairPlan.WriteInfo w:
                    description = $"wrote {VolumeFileNames.Info(volumeId)} from the headers ({w.Why}): {Describe(w.Info)}";
                    InfoFile.Write(share.PathOf(VolumeFileNames.Info(volumeId)), w.Info, _options.NewFileMode);
                    break;
                case RepairPlan.Repoint r:
                    description = $"re-pointed {r.Image} onto {r.NewBacking} (qemu-img rebase -u -F {r.NewBackingFormat.ToQemuName()})"
                        + (r.DropKeys.Count > 0 ? $" and dropped snapshot record(s) {string.Join(", ", r.DropKeys)}" : "");
                    var path = share.PathOf(r.Image);
                    await _qemuImg.RebaseUnsafeAsync(path, r.NewBacking, r.NewBackingFormat, cancellationToken).ConfigureAwait(false);
                    DurableFile.FsyncFile(path);
                    if (r.DropKeys.Count > 0 && VolumeChainReader.ReadInfo(share, volumeId) is { } info)
                    {
                        InfoFile.Write(share.PathOf(VolumeFileNames.Info(volumeId)), r.DropKeys.Aggregate(info, (i, k) => i.WithoutSnapshot(k)), _options.NewFileMode);
                    }
                    break;
                case RepairPlan.RemoveFile rm:
                    description = $"removed {rm.FileName}";
                    var filePath = share.PathOf(rm.FileName);
                    DurableFile.EnsureNotSymlink(filePath);
                    File.Delete(filePath);
                    DurableFile.FsyncDirectory(share.LocalPath);
                    break;
                default:
                    return new RepairAction(share.Export, volumeId, finding.Kind, "no repair known", false, "no repair plan");
            }
            RecoveryLog.Repaired(_logger, share.Export, volumeId, finding.Kind.ToString(), description);
            return new RepairAction(share.Export, volumeId, finding.Kind, description, true);
        }
        catch (Exception e) when (e is StorageException or IOException or UnauthorizedAccessException)
        {
            RecoveryLog.RepairFailed(_logger, share.Export, volumeId, finding.Kind.ToString(), description, e.Message);
            return new RepairAction(share.Export, volumeId, finding.Kind, description, false, e.Message);
        }
    }
}

/// <summary>Log messages of <c>check --repair</c> (event ids 5000-5099).</summary>
internal static partial class RecoveryLog
{
    [LoggerMessage(EventId = 5000, Level = LogLevel.Warning, Message = "check --repair on {Share}, volume {VolumeId}: {Finding}: {Action}")]
    public static partial void Repaired(ILogger logger, string share, Guid volumeId, string finding, string action);

    [LoggerMessage(EventId = 5001, Level = LogLevel.Error, Message = "check --repair on {Share}, volume {VolumeId}: {Finding}: {Action} failed: {Error}")]
    public static partial void RepairFailed(ILogger logger, string share, Guid volumeId, string finding, string action, string error);
}
