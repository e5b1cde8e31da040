using System.Diagnostics.Metrics;
using NfsVolumeWorker.Storage.Diagnostics;

namespace NfsVolumeWorker.Storage.Tests.Support;

/// <summary>Sums one counter of the storage meter by one tag while an operation runs. Other tests record at the same
/// time: only what is recorded in the caller's async flow counts (a MeterListener's callback runs in the context of the
/// code that recorded).</summary>
internal static class CounterTally
{
    public static async Task<(Dictionary<string, long> Counts, T Result)> OfAsync<T>(string instrument, string tag, Func<Task<T>> operation)
    {
        var counts = new Dictionary<string, long>();
        var current = new AsyncLocal<Dictionary<string, long>?>();
        using var listener = new MeterListener
        {
            InstrumentPublished = (i, l) =>
            {
                if (i.Meter.Name == StorageTelemetry.SourceName && i.Name == instrument)
                {
                    l.EnableMeasurementEvents(i);
                }
            },
        };
        listener.SetMeasurementEventCallback<long>((_, value, tags, _) =>
        {
            if (current.Value is not { } mine)
            {
                return;
            }
            var key = tags.ToArray().Single(t => t.Key == tag).Value as string ?? "?";
            lock (mine)
            {
                mine[key] = mine.GetValueOrDefault(key) + value;
            }
        });
        listener.Start();
        current.Value = counts;
        try
        {
            var result = await operation();
            return (counts, result);
        }
        finally
        {
            current.Value = null;
        }
    }
}
