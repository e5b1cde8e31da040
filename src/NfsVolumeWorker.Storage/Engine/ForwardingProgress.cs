namespace NfsVolumeWorker.Storage.Engine;

/// <summary>Turns qemu-img's fraction into <see cref="OperationProgress"/> on the reporting thread, with the bytes
/// that fraction stands for and the time left at the rate since this instance was made (just before the step).
/// (<see cref="Progress{T}"/> posts to the thread pool, which can reorder reports.)</summary>
internal sealed class ForwardingProgress(IProgress<OperationProgress> target, Guid volumeId, string phase, long? totalBytes, TimeProvider time) : IProgress<double>
{
    private readonly long _started = time.GetTimestamp();

    public void Report(double value)
    {
        var fraction = Math.Clamp(value, 0, 1);
        var done = totalBytes is { } total ? (long)(total * fraction) : (long?)null;
        target.Report(new OperationProgress(volumeId, phase, value, done, totalBytes,
            OperationProgress.EstimateTimeLeft(time.GetElapsedTime(_started), fraction)));
    }

    /// <param name="totalBytes">What the step goes through (see <see cref="OperationProgress.BytesTotal"/>), or null when unknown.</param>
    public static ForwardingProgress? For(IProgress<OperationProgress>? target, Guid volumeId, string phase, long? totalBytes = null, TimeProvider? time = null) =>
        target is null ? null : new ForwardingProgress(target, volumeId, phase, totalBytes, time ?? TimeProvider.System);
}
