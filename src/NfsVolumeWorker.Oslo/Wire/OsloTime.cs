using System.Globalization;

namespace NfsVolumeWorker.Oslo.Wire;

/// <summary>Timestamps as oslo and Cinder write them.</summary>
public static class OsloTime
{
    /// <summary>Python's <c>str(datetime.utcnow())</c>: <c>2026-11-24 22:31:05.123456</c> (no fraction when it is zero),
    /// the notification <c>timestamp</c>.</summary>
    public static string Notification(DateTimeOffset t)
    {
        var u = t.UtcDateTime;
        var micro = (u.Ticks % TimeSpan.TicksPerSecond) / 10;
        var baseText = u.ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture);
        return micro == 0 ? baseText : baseText + "." + micro.ToString("D6", CultureInfo.InvariantCulture);
    }

    /// <summary>Python's <c>datetime.isoformat()</c> of a naive UTC datetime (Cinder's payload <c>created_at</c>).</summary>
    public static string Iso(DateTimeOffset t)
    {
        var u = t.UtcDateTime;
        var micro = (u.Ticks % TimeSpan.TicksPerSecond) / 10;
        var baseText = u.ToString("yyyy-MM-dd'T'HH:mm:ss", CultureInfo.InvariantCulture);
        return micro == 0 ? baseText : baseText + "." + micro.ToString("D6", CultureInfo.InvariantCulture);
    }
}
