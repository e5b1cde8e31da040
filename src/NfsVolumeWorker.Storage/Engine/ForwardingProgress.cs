namespace NfsVolumeWorker.Storage.Engine;

/// <summary>Turns qemu-img's fraction into <see cref="OperationProgress"/> on the reporting thread.
/// (<see cref="Progress{T}"/> posts to the thread pool, which can reorder reports.)</summary>
internal sealed class ForwardingProgress(IProgress<OperationProgress> target, Guid volumeId, string phase) : IProgress<double>
{
    public void Report(double value) => target.Report(new OperationProgress(volumeId, phase, value));

    public static ForwardingProgress? For(IProgress<OperationProgress>? target, Guid volumeId, string phase) =>
        target is null ? null : new ForwardingProgress(target, volumeId, phase);
}
