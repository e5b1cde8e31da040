using System.Text.RegularExpressions;

namespace NfsVolumeWorker.Storage.Layout;

/// <summary>
/// The file names Cinder's NFS driver uses for one volume (template <c>volume-%s</c>). Every file the
/// engine touches gets its name from here, never from input, so a request cannot name an arbitrary path.
/// </summary>
public static partial class VolumeFileNames
{
    /// <summary>Cinder's <c>volume_name_template</c>.</summary>
    public const string Prefix = "volume-";

    /// <summary>The base image: <c>volume-&lt;id&gt;</c>.</summary>
    public static string Base(Guid volumeId) => Prefix + Format(volumeId);

    /// <summary>The overlay created when snapshot <paramref name="snapshotId"/> was taken.</summary>
    public static string Overlay(Guid volumeId, Guid snapshotId) => Base(volumeId) + "." + Format(snapshotId);

    /// <summary>The snapshot bookkeeping file: <c>volume-&lt;id&gt;.info</c>.</summary>
    public static string Info(Guid volumeId) => Base(volumeId) + ".info";

    /// <summary>Cinder's lower-case, hyphenated UUID form.</summary>
    public static string Format(Guid id) => id.ToString("D");

    /// <summary>
    /// True when <paramref name="fileName"/> (a bare name, no directory) is an image file of
    /// <paramref name="volumeId"/>: the base, a snapshot overlay, or a legacy <c>.tmp-snap-&lt;hex&gt;</c> overlay.
    /// </summary>
    public static bool IsImageOf(Guid volumeId, string fileName)
    {
        var match = ImageName().Match(fileName);
        return match.Success && Guid.TryParseExact(match.Groups["vol"].Value, "D", out var id) && id == volumeId;
    }

    /// <summary>Parses any Cinder volume file name on a share into its volume id and kind.</summary>
    public static bool TryParse(string fileName, out Guid volumeId, out VolumeFileKind kind)
    {
        volumeId = Guid.Empty;
        kind = default;
        var match = ImageName().Match(fileName);
        if (match.Success)
        {
            if (!Guid.TryParseExact(match.Groups["vol"].Value, "D", out volumeId))
            {
                return false;
            }
            kind = match.Groups["suffix"].Success ? VolumeFileKind.Overlay : VolumeFileKind.Base;
            return true;
        }
        match = InfoName().Match(fileName);
        if (match.Success && Guid.TryParseExact(match.Groups["vol"].Value, "D", out volumeId))
        {
            kind = VolumeFileKind.Info;
            return true;
        }
        return false;
    }

    // Same shape as Cinder's backing-file check, without the optional absolute prefix: the engine only
    // accepts references relative to the image's own directory.
    [GeneratedRegex(@"^volume-(?<vol>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})(?<suffix>\.(tmp-snap-)?[0-9a-f-]+)?$", RegexOptions.CultureInvariant)]
    private static partial Regex ImageName();

    [GeneratedRegex(@"^volume-(?<vol>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.info$", RegexOptions.CultureInvariant)]
    private static partial Regex InfoName();
}

/// <summary>What a volume file on a share is.</summary>
public enum VolumeFileKind
{
    /// <summary><c>volume-&lt;id&gt;</c>.</summary>
    Base,
    /// <summary><c>volume-&lt;id&gt;.&lt;suffix&gt;</c>: a snapshot overlay.</summary>
    Overlay,
    /// <summary><c>volume-&lt;id&gt;.info</c>.</summary>
    Info,
}
