namespace NfsVolumeWorker.Storage.Shares;

/// <summary>One line of Cinder's <c>nfs_shares_config</c> file: <c>host:/export [mount options]</c>.</summary>
public sealed record NfsSharesEntry(string Export, string? MountOptions);

/// <summary>Parser for Cinder's <c>nfs_shares_config</c> format: one share per line, optional mount
/// options after whitespace, <c>#</c> comments and blank lines ignored.</summary>
public static class NfsSharesFile
{
    public static IReadOnlyList<NfsSharesEntry> Parse(string text)
    {
        var entries = new List<NfsSharesEntry>();
        foreach (var rawLine in text.Split('\n'))
        {
            var line = rawLine.Trim();
            if (line.Length == 0 || line.StartsWith('#'))
            {
                continue;
            }
            // Cinder splits on whitespace: the first token is the share, the rest the mount options.
            var parts = line.Split((char[]?)null, 2, StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            entries.Add(new NfsSharesEntry(parts[0], parts.Length > 1 ? parts[1] : null));
        }
        return entries;
    }

    public static IReadOnlyList<NfsSharesEntry> Load(string path) => Parse(File.ReadAllText(path));
}
