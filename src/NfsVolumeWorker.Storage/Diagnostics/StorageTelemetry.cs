using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace NfsVolumeWorker.Storage.Diagnostics;

/// <summary>
/// Tracing and metrics sources of the storage engine. The host subscribes by name
/// (<see cref="SourceName"/>); this project stays free of any telemetry SDK.
/// </summary>
public static class StorageTelemetry
{
    /// <summary>Name of both the <see cref="ActivitySource"/> and the <see cref="Meter"/>.</summary>
    public const string SourceName = "NfsVolumeWorker.Storage";

    public static readonly ActivitySource ActivitySource = new("NfsVolumeWorker.Storage");

    public static readonly Meter Meter = new("NfsVolumeWorker.Storage");

    /// <summary>Wall-clock duration of qemu-img calls, tagged with the verb and the outcome.</summary>
    internal static readonly Histogram<double> QemuImgDuration = Meter.CreateHistogram<double>(
        "nfsvolumeworker.qemu_img.duration",
        unit: "s",
        description: "Duration of qemu-img calls.");
}
