using System.Collections.Concurrent;
using NfsVolumeWorker.Storage.Durability;
using NfsVolumeWorker.Storage.Locking;

namespace NfsVolumeWorker.Storage.Shares;

/// <summary>What a share's file system offers the engine, found by trying it once per share and process.</summary>
/// <param name="ExtentSharing">Files can share extents (<c>FICLONE</c>: XFS with reflink, btrfs, NFS 4.2
/// <c>CLONE</c>): clones then cost what the overlays hold, not the whole volume.</param>
/// <param name="MaxFileSize">The largest file the file system holds (see <see cref="VolumeSizeLimit"/>), when known.</param>
/// <param name="HardLinks">Files can have a second name (<c>link</c>): a merge may then pull the lower image up into the
/// overlay and give it the lower image's name. Without, merges only commit down.</param>
/// <param name="ServerSideCopy">The file system copies between two of its files itself (<c>copy_file_range</c>: NFS
/// 4.2 turns it into a server-side <c>COPY</c>, no data over the wire; a local file system copies in the kernel).</param>
/// <param name="CopiesOnServer">That copy happens on a file server (an <c>nfs4</c> mount of 4.2, CIFS/SMB3), not in this
/// host's kernel: a local file system's in-kernel copy goes through this host's page cache, where gigabytes of dirty
/// pages make every other fsync on the machine wait for their writeback.</param>
public sealed record ShareCapabilities(bool ExtentSharing, long? MaxFileSize, bool HardLinks = false, bool ServerSideCopy = false, bool CopiesOnServer = false)
{
    private static readonly ConcurrentDictionary<string, ShareCapabilities> Probed = new(StringComparer.Ordinal);

    /// <summary>The fastest way to copy through qemu-img on this share, when it has been measured (see
    /// <see cref="CopyModeProbe"/>): the measurement is made at the first copy that needs it, not at probe time.</summary>
    public CopyModeMeasurement? CopyMode { get; init; }

    /// <summary>The share's capabilities, probed on first use (scratch files in the worker's directory: a one-block
    /// <c>FICLONE</c> and a one-block <c>copy_file_range</c> between them), with the latest copy-mode measurement;
    /// a share that cannot be probed now is probed again next time.</summary>
    public static ShareCapabilities Of(Share share)
    {
        ArgumentNullException.ThrowIfNull(share);
        if (!Probed.TryGetValue(share.LocalPath, out var known))
        {
            try
            {
                var serverSideCopy = ProbeServerSideCopy(share);
                var found = new ShareCapabilities(ProbeExtentSharing(share), VolumeSizeLimit.MaxFileSize(share),
                    HardLinks: ProbeHardLinks(share), ServerSideCopy: serverSideCopy,
                    CopiesOnServer: serverSideCopy && MountTable.Find(share.LocalPath) is { IsNetworkFileSystem: true });
                known = Probed.GetOrAdd(share.LocalPath, found);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or Errors.StorageException)
            {
                return new ShareCapabilities(false, null);
            }
        }
        return known with { CopyMode = CopyModeProbe.Latest(share) };
    }

    /// <summary>One line for logs, health and <c>nfsvol check</c>.</summary>
    public string Describe() =>
        (ExtentSharing ? "extent sharing (reflink): clones share the base's extents" : "no extent sharing: clones copy")
        + (!ServerSideCopy ? "; no server-side copy"
            : CopiesOnServer ? "; server-side copy (copy_file_range)"
            : "; in-kernel copy (copy_file_range; local, not used)")
        + (CopyMode is { } mode ? "; " + mode.Describe() : "; copy mode not measured yet")
        + (MaxFileSize is { } max ? $"; largest file {max} bytes" : "")
        + (HardLinks ? "" : "; no hard links: merges only commit down");

    private static bool ProbeHardLinks(Share share)
    {
        var dir = WorkerDirectories.Ensure(share, "tmp");
        var source = Path.Combine(dir, DurableFile.TempName("link-probe"));
        var target = Path.Combine(dir, DurableFile.TempName("link-probe"));
        try
        {
            File.WriteAllBytes(source, []);
            DurableFile.ReplaceWithLink(source, target);
            return true;
        }
        catch (Errors.StorageException)
        {
            return false;
        }
        finally
        {
            DurableFile.TryDelete(source);
            DurableFile.TryDelete(target);
        }
    }

    private static bool ProbeExtentSharing(Share share)
    {
        var dir = WorkerDirectories.Ensure(share, "tmp");
        var source = Path.Combine(dir, DurableFile.TempName("reflink-probe"));
        var target = Path.Combine(dir, DurableFile.TempName("reflink-probe"));
        try
        {
            File.WriteAllBytes(source, new byte[4096]);
            return Durability.ExtentSharing.TryClone(source, target, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        }
        finally
        {
            DurableFile.TryDelete(source);
            DurableFile.TryDelete(target);
        }
    }

    private static bool ProbeServerSideCopy(Share share)
    {
        var dir = WorkerDirectories.Ensure(share, "tmp");
        var source = Path.Combine(dir, DurableFile.TempName("copy-range-probe"));
        var target = Path.Combine(dir, DurableFile.TempName("copy-range-probe"));
        try
        {
            var block = new byte[4096];
            Array.Fill(block, (byte)0x5a);
            File.WriteAllBytes(source, block);
            File.WriteAllBytes(target, []);
            // A copy that "works" but leaves other bytes behind would be worse than none: check what arrived.
            var copies = Durability.ServerSideCopy.TryCopyRange(source, target, block.Length) && File.ReadAllBytes(target).AsSpan().SequenceEqual(block);
            // NFS before 4.2 accepts copy_file_range too, but the kernel moves the data over the wire: not server-side.
            return copies && MountTable.Find(share.LocalPath) is not { IsNfsWithoutServerSideCopy: true };
        }
        finally
        {
            DurableFile.TryDelete(source);
            DurableFile.TryDelete(target);
        }
    }
}
