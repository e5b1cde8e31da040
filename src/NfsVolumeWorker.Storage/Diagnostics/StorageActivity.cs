using System.Diagnostics;

namespace NfsVolumeWorker.Storage.Diagnostics;

/// <summary>Trace spans for engine operations (source <c>NfsVolumeWorker.Storage</c>).</summary>
internal static class StorageActivity
{
    public const string SourceName = "NfsVolumeWorker.Storage";

    private static readonly ActivitySource Source = new(SourceName);

    public static Activity? Start(string operation, Guid volumeId, string share)
    {
        var activity = Source.StartActivity("volume " + operation);
        activity?.SetTag("nfsvol.volume_id", volumeId.ToString());
        activity?.SetTag("nfsvol.share", share);
        return activity;
    }
}
