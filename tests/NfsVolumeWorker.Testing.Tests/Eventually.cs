namespace NfsVolumeWorker.Testing.Tests;

internal static class Eventually
{
    /// <summary>Polls until <paramref name="probe"/> returns a value <paramref name="done"/> accepts; returns the last value.</summary>
    public static async Task<T> WaitAsync<T>(Func<Task<T>> probe, Func<T, bool> done, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var value = await probe();
            if (done(value) || DateTime.UtcNow > deadline)
            {
                return value;
            }

            await Task.Delay(200);
        }
    }
}
