using Microsoft.Extensions.Options;
using NfsVolumeWorker.Storage.Errors;

namespace NfsVolumeWorker.Storage.Shares;

/// <summary>Resolves the share a request names to the local directory that serves it. Only configured
/// shares resolve: a request cannot point the engine at an arbitrary directory.</summary>
public sealed class ShareMap
{
    private readonly Dictionary<string, Share> _byExport = new(StringComparer.Ordinal);

    public ShareMap(IOptions<SharesOptions> options)
        : this(Build(options.Value)) { }

    public ShareMap(IEnumerable<Share> shares)
    {
        foreach (var share in shares)
        {
            _byExport[share.Export] = share;
        }
    }

    public IReadOnlyCollection<Share> All => _byExport.Values;

    /// <summary>The share named <paramref name="export"/>, or <see cref="StorageErrorCode.ShareNotConfigured"/>.</summary>
    public Share Resolve(string? export)
    {
        if (string.IsNullOrWhiteSpace(export))
        {
            return _byExport.Count switch
            {
                1 => _byExport.Values.First(),
                0 => throw new StorageException(StorageErrorCode.ShareNotConfigured, "No share is configured."),
                _ => throw new StorageException(StorageErrorCode.InvalidRequest, "The request names no share, and more than one is configured."),
            };
        }
        if (_byExport.TryGetValue(export.Trim(), out var share))
        {
            return share;
        }
        throw new StorageException(StorageErrorCode.ShareNotConfigured,
            $"Share '{export}' is not configured here; configured: {string.Join(", ", _byExport.Keys.Order(StringComparer.Ordinal))}.");
    }

    public static IReadOnlyList<Share> Build(SharesOptions options)
    {
        var shares = new List<Share>();
        foreach (var item in options.Items)
        {
            shares.Add(FromDefinition(options.MountPointBase, item.Export, item.Path, item.MountOptions, options.RequireMountedShares));
        }
        if (!string.IsNullOrWhiteSpace(options.SharesConfigFile))
        {
            foreach (var entry in NfsSharesFile.Load(options.SharesConfigFile))
            {
                if (shares.All(s => s.Export != entry.Export))
                {
                    shares.Add(FromDefinition(options.MountPointBase, entry.Export, null, entry.MountOptions, options.RequireMountedShares));
                }
            }
        }
        return shares;
    }

    /// <summary>A share from its export; a local absolute directory given as the export serves itself.</summary>
    public static Share FromDefinition(string mountPointBase, string export, string? path, string? mountOptions, bool requireMounted = false)
    {
        export = export.Trim();
        var isLocalDirectory = export.StartsWith('/');
        var local = !string.IsNullOrWhiteSpace(path)
            ? Path.GetFullPath(path)
            : isLocalDirectory ? Path.GetFullPath(export) : MountPoint.For(Path.GetFullPath(mountPointBase), export);
        return new Share(export, local.TrimEnd('/'), mountOptions) { MustBeMounted = requireMounted && !isLocalDirectory };
    }
}
