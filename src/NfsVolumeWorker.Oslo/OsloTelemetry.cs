using System.Diagnostics;

namespace NfsVolumeWorker.Oslo;

/// <summary>The oslo adapter's trace source (the host exports it). oslo.messaging carries no trace context, so a
/// request's consumer span starts the trace; the command it submits continues it through the partition queue to
/// qemu-img.</summary>
public static class OsloTelemetry
{
    public const string SourceName = "NfsVolumeWorker.Oslo";

    public static readonly ActivitySource ActivitySource = new(SourceName);
}
