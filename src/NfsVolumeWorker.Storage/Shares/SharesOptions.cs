using System.ComponentModel.DataAnnotations;

namespace NfsVolumeWorker.Storage.Shares;

/// <summary>Which shares this process serves. Bound from configuration section <c>Shares</c>.</summary>
public sealed class SharesOptions
{
    public const string SectionName = "Shares";

    /// <summary>Where shares are mounted, as Cinder's <c>nfs_mount_point_base</c>: a share without an
    /// explicit <see cref="ShareDefinition.Path"/> lives at <c>&lt;base&gt;/&lt;md5hex(export)&gt;</c>.</summary>
    [Required]
    public string MountPointBase { get; set; } = "/var/lib/nfsvolumeworker/mnt";

    /// <summary>A Cinder share (<c>host:/export</c>) must be mounted: its directory on another file system than
    /// its parent. One that is not is refused as <c>ShareUnavailable</c> instead of filling the local disk under
    /// the empty mount point. Local-directory shares are never checked. Default true (nfsvol: false; it works on
    /// whatever directory it is given).</summary>
    public bool RequireMountedShares { get; set; } = true;

    /// <summary>Optional Cinder <c>nfs_shares_config</c> file listing shares (one per line).</summary>
    public string? SharesConfigFile { get; set; }

    /// <summary>Shares listed directly: export, and optionally the local directory serving it.</summary>
    public IList<ShareDefinition> Items { get; } = [];
}

/// <summary>One configured share.</summary>
public sealed class ShareDefinition
{
    /// <summary>The share as Cinder names it (<c>host:/export</c>) or a local absolute directory.</summary>
    [Required]
    public string Export { get; set; } = "";

    /// <summary>Local directory holding the share's files; default <c>&lt;MountPointBase&gt;/&lt;md5hex(Export)&gt;</c>.</summary>
    public string? Path { get; set; }

    /// <summary>Mount options reported in connection info.</summary>
    public string? MountOptions { get; set; }
}
