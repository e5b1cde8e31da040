using System.Diagnostics.Metrics;
using NfsVolumeWorker.Storage.Diagnostics;
using NfsVolumeWorker.Storage.Durability;

namespace NfsVolumeWorker.Storage.Tests.Engine;

/// <summary>nfsvolumeworker.storage.syncs counts every fsync, by kind: the benchmark's syncs per command rest on it.</summary>
public sealed class SyncCounterSpecs
{
    /// <summary>The syncs this thread makes while <paramref name="action"/> runs (other tests fsync at the same time
    /// on other threads; the counter is recorded on the calling thread).</summary>
    private static Dictionary<string, long> CountSyncs(Action action)
    {
        var thread = Environment.CurrentManagedThreadId;
        var counts = new Dictionary<string, long>();
        using var listener = new MeterListener
        {
            InstrumentPublished = (i, l) =>
            {
                if (i.Meter.Name == StorageTelemetry.SourceName && i.Name == "nfsvolumeworker.storage.syncs")
                {
                    l.EnableMeasurementEvents(i);
                }
            },
        };
        listener.SetMeasurementEventCallback<long>((_, value, tags, _) =>
        {
            if (Environment.CurrentManagedThreadId != thread)
            {
                return;
            }
            var kind = tags.ToArray().Single(t => t.Key == "kind").Value as string ?? "?";
            counts[kind] = counts.GetValueOrDefault(kind) + value;
        });
        listener.Start();
        action();
        return counts;
    }

    [Fact]
    public void An_atomic_replace_counts_one_file_sync_and_one_directory_sync()
    {
        using var dir = new TempDirectory();
        var path = Path.Combine(dir.Path, "entry.json");

        var counts = CountSyncs(() => DurableFile.WriteAtomically(path, "{}"u8, (UnixFileMode)0b110_100_000));

        Assert.Equal(new Dictionary<string, long> { ["file"] = 1, ["directory"] = 1 }, counts);
        Assert.Equal("{}", File.ReadAllText(path));
    }

    [Fact]
    public void Each_explicit_fsync_counts_once_under_its_kind()
    {
        using var dir = new TempDirectory();
        var path = Path.Combine(dir.Path, "volume");
        File.WriteAllText(path, "data");

        var counts = CountSyncs(() =>
        {
            DurableFile.FsyncFile(path);
            DurableFile.FsyncFile(path);
            DurableFile.FsyncDirectory(dir.Path);
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Write);
            DurableFile.Flush(stream);
        });

        Assert.Equal(new Dictionary<string, long> { ["file"] = 3, ["directory"] = 1 }, counts);
    }
}
