namespace NfsVolumeWorker.Storage.Tests.Support;

/// <summary>Counts <c>nfsvolumeworker.storage.syncs</c> by kind (file, directory) while an operation runs, in the
/// caller's async flow only (<see cref="CounterTally"/>).</summary>
internal static class SyncCount
{
    public static async Task<(Dictionary<string, long> Syncs, T Result)> OfAsync<T>(Func<Task<T>> operation) =>
        await CounterTally.OfAsync("nfsvolumeworker.storage.syncs", "kind", operation);

    /// <summary>The syncs a synchronous <paramref name="action"/> makes.</summary>
    public static Dictionary<string, long> Of(Action action) =>
        OfAsync(() =>
        {
            action();
            return Task.FromResult(true);
        }).GetAwaiter().GetResult().Syncs;
}
