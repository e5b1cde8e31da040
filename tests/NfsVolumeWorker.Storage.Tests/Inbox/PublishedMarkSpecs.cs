using NfsVolumeWorker.Storage.Inbox;
using NfsVolumeWorker.Storage.Shares;
using NfsVolumeWorker.Storage.Tests.Support;

namespace NfsVolumeWorker.Storage.Tests.Inbox;

/// <summary>The published mark is a mode bit of the outcome record (no new file, no sync); the <c>.published</c>
/// files older workers leave are still honoured and pruned.</summary>
public sealed class PublishedMarkSpecs : IDisposable
{
    private const UnixFileMode Mode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead;
    private readonly TempDirectory _dir = new();
    private readonly Share _share;

    public PublishedMarkSpecs()
    {
        _share = new Share(_dir.Path, _dir.Path, null);
        ShareMarker.EnsureAvailable(_share);
    }

    public void Dispose() => _dir.Dispose();

    private string Outcomes => Path.GetDirectoryName(CommandOutcomes.PathOf(_share, Guid.Empty))!;

    [Fact]
    public void Marking_sets_the_records_sticky_bit_and_makes_no_file_and_no_sync_and_leaves_its_bytes()
    {
        var id = Guid.NewGuid();
        CommandOutcomes.Write(_share, id, "{\"a\":1}"u8, Mode);
        var before = Directory.GetFiles(Outcomes).Order().ToArray();
        Assert.False(CommandOutcomes.IsMarkedPublished(_share, id));

        var syncs = SyncCount.Of(() => Assert.True(CommandOutcomes.MarkPublished(_share, id, Mode)));

        Assert.Empty(syncs);
        Assert.True(CommandOutcomes.IsMarkedPublished(_share, id));
        Assert.Equal(Mode | UnixFileMode.StickyBit, File.GetUnixFileMode(CommandOutcomes.PathOf(_share, id)));
        Assert.Equal(before, Directory.GetFiles(Outcomes).Order().ToArray());
        Assert.False(File.Exists(CommandOutcomes.PublishedMarkOf(_share, id)));
        Assert.Equal("{\"a\":1}", File.ReadAllText(CommandOutcomes.PathOf(_share, id))); // what an older worker reads
        Assert.True(CommandOutcomes.MarkPublished(_share, id, Mode)); // twice: still marked, nothing else
        Assert.Equal(Mode | UnixFileMode.StickyBit, File.GetUnixFileMode(CommandOutcomes.PathOf(_share, id)));
    }

    [Fact]
    public void An_older_workers_published_file_still_marks_its_record()
    {
        var (marked, unmarked) = (Guid.NewGuid(), Guid.NewGuid());
        CommandOutcomes.Write(_share, marked, "{}"u8, Mode);
        CommandOutcomes.Write(_share, unmarked, "{}"u8, Mode);
        File.WriteAllBytes(Path.Combine(Outcomes, $"{marked:N}.published"), []); // what a worker of format 2 before this left

        Assert.True(CommandOutcomes.IsMarkedPublished(_share, marked));
        Assert.False(CommandOutcomes.IsMarkedPublished(_share, unmarked));
        Assert.False(CommandOutcomes.IsMarkedPublished(_share, Guid.NewGuid())); // no record at all
    }

    [Fact]
    public void Marking_a_record_that_was_pruned_meanwhile_makes_nothing()
    {
        var id = Guid.NewGuid();
        CommandOutcomes.Write(_share, Guid.NewGuid(), "{}"u8, Mode);

        Assert.True(CommandOutcomes.MarkPublished(_share, id, Mode));

        Assert.Single(Directory.GetFiles(Outcomes));
    }

    [Fact]
    public void Prune_removes_old_marked_records_and_old_published_files_of_older_workers_and_keeps_recent_ones()
    {
        var (old, oldLegacy, recent, recentLegacy) = (Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid());
        foreach (var id in new[] { old, oldLegacy, recent, recentLegacy })
        {
            CommandOutcomes.Write(_share, id, "{}"u8, Mode);
        }
        CommandOutcomes.MarkPublished(_share, old, Mode);
        CommandOutcomes.MarkPublished(_share, recent, Mode);
        File.WriteAllBytes(CommandOutcomes.PublishedMarkOf(_share, oldLegacy), []);
        File.WriteAllBytes(CommandOutcomes.PublishedMarkOf(_share, recentLegacy), []);
        foreach (var file in Directory.EnumerateFiles(Outcomes).Where(f => f.Contains($"{old:N}", StringComparison.Ordinal) || f.Contains($"{oldLegacy:N}", StringComparison.Ordinal)))
        {
            File.SetLastWriteTimeUtc(file, DateTime.UtcNow.AddDays(-8));
        }

        Assert.Equal(2, CommandOutcomes.Prune(_share, TimeSpan.FromDays(7)));

        Assert.Equal(
            new[] { $"{recent:N}.json", $"{recentLegacy:N}.json", $"{recentLegacy:N}.published" }.Order(),
            Directory.GetFiles(Outcomes).Select(f => Path.GetFileName(f)).Order());
        Assert.True(CommandOutcomes.IsMarkedPublished(_share, recent));
        Assert.True(CommandOutcomes.IsMarkedPublished(_share, recentLegacy));
        Assert.False(CommandOutcomes.IsMarkedPublished(_share, old));
        Assert.False(CommandOutcomes.IsMarkedPublished(_share, oldLegacy));
    }
}
