using NfsVolumeWorker.Oslo;

namespace NfsVolumeWorker.OsloBridge;

/// <summary>The host's side of the oslo adapter: the implementations of its interfaces, and the adapter.</summary>
public static class OsloBridgeRegistration
{
    /// <summary>Adds the cinder-volume RPC server when <c>Oslo:Enabled</c> is true.</summary>
    public static IServiceCollection AddOsloBridge(this IServiceCollection services, IConfiguration configuration)
    {
        if (!configuration.GetValue<bool>($"{OsloOptions.SectionName}:{nameof(OsloOptions.Enabled)}"))
        {
            return services;
        }
        services.AddSingleton<ICommandPipeline, PartitionCommandPipeline>();
        services.AddSingleton<IVolumeLocator, ShareVolumeLocator>();
        services.AddSingleton<IConnectionInfoProvider, EngineConnectionInfoProvider>();
        services.AddSingleton<IPendingNotificationStore, SharePendingNotificationStore>();
        services.AddSingleton<ICommandOutcomeSource, ShareCommandOutcomeSource>();
        services.AddSingleton<IAdapterLease, ShareAdapterLease>();
        return services.AddOsloAdapter(configuration);
    }
}
