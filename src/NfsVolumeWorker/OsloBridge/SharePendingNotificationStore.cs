using System.Globalization;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Oslo;
using NfsVolumeWorker.Storage.Durability;
using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Storage.Shares;

namespace NfsVolumeWorker.OsloBridge;

/// <summary>
/// The oslo adapter's notification records on the shares: <c>.nfsvolumeworker/oslo-pending/&lt;command-id&gt;.json</c>
/// (command id in N format, as the outcome records), written atomically (<see cref="DurableFile.WriteAtomically"/>)
/// before the command is published. A claim renames the record to <c>&lt;command-id&gt;.claimed-&lt;unix-ms&gt;-&lt;nonce&gt;</c>:
/// rename is atomic on the file server, so of any number of claimers (threads, processes, hosts) exactly one
/// succeeds and the others get ENOENT. The claimer deletes the record once its notification is confirmed, or
/// renames it back when sending failed. A claim whose claimer died stays behind; its name carries the claim
/// time, and a start-up listing gives back claims older than the adapter's stale age.
/// </summary>
public sealed class SharePendingNotificationStore(ShareMap shares, IOptions<VolumeEngineOptions> engine, TimeProvider time) : IPendingNotificationStore
{
    public const string Folder = "oslo-pending";
    private const string RecordSuffix = ".json";
    private const string ClaimMarker = ".claimed-";

    public static string PathOf(Share share, Guid commandId) => Path.Combine(FolderOf(share), RecordName(commandId));

    private static string FolderOf(Share share) => Path.Combine(share.WorkerDirectory, Folder);

    private static string RecordName(Guid commandId) => commandId.ToString("N") + RecordSuffix;

    public void Save(string share, Guid commandId, ReadOnlySpan<byte> record)
    {
        var s = shares.Resolve(share);
        EnsureFolder(s);
        DurableFile.WriteAtomically(PathOf(s, commandId), record, engine.Value.NewFileMode);
    }

    private static void EnsureFolder(Share share)
    {
        var dir = FolderOf(share);
        DurableFile.EnsureNotSymlink(share.WorkerDirectory);
        DurableFile.EnsureNotSymlink(dir);
        if (Directory.Exists(dir))
        {
            return;
        }
        const UnixFileMode mode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute
            | UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.GroupExecute;
        if (!Directory.Exists(share.WorkerDirectory))
        {
            Directory.CreateDirectory(share.WorkerDirectory, mode);
            DurableFile.FsyncDirectory(share.LocalPath);
        }
        Directory.CreateDirectory(dir, mode);
        DurableFile.FsyncDirectory(share.WorkerDirectory);
    }

    public IPendingNotificationClaim? TryClaim(Guid commandId, string? share)
    {
        foreach (var s in InLookupOrder(share))
        {
            var record = PathOf(s, commandId);
            var claimed = Path.Combine(FolderOf(s), ClaimName(commandId));
            try
            {
                File.Move(record, claimed, overwrite: true); // rename(2): the one claimer that wins
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                continue; // not on this share (ENOENT: none, or claimed already), or the share is unreachable
            }
            byte[] bytes;
            try
            {
                bytes = File.ReadAllBytes(claimed);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                GiveBack(claimed, record);
                throw;
            }
            return new Claim(s.Export, record, claimed, bytes);
        }
        return null;
    }

    private IEnumerable<Share> InLookupOrder(string? share)
    {
        Share? first = null;
        if (!string.IsNullOrWhiteSpace(share))
        {
            try
            {
                first = shares.Resolve(share);
            }
            catch (StorageException)
            {
                // not a share of this worker: look on all
            }
        }
        if (first is not null)
        {
            yield return first;
        }
        foreach (var s in shares.All)
        {
            if (!ReferenceEquals(s, first))
            {
                yield return s;
            }
        }
    }

    private string ClaimName(Guid commandId) =>
        $"{commandId:N}{ClaimMarker}{time.GetUtcNow().ToUnixTimeMilliseconds().ToString(CultureInfo.InvariantCulture)}-{Guid.NewGuid():N}";

    private static void GiveBack(string claimed, string record)
    {
        try
        {
            File.Move(claimed, record, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // stays claimed: the next start gives it back once it is stale
        }
    }

    public IReadOnlyList<(string Share, Guid CommandId)> ListPending(TimeSpan staleClaimAge)
    {
        var found = new List<(string, Guid)>();
        var now = time.GetUtcNow();
        foreach (var share in shares.All)
        {
            var dir = FolderOf(share);
            List<string> names;
            try
            {
                if (!Directory.Exists(dir))
                {
                    continue;
                }
                names = Directory.EnumerateFiles(dir).Select(Path.GetFileName).OfType<string>().ToList();
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                continue; // an unreachable share: its records wait for its terminal events or the next start
            }
            foreach (var name in names)
            {
                if (DurableFile.IsTempName(name))
                {
                    continue; // an interrupted Save: the message was not acked, its redelivery writes the record again
                }
                if (name.EndsWith(RecordSuffix, StringComparison.Ordinal) && Guid.TryParseExact(name[..^RecordSuffix.Length], "N", out var id))
                {
                    found.Add((share.Export, id));
                }
                else if (TryParseClaim(name, out id, out var claimedAt) && now - claimedAt > staleClaimAge)
                {
                    try
                    {
                        File.Move(Path.Combine(dir, name), PathOf(share, id), overwrite: true);
                        found.Add((share.Export, id));
                    }
                    catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                    {
                        // given back by another instance already
                    }
                }
            }
        }
        return found.Distinct().ToList();
    }

    internal static bool TryParseClaim(string name, out Guid commandId, out DateTimeOffset claimedAt)
    {
        commandId = Guid.Empty;
        claimedAt = default;
        var i = name.IndexOf(ClaimMarker, StringComparison.Ordinal);
        if (i != 32 || !Guid.TryParseExact(name[..i], "N", out commandId))
        {
            return false;
        }
        var rest = name[(i + ClaimMarker.Length)..];
        var dash = rest.IndexOf('-', StringComparison.Ordinal);
        if (dash <= 0 || !long.TryParse(rest[..dash], NumberStyles.None, CultureInfo.InvariantCulture, out var ms))
        {
            return false;
        }
        claimedAt = DateTimeOffset.FromUnixTimeMilliseconds(ms);
        return true;
    }

    private sealed class Claim(string share, string record, string claimed, byte[] bytes) : IPendingNotificationClaim
    {
        private bool _done;

        public string Share => share;

        public byte[] Record => bytes;

        public void Complete()
        {
            File.Delete(claimed);
            DurableFile.FsyncDirectory(Path.GetDirectoryName(claimed)!);
            _done = true;
        }

        public void Dispose()
        {
            if (!_done)
            {
                _done = true;
                GiveBack(claimed, record);
            }
        }
    }
}
