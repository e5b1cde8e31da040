using NfsVolumeWorker.Storage.Durability;
using NfsVolumeWorker.Storage.Inbox;
using NfsVolumeWorker.Storage.Tests.Support;

namespace NfsVolumeWorker.Storage.Tests.Engine;

/// <summary>nfsvolumeworker.storage.syncs counts every fsync, by kind: the benchmark's syncs per command rest on it.</summary>
public sealed class SyncCounterSpecs
{
    [Fact]
    public void An_atomic_replace_counts_one_file_sync_and_one_directory_sync()
    {
        using var dir = new TempDirectory();
        var path = Path.Combine(dir.Path, "entry.json");

        var counts = SyncCount.Of(() => DurableFile.WriteAtomically(path, "{}"u8, (UnixFileMode)0b110_100_000));

        Assert.Equal(new Dictionary<string, long> { ["file"] = 1, ["directory"] = 1 }, counts);
        Assert.Equal("{}", File.ReadAllText(path));
    }

    [Fact]
    public void Each_explicit_fsync_counts_once_under_its_kind()
    {
        using var dir = new TempDirectory();
        var path = Path.Combine(dir.Path, "volume");
        File.WriteAllText(path, "data");

        var counts = SyncCount.Of(() =>
        {
            DurableFile.FsyncFile(path);
            DurableFile.FsyncFile(path);
            DurableFile.FsyncDirectory(dir.Path);
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Write);
            DurableFile.Flush(stream);
        });

        Assert.Equal(new Dictionary<string, long> { ["file"] = 3, ["directory"] = 1 }, counts);
    }

    [Fact]
    public async Task Marking_an_outcome_published_and_removing_a_finished_inbox_entry_cost_no_sync()
    {
        using var dir = new TempDirectory();
        var share = new Shares.Share(dir.Path, dir.Path, null);
        Shares.ShareMarker.EnsureAvailable(share);
        var (volumeId, commandId) = (Guid.NewGuid(), Guid.NewGuid());
        const UnixFileMode mode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        await VolumeInbox.AppendAsync(share, volumeId, commandId, "{}"u8.ToArray(), mode, CancellationToken.None);
        CommandOutcomes.Write(share, commandId, "{}"u8, mode);
        var entry = Assert.Single(VolumeInbox.List(share, volumeId));
        Assert.False(CommandOutcomes.IsMarkedPublished(share, commandId));

        var counts = SyncCount.Of(() =>
        {
            CommandOutcomes.MarkPublished(share, commandId, mode);
            VolumeInbox.Remove(entry);
        });

        Assert.Empty(counts);
        Assert.True(CommandOutcomes.IsMarkedPublished(share, commandId));
        Assert.Empty(VolumeInbox.List(share, volumeId));
    }

    [Fact]
    public void A_new_outcome_record_costs_one_file_sync_and_a_torn_one_is_replaced_atomically()
    {
        using var dir = new TempDirectory();
        var share = new Shares.Share(dir.Path, dir.Path, null);
        Shares.ShareMarker.EnsureAvailable(share);
        const UnixFileMode mode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead;
        var (fresh, torn) = (Guid.NewGuid(), Guid.NewGuid());
        CommandOutcomes.Write(share, Guid.NewGuid(), "{}"u8, mode); // the outcomes folder exists, as on a share in use
        File.WriteAllText(CommandOutcomes.PathOf(share, torn), "{\"eventType\":\"Snap"); // cut short by a crash

        var first = SyncCount.Of(() => CommandOutcomes.Write(share, fresh, "{\"a\":1}"u8, mode));
        var replaced = SyncCount.Of(() => CommandOutcomes.Write(share, torn, "{\"b\":2}"u8, mode));

        // Created under its final name and fsynced: no temp file, no rename, no directory sync.
        Assert.Equal(new Dictionary<string, long> { ["file"] = 1 }, first);
        Assert.Equal("{\"a\":1}", File.ReadAllText(CommandOutcomes.PathOf(share, fresh)));
        Assert.Equal(mode, File.GetUnixFileMode(CommandOutcomes.PathOf(share, fresh)));
        // The rare case: temp file, fsync, rename over it, directory fsync.
        Assert.Equal(new Dictionary<string, long> { ["file"] = 1, ["directory"] = 1 }, replaced);
        Assert.Equal("{\"b\":2}", File.ReadAllText(CommandOutcomes.PathOf(share, torn)));
        Assert.Equal(3, Directory.EnumerateFiles(Path.GetDirectoryName(CommandOutcomes.PathOf(share, torn))!).Count()); // no temp file left
    }

    [Fact]
    public void A_published_mark_is_pruned_with_its_outcome_record()
    {
        using var dir = new TempDirectory();
        var share = new Shares.Share(dir.Path, dir.Path, null);
        Shares.ShareMarker.EnsureAvailable(share);
        var (old, recent) = (Guid.NewGuid(), Guid.NewGuid());
        const UnixFileMode mode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        foreach (var id in new[] { old, recent })
        {
            CommandOutcomes.Write(share, id, "{}"u8, mode);
            CommandOutcomes.MarkPublished(share, id, mode);
        }
        var outcomes = Path.GetDirectoryName(CommandOutcomes.PathOf(share, old))!;
        foreach (var file in Directory.EnumerateFiles(outcomes, $"{old:N}.*"))
        {
            File.SetLastWriteTimeUtc(file, DateTime.UtcNow.AddDays(-8));
        }

        Assert.Equal(1, CommandOutcomes.Prune(share, TimeSpan.FromDays(7)));

        Assert.Null(CommandOutcomes.Read(share, old));
        Assert.False(CommandOutcomes.IsMarkedPublished(share, old));
        Assert.True(CommandOutcomes.IsMarkedPublished(share, recent));
    }
}
