namespace NfsVolumeWorker.Broker;

/// <summary>The project's one back-off for faults outside a command (broker, share): doubling from 0.1 s up to
/// 30 s. Used by the ordered consumers (partition consumers, ingress router, oslo adapter), reconnects and the
/// volume drain loops.</summary>
public static class RetryBackoff
{
    public static readonly TimeSpan Max = TimeSpan.FromSeconds(30);

    /// <summary>The wait before attempt <paramref name="attempt"/> + 1 (attempt counts from 1).</summary>
    public static TimeSpan Delay(int attempt) =>
        TimeSpan.FromMilliseconds(Math.Min(Max.TotalMilliseconds, 100 * Math.Pow(2, Math.Clamp(attempt - 1, 0, 16))));
}
