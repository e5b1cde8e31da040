using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Tests.Support;

namespace NfsVolumeWorker.Storage.Tests.Engine;

public sealed class OperationJournalSpecs
{
    [Fact]
    public void Clearing_an_entry_also_removes_temp_files_of_its_writes_a_crash_interrupted_and_nothing_of_other_volumes()
    {
        using var bed = new EngineTestBed();
        var volume = Guid.NewGuid();
        var other = Guid.NewGuid();
        OperationJournal.Write(bed.Share, new PendingOperation(PendingOperationKind.DeleteVolume, volume, null, null, null, null, null, DateTimeOffset.UtcNow), (UnixFileMode)0b110_110_000);
        var entry = OperationJournal.PathFor(bed.Share, volume);
        var directory = Path.GetDirectoryName(entry)!;
        // What kill -9 in the middle of an atomic write leaves: a temp file beside the entry.
        var torn = Path.Combine(directory, $".{Path.GetFileName(entry)}.tmp-{Guid.NewGuid():N}");
        File.WriteAllText(torn, "{\"kind\": \"Del");
        var othersTemp = Path.Combine(directory, $".{Path.GetFileName(OperationJournal.PathFor(bed.Share, other))}.tmp-{Guid.NewGuid():N}");
        File.WriteAllText(othersTemp, "{}");

        OperationJournal.Clear(bed.Share, volume);

        Assert.False(File.Exists(entry));
        Assert.False(File.Exists(torn));
        Assert.True(File.Exists(othersTemp)); // another volume's write may be under way under its own lock
        Assert.Null(OperationJournal.Read(bed.Share, volume));
    }
}
