using System.Diagnostics;
using System.Diagnostics.Metrics;
using NfsVolumeWorker.Storage.Diagnostics;

namespace NfsVolumeWorker.Telemetry;

/// <summary>The worker's trace source and metrics (meter <c>NfsVolumeWorker</c>).</summary>
public static class WorkerTelemetry
{
    public const string SourceName = "NfsVolumeWorker";

    public static readonly ActivitySource ActivitySource = new(SourceName);

    /// <summary>The meters the host exports (OpenTelemetry's wildcard). Every meter of the product is named
    /// <c>NfsVolumeWorker</c> or <c>NfsVolumeWorker.&lt;area&gt;</c>, so a new one is exported without being
    /// listed here (MeterExportSpecs checks); and MassTransit's.</summary>
    public static readonly string[] ExportedMeters = [SourceName, SourceName + ".*", "MassTransit"];

    public static readonly Meter Meter = new(SourceName);

    public static readonly Counter<long> Accepted = Meter.CreateCounter<long>("nfsvolumeworker.commands.accepted", description: "Commands appended to a volume inbox.");

    public static readonly Counter<long> Duplicates = Meter.CreateCounter<long>("nfsvolumeworker.commands.duplicates", description: "Commands received again (same command id) and not run again.");

    public static readonly Counter<long> Finished = Meter.CreateCounter<long>("nfsvolumeworker.commands.finished", description: "Commands that reached their terminal event, by outcome.");

    public static readonly Histogram<double> CommandDuration = Meter.CreateHistogram<double>("nfsvolumeworker.command.duration", unit: "s", description: "From acceptance to terminal event.", tags: null, advice: HistogramBoundaries.DurationSeconds);

    public static readonly Counter<long> DeadLettered = Meter.CreateCounter<long>("nfsvolumeworker.messages.dead_lettered", description: "Partition messages that were not commands, moved to the error queue.");

    public static readonly Counter<long> DrainFailures = Meter.CreateCounter<long>("nfsvolumeworker.drain.failures", description: "Volume drain loops that failed outside any command (share or broker faults) and were retried after a back-off.");

    public static readonly UpDownCounter<long> ActiveVolumes = Meter.CreateUpDownCounter<long>("nfsvolumeworker.volumes.active", description: "Volumes with a running drain loop in this instance.");
}
