using Microsoft.Win32.SafeHandles;
using NfsVolumeWorker.Storage.Chains;
using NfsVolumeWorker.Storage.Diagnostics;
using NfsVolumeWorker.Storage.Durability;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.QemuImg;
using NfsVolumeWorker.Storage.Shares;

namespace NfsVolumeWorker.Storage.Engine;

/// <summary>Extent-sharing clones (see docs/clones.md): the base's extents shared, then the overlays up to the source
/// applied natively or by <c>qemu-img commit</c>. The clone's journal, copy and rename are in VolumeEngine.Clones.cs.</summary>
public sealed partial class VolumeEngine
{
    /// <summary>
    /// Builds a clone of <paramref name="source"/> in <paramref name="temp"/> at the cost of what changed since the
    /// base: the base's extents are shared (FICLONE), then what the overlays from the bottom up to the source hold is
    /// applied (the source chain is only read): natively for a raw base (<see cref="ApplyOverlayExtents"/>), otherwise
    /// by <c>qemu-img commit</c>. Returns how it was applied, or null when extents could not be shared after all (then
    /// nothing is left behind and the caller copies).
    /// </summary>
    private async Task<AppliedOverlays?> ShareBaseAndApplyOverlaysAsync(Share share, VolumeChain chain, ChainImage source, string temp, string targetName,
        IProgress<double>? progress, CancellationToken ct)
    {
        var layers = new List<ChainImage> { source };
        while (layers[0].BackingFile is { } below)
        {
            layers.Insert(0, chain.Find(below) ?? throw chain.Broken($"{layers[0].FileName} names {below}, which is not in the chain"));
        }
        // Read before anything is written: whether the overlays can be applied natively is known from the map alone.
        var extents = layers.Count > 1 && layers[0].Format == ImageFormat.Raw
            ? await _qemuImg.MapAsync(chain.PathOf(source.FileName), source.Format, ct).ConfigureAwait(false)
            : null;
        var notNative = extents is null ? null : WhyNotNative(extents, layers.Count - 1);
        if (!ExtentSharing.TryClone(chain.PathOf(layers[0].FileName), temp, FileMode))
        {
            return null;
        }
        if (layers[0].VirtualSize < source.VirtualSize)
        {
            // After an extend the overlays are larger than the base: grow the copy first, so their tails apply.
            await _qemuImg.ResizeAsync(temp, layers[0].Format, source.VirtualSize, ct).ConfigureAwait(false);
        }
        if (layers.Count == 1)
        {
            return new AppliedOverlays(0, 0, 0, 0, null);
        }
        if (extents is not null && notNative is null)
        {
            return ApplyOverlayExtents(chain, layers, extents, temp, progress, ct);
        }
        EngineLog.OverlaysByQemuImgCommit(_logger, source.FileName, notNative ?? $"the base is {layers[0].Format.ToQemuName()}");
        // The overlays' shared-extent scratch copies are chained onto the clone (each re-pointed at the one below,
        // the lowest at the clone) and committed into it by one qemu-img call, not one commit per overlay.
        long applied = 0;
        var scratches = new List<string>();
        try
        {
            var below = Path.GetFileName(temp);
            var belowFormat = layers[0].Format;
            for (var i = 1; i < layers.Count; i++)
            {
                var layerPath = chain.PathOf(layers[i].FileName);
                var scratch = share.PathOf(DurableFile.TempName(targetName));
                scratches.Add(scratch);
                if (!ExtentSharing.TryClone(layerPath, scratch, FileMode))
                {
                    File.Copy(layerPath, scratch, overwrite: false);
                }
                await _qemuImg.RebaseUnsafeAsync(scratch, below, belowFormat, ct).ConfigureAwait(false);
                (below, belowFormat) = (Path.GetFileName(scratch), ImageFormat.Qcow2);
                applied += FileOwnership.AllocatedBytes(layerPath);
            }
            await _qemuImg.CommitAsync(new CommitRequest(scratches[^1], Base: temp), progress, ct).ConfigureAwait(false);
        }
        finally
        {
            foreach (var scratch in scratches)
            {
                DurableFile.TryDelete(scratch);
            }
        }
        return new AppliedOverlays(applied, 0, applied, 0, "qemu-img commit");
    }

