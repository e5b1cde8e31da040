using System.Diagnostics.Metrics;

namespace NfsVolumeWorker.Storage.Diagnostics;

/// <summary>
/// Bucket boundaries of the product's histograms, given to each at creation as advice (exporters use them
/// unless a view overrides them). OpenTelemetry's default (0, 5, 10 … 10000) fits milliseconds: in seconds
/// nearly every value would land in the first bucket.
/// </summary>
public static class HistogramBoundaries
{
    /// <summary>Durations in seconds, from 1 ms (a header read, a duplicate command) to 1 h (a large copy).</summary>
    public static readonly InstrumentAdvice<double> DurationSeconds = new()
    {
        HistogramBucketBoundaries =
            [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600],
    };
}
