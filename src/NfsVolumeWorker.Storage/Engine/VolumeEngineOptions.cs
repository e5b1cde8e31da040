using System.ComponentModel.DataAnnotations;

namespace NfsVolumeWorker.Storage.Engine;

/// <summary>Engine behaviour. Bound from configuration section <c>Engine</c>; names follow Cinder's options.</summary>
public sealed class VolumeEngineOptions
{
    public const string SectionName = "Engine";

    /// <summary>New volumes are qcow2 instead of raw (Cinder's <c>nfs_qcow2_volumes</c>). Default false.</summary>
    public bool Qcow2Volumes { get; set; }

    /// <summary>New raw volumes are sparse (Cinder's <c>nfs_sparsed_volumes</c>). Default true.</summary>
    public bool SparsedVolumes { get; set; } = true;

    /// <summary>New files get mode 0660 instead of 0666 (Cinder's <c>nas_secure_file_permissions</c>). Default true.</summary>
    public bool SecureFilePermissions { get; set; } = true;

    /// <summary>How long an operation waits for another one on the same volume. Default 10 minutes.</summary>
    [Range(typeof(TimeSpan), "00:00:00", "1.00:00:00")]
    public TimeSpan LockTimeout { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>Pins how full copies write: true, O_DIRECT (<c>qemu-img convert -t none</c>); false, through the page
    /// cache followed by fsync. Both are durable before success. Unset (the default): the engine measures both on
    /// each share at its first full copy of at least <see cref="CopyModeProbeBytes"/> (again after
    /// <see cref="CopyModeRemeasureAfter"/>) and uses the faster; which one wins changed from day to day.</summary>
    public bool? CopyWithDirectIo { get; set; }

    /// <summary>Size of the scratch image the copy-mode measurement copies (three times per mode; it needs twice this
    /// much free space while it runs). Default 256 MiB: on a loaded test VM 64 and 128 MiB flipped between the modes
    /// from run to run (a small copy fits in the dirty-page budget, so the page cache looks fast), while 256 MiB agreed
    /// with copies of 512 MiB and more.</summary>
    [Range(1024 * 1024, 4L * 1024 * 1024 * 1024)]
    public long CopyModeProbeBytes { get; set; } = 256 * 1024 * 1024;

    /// <summary>How long a share's copy-mode measurement is used before the next full copy measures again. Default 1 day.</summary>
    [Range(typeof(TimeSpan), "00:00:00", "365.00:00:00")]
    public TimeSpan CopyModeRemeasureAfter { get; set; } = TimeSpan.FromDays(1);

    /// <summary>Full copies within one share use the file system's own copy where it offers one (<c>copy_file_range</c>
    /// through <c>qemu-img convert -C</c>; NFS 4.2: a server-side COPY, no data over the wire) instead of reading and
    /// writing. False: always read and write. Default true.</summary>
    public bool ServerSideCopy { get; set; } = true;

    /// <summary>Also copy with <c>copy_file_range</c> on a local file system (ext4, XFS without reflink), where the
    /// kernel copies through this host's page cache: barely faster than O_DIRECT there, and the gigabytes of dirty
    /// pages it leaves make every fsync on the host (other volumes' commands, the broker's) wait behind their
    /// writeback. Default false: local shares read and write in the measured copy mode.</summary>
    public bool LocalKernelCopy { get; set; }

    /// <summary>Clones share the base's extents where the share's file system offers it (FICLONE: XFS with reflink,
    /// btrfs, NFS 4.2 CLONE), writing only what the overlays hold. False forces full copies. Default true.</summary>
    public bool ShareExtents { get; set; } = true;

    /// <summary>Parallel coroutines for copies (<c>qemu-img convert -m</c>), 1..16. Default 8.</summary>
    [Range(1, 16)]
    public int CopyCoroutines { get; set; } = 8;

    /// <summary>The most a clone's full copy may write per second (<c>qemu-img convert -r</c>), what Cinder's
    /// <c>volume_copy_bps_limit</c> does for its copies; 0, the default, copies as fast as the share takes it. Where the
    /// worker shares a disk with other work (its other volumes' commands, a colocated broker), a full-speed copy makes every
    /// fsync on that disk wait behind the copy's writes; a limit trades the copy's duration for their latency
    /// (docs/clones.md). Copies that share extents write only the overlays' data and are not limited.</summary>
    [Range(0, long.MaxValue)]
    public long CopyBytesPerSecond { get; set; }

    /// <summary>The copy limit as a clone's result and <c>/health</c> say it, or null when copies are not limited.</summary>
    public string? CopyLimitDescription => CopyBytesPerSecond > 0
        ? FormattableString.Invariant($"at most {CopyBytesPerSecond / 1e6:0.#} MB/s (Engine:CopyBytesPerSecond)")
        : null;

    /// <summary>Snapshot and revert overlays are written natively, byte for byte what qemu 7.2's <c>qemu-img create</c>
    /// writes (see docs/snapshots.md), instead of spawning qemu-img. Inputs outside what the proof covers still go to
    /// qemu-img. False always runs qemu-img create (for comparison). Default true.</summary>
    public bool NativeOverlayHeaders { get; set; } = true;

    /// <summary>Which way a snapshot delete merges: <c>ByCost</c> moves the fewer bytes (commit the overlay down, or pull
    /// the image below up into it and give it that image's name), <c>AlwaysCommitDown</c> does what Cinder does,
    /// <c>PullUpWherePossible</c> forces the pull-up (benchmarks, tests). Default ByCost.</summary>
    public MergePlanning MergePlanning { get; set; } = MergePlanning.ByCost;

    /// <summary>Mode of new files: 0660, or 0666 without secure permissions.</summary>
    public UnixFileMode NewFileMode => SecureFilePermissions
        ? UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.GroupWrite
        : UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.OtherRead | UnixFileMode.OtherWrite;
}