    /// <summary>Why the overlays of a raw base cannot be applied from the source's map: null when every range an
    /// overlay provides is either stored data at a known offset in its file or reads as zeroes.</summary>
    private static string? WhyNotNative(IReadOnlyList<MapExtent> extents, int baseDepth)
    {
        if (extents.FirstOrDefault(e => e.Depth > baseDepth) is { } deeper)
        {
            // Not expected (the engine read the same backing names): a map it cannot place is not applied by hand.
            return $"qemu-img maps {deeper.Length} bytes at {deeper.Start} to depth {deeper.Depth}, below the base at depth {baseDepth}";
        }
        return extents.FirstOrDefault(e => e.Depth < baseDepth && !(e.Data ? e.Offset is not null : e.Zero)) is { } e
            ? $"the image at depth {e.Depth} of the source's chain holds {e.Length} bytes at {e.Start} that qemu-img maps to no offset in its file (compressed or encrypted)"
            : null;
    }

    /// <summary>
    /// Applies to the raw clone <paramref name="temp"/> (the base's extents shared) every range the overlays provide,
    /// as the source's <c>qemu-img map</c> says, top-down resolved: stored data is shared from the overlay's file
    /// (FICLONERANGE: a qcow2 data cluster sits cluster-aligned in its file, so whole clusters share; nothing is read
    /// or written) or, where a range cannot share, copied from there (copy_file_range, else read and write); a range
    /// an overlay marks as zeroes is punched. The caller fsyncs the clone. The source chain is only read.
    /// </summary>
    private AppliedOverlays ApplyOverlayExtents(VolumeChain chain, List<ChainImage> layers, IReadOnlyList<MapExtent> extents, string temp,
        IProgress<double>? progress, CancellationToken ct)
    {
        var baseDepth = layers.Count - 1;
        var ranges = extents.Where(e => e.Depth < baseDepth).ToList();
        var total = Math.Max(1, ranges.Sum(e => e.Length));
        long shared = 0, copied = 0, zeroed = 0;
        var files = new Dictionary<int, SafeFileHandle>();
        try
        {
            using var target = File.OpenHandle(temp, System.IO.FileMode.Open, FileAccess.ReadWrite);
            foreach (var e in ranges)
            {
                ct.ThrowIfCancellationRequested();
                if (!e.Data)
                {
                    Holes.Zero(target, e.Start, e.Length);
                    zeroed += e.Length;
                }
                else
                {
                    if (!files.TryGetValue(e.Depth, out var overlay))
                    {
                        overlay = File.OpenHandle(chain.PathOf(layers[baseDepth - e.Depth].FileName), System.IO.FileMode.Open, FileAccess.Read);
                        files.Add(e.Depth, overlay);
                    }
                    if (ExtentSharing.TryCloneRange(overlay, e.Offset!.Value, target, e.Start, e.Length))
                    {
                        shared += e.Length;
                    }
                    else
                    {
                        ServerSideCopy.CopyRange(overlay, e.Offset!.Value, target, e.Start, e.Length);
                        copied += e.Length;
                    }
                }
                progress?.Report((double)(shared + copied + zeroed) / total);
            }
        }
        finally
        {
            foreach (var file in files.Values)
            {
                file.Dispose();
            }
        }
        EngineLog.OverlaysApplied(_logger, layers[^1].FileName, ranges.Count, shared, copied, zeroed);
        return new AppliedOverlays(shared + copied + zeroed, shared, copied, zeroed, null);
    }

    /// <summary>What applying the overlays to a sharing clone did: bytes of overlay ranges in all, of them shared
    /// with the overlays' files, copied (written), and zeroed; <paramref name="By"/> names the tool when not native.</summary>
    private sealed record AppliedOverlays(long Bytes, long Shared, long Copied, long Zeroed, string? By)
    {
        public string Describe() => By is not null
            ? $"applied {Bytes} bytes of overlay data with {By}"
            : $"applied {Bytes} bytes of overlay data ({Shared} shared with the overlays, {Copied} copied, {Zeroed} zeroed)";
    }
}
