using System.Security.Cryptography;
using System.Text;

namespace NfsVolumeWorker.Storage.Shares;

/// <summary>Cinder's (os-brick's) mount-point naming: <c>&lt;base&gt;/&lt;md5hex(share)&gt;</c>.</summary>
public static class MountPoint
{
    /// <summary>The md5 hex digest of the share string as UTF-8, lower case, as os-brick computes it.</summary>
    public static string HashOf(string export)
    {
        // MD5 here is a naming convention shared with Cinder, not a security measure.
#pragma warning disable CA5351
        var digest = MD5.HashData(Encoding.UTF8.GetBytes(export));
#pragma warning restore CA5351
        return Convert.ToHexStringLower(digest);
    }

    public static string For(string mountPointBase, string export) => Path.Combine(mountPointBase, HashOf(export));
}
