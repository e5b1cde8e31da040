using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Messaging;
using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Telemetry;

namespace NfsVolumeWorker.Execution;

/// <summary>Publishes progress of long copies and merges as <see cref="OperationProgressed"/> events, at most
/// one per second and per whole percent, without waiting (progress is advisory; losing one is harmless). Every
/// report, thinned out or not, is the command's latest progress on the <see cref="Status.StatusBoard"/>. The event
/// names the command's volume (a clone's source, as its terminal event does), not the engine's (the new volume),
/// so that one <c>volumeId</c> follows a command from start to end.</summary>
internal sealed class ProgressPublisher(EventPublisher events, Status.StatusBoard board, Guid commandId, Guid volumeId, ILogger logger) : IProgress<OperationProgress>
{
    private long _lastTicks;
    private int _lastPercent = -1;

    public void Report(OperationProgress value)
    {
        board.Progressed(commandId, value);
        var percent = (int)(value.Fraction * 100);
        var now = Environment.TickCount64;
        if (percent == _lastPercent || (now - _lastTicks < 1000 && percent < 100))
        {
            return;
        }
        _lastPercent = percent;
        _lastTicks = now;
        var e = new OperationProgressed
        {
            CommandId = commandId, VolumeId = volumeId, Timestamp = DateTimeOffset.UtcNow, Phase = value.Phase, Fraction = value.Fraction,
            BytesDone = value.BytesDone, BytesTotal = value.BytesTotal, SecondsLeft = value.TimeLeft is { } left ? Math.Round(left.TotalSeconds, 1) : null,
        };
        _ = PublishAsync(e);
    }

    private async Task PublishAsync(OperationProgressed e)
    {
        try
        {
            await events.PublishProgressAsync(e, CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            WorkerLog.ProgressNotPublished(logger, e.CommandId, ex.Message);
        }
    }
}
