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
        description: "Duration of qemu-img calls.",
        tags: null,
        advice: HistogramBoundaries.DurationSeconds);

    /// <summary>Duration of engine operations (lock wait included), tagged with the operation and outcome.</summary>
    internal static readonly Histogram<double> OperationDuration = Meter.CreateHistogram<double>(
        "nfsvolumeworker.operation.duration",
        unit: "s",
        description: "Duration of volume operations, including the wait for the volume lock.",
        tags: null,
        advice: HistogramBoundaries.DurationSeconds);

    /// <summary>Image data written by copies (clone, create from snapshot) and merges (delete snapshot): the
    /// allocated size of the copy, or of the overlay merged, recorded when the step succeeds. With the
    /// qemu-img duration of the same verb it gives the throughput.</summary>
    internal static readonly Counter<long> DataWritten = Meter.CreateCounter<long>(
        "nfsvolumeworker.data.written",
        unit: "By",
        description: "Image data written by copies (kind=copy) and merges (kind=merge), by allocated size.");

    /// <summary>Two operations on one volume that overlapped in one process (must stay 0).</summary>
    internal static readonly Counter<long> Overlaps = Meter.CreateCounter<long>(
        "nfsvolumeworker.operation.overlaps",
        description: "Operations that started while another one held the same volume (a lock failure).");

    /// <summary>Empty overlays made for snapshots and reverts, tagged with what wrote them (native or qemu-img).</summary>
    internal static readonly Counter<long> OverlaysCreated = Meter.CreateCounter<long>(
        "nfsvolumeworker.overlay.created",
        unit: "{overlay}",
        description: "Empty qcow2 overlays made for snapshots and reverts, by writer (native: the engine wrote the file; qemu-img: qemu-img create).");

    /// <summary>fsync calls of the engine, by what was flushed (kind=file, directory): on NFS each one is a round trip to
    /// the server, so this is the durable-write cost of a command (ops/bench/run-pipeline reads it per command).
    /// Counted in <see cref="Durability.DurableFile"/>, the one place that calls fsync.</summary>
    internal static readonly Counter<long> Syncs = Meter.CreateCounter<long>(
        "nfsvolumeworker.storage.syncs",
        unit: "{call}",
        description: "fsync calls made to keep changes across a crash, by kind (file, directory).");

    /// <summary>Image metadata the engine reads from the share, by part: <c>header</c>, one image's header parsed
    /// (<see cref="Qcow2.ImageHeaderReader"/>), and <c>tables</c>, one image's L1 table and the L2 tables it points to
    /// (<see cref="Qcow2.ImageAllocationReader"/>). On NFS each is at least a round trip to the server; a snapshot delete
    /// reads each image's header once, in the chain read, and its planner reuses it. Prefetch advice is not a read.</summary>
    internal static readonly Counter<long> ImageReads = Meter.CreateCounter<long>(
        "nfsvolumeworker.storage.image_reads",
        unit: "{read}",
        description: "Image metadata read from the share, by part (header: an image's header parsed; tables: an image's L1 and L2 tables read).");
}
