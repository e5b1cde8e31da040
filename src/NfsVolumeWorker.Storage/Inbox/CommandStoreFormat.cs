using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using NfsVolumeWorker.Storage.Durability;
using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Storage.Shares;

namespace NfsVolumeWorker.Storage.Inbox;

/// <summary>
/// The version of everything the worker keeps under <c>.nfsvolumeworker/</c> (inbox, outcomes, oslo records,
/// journal, locks), recorded in <c>.nfsvolumeworker/format</c> as one decimal line. No file means version 1,
/// the layout of the workers that recorded nothing. A worker reads every version up to <see cref="Current"/>
/// (it finishes what an older worker left) and records <see cref="Current"/> on a share that holds an older
/// one; a share with a newer version is refused as a whole, before anything on it is touched.
/// </summary>
public static class CommandStoreFormat
{
    public const string FileName = "format";

    /// <summary>What a share without a format file holds.</summary>
    public const int Unrecorded = 1;

    /// <summary>Version 2: a volume's inbox directory is removed when it empties (its absence means "nothing
    /// waiting"), and the sweep looks only at the directories that exist. Entries, outcomes and locks are as in 1.</summary>
    public const int Current = 2;

    /// <summary>How long a check stands before the file is read again: a newer worker may upgrade the share
    /// while this one runs (it reads what this one writes meanwhile, so the delay loses nothing).</summary>
    public static readonly TimeSpan RecheckInterval = TimeSpan.FromSeconds(5);

    private static readonly ConcurrentDictionary<string, long> CheckedAt = new(StringComparer.Ordinal);

    public static string PathOf(Share share)
    {
        ArgumentNullException.ThrowIfNull(share);
        return Path.Combine(share.WorkerDirectory, FileName);
    }

    /// <summary>The version recorded on the share (<see cref="Unrecorded"/> when none is).
    /// <see cref="StorageErrorCode.ShareUnavailable"/> when the file holds something that is not a version.</summary>
    public static int Read(Share share)
    {
        var path = PathOf(share);
        string text;
        try
        {
            DurableFile.EnsureNotSymlink(path);
            text = File.ReadAllText(path, Encoding.ASCII);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            return Unrecorded;
        }
        return int.TryParse(text.AsSpan().Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var version) && version >= 1
            ? version
            : throw new StorageException(StorageErrorCode.ShareUnavailable,
                $"Share {share.Export}: {path} does not hold a command store format version ('{Shorten(text)}'); this worker leaves the share untouched until it is repaired.");
    }

    /// <summary>Throws <see cref="StorageErrorCode.ShareUnavailable"/> when the share holds a newer format than this
    /// worker reads; touches nothing. Reads the file at most once per <see cref="RecheckInterval"/>.</summary>
    public static void EnsureReadable(Share share)
    {
        ArgumentNullException.ThrowIfNull(share);
        var now = Stopwatch.GetTimestamp();
        if (CheckedAt.TryGetValue(share.LocalPath, out var at) && Stopwatch.GetElapsedTime(at, now) < RecheckInterval)
        {
            return;
        }
        var version = Read(share);
        if (version > Current)
        {
            CheckedAt.TryRemove(share.LocalPath, out _);
            throw new StorageException(StorageErrorCode.ShareUnavailable,
                $"Share {share.Export} holds command store format {version} ({PathOf(share)}), newer than this worker reads (up to {Current}): " +
                "a newer worker has upgraded it. This worker leaves the share untouched; upgrade it to serve this share.");
        }
        CheckedAt[share.LocalPath] = now;
    }

    /// <summary>Records <see cref="Current"/> on a share that holds no format file yet (an older layout this worker
    /// reads as it is). Never replaces a file another worker wrote meanwhile, so a newer version is never downgraded.
    /// Returns the version found before.</summary>
    public static int RecordCurrent(Share share, UnixFileMode mode)
    {
        var found = Read(share);
        if (found >= Current)
        {
            return found;
        }
        var path = PathOf(share);
        var temp = Path.Combine(share.WorkerDirectory, DurableFile.TempName(FileName));
        File.WriteAllText(temp, Current.ToString(CultureInfo.InvariantCulture) + "\n", Encoding.ASCII);
        File.SetUnixFileMode(temp, mode);
        DurableFile.FsyncFile(temp);
        try
        {
            File.Move(temp, path, overwrite: false);
            DurableFile.FsyncDirectory(share.WorkerDirectory);
        }
        catch (IOException) when (File.Exists(path))
        {
            DurableFile.TryDelete(temp); // another worker recorded its version first: that one stands
        }
        return found;
    }

    private static string Shorten(string text) => text.Length <= 40 ? text.Trim() : text[..40] + "...";
}
