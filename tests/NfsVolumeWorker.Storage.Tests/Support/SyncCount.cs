using System.Diagnostics.Metrics;
using NfsVolumeWorker.Storage.Diagnostics;

namespace NfsVolumeWorker.Storage.Tests.Support;

/// <summary>Counts <c>nfsvolumeworker.storage.syncs</c> by kind (file, directory) while an operation runs. Other tests
/// fsync at the same time: only what is recorded in the caller's async flow counts (a MeterListener's callback runs in
/// the context of the code that recorded).</summary>
internal static class SyncCount
{
    private static readonly AsyncLocal<Dictionary<string, long>?> Current = new();

    public static async Task<(Dictionary<string, long> Syncs, T Result)> OfAsync<T>(Func<Task<T>> operation)
    {
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
            if (Current.Value is not { } mine)
            {
                return;
            }
            var kind = tags.ToArray().Single(t => t.Key == "kind").Value as string ?? "?";
            lock (mine)
            {
                mine[kind] = mine.GetValueOrDefault(kind) + value;
            }
        });
        listener.Start();
        Current.Value = counts;
        try
        {
            var result = await operation();
            return (counts, result);
        }
        finally
        {
            Current.Value = null;
        }
    }

    /// <summary>The syncs a synchronous <paramref name="action"/> makes.</summary>
    public static Dictionary<string, long> Of(Action action) =>
        OfAsync(() =>
        {
            action();
            return Task.FromResult(true);
        }).GetAwaiter().GetResult().Syncs;
}
