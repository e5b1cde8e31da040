using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Broker;
using NfsVolumeWorker.Oslo.Rpc;

namespace NfsVolumeWorker.Oslo;

public static class OsloServiceCollectionExtensions
{
    /// <summary>Adds the cinder-volume RPC server. The host must register <see cref="ICommandPipeline"/>,
    /// <see cref="IVolumeLocator"/>, <see cref="IConnectionInfoProvider"/>, <see cref="IPendingNotificationStore"/>
    /// and <see cref="ICommandOutcomeSource"/>. <paramref name="fallbackBrokerUrl"/>
    /// is used when Oslo:BrokerUrl is empty.</summary>
    public static IServiceCollection AddOsloAdapter(this IServiceCollection services, IConfiguration configuration, string? fallbackBrokerUrl = null)
    {
        services.AddOptions<OsloOptions>().Bind(configuration.GetSection(OsloOptions.SectionName)).PostConfigure(o =>
        {
            if (string.IsNullOrWhiteSpace(o.BrokerUrl))
            {
                o.BrokerUrl = fallbackBrokerUrl ?? configuration["Broker:Url"];
                o.BrokerHosts ??= configuration["Broker:Hosts"];
            }
        }).ValidateDataAnnotations()
            .Validate(o => !o.Enabled || BrokerAddress.TryParse(o.BrokerUrl, o.BrokerHosts, out _, out _),
                "Oslo:BrokerUrl (or Broker:Url) must be an amqp://, amqps:// or oslo rabbit:// URL: user:password@host:port/vhost.").Validate(o => !o.Enabled || o.Host.Length > 0 && !o.Host.Contains('#', StringComparison.Ordinal),
            "Oslo:Host must be the backend host name host@backend (as in Cinder's volume host, without #pool).").ValidateOnStart();
        services.AddSingleton(TimeProvider.System);
        services.TryAddSingleton<IAdapterLease, UncontestedAdapterLease>();
        services.AddSingleton(sp => new CinderVolumeEndpoint(sp.GetRequiredService<IOptions<OsloOptions>>().Value,
            sp.GetRequiredService<IVolumeLocator>(), sp.GetRequiredService<IConnectionInfoProvider>(), sp.GetRequiredService<TimeProvider>()));
        services.AddSingleton<OsloRpcServer>();
        services.AddHostedService(sp => sp.GetRequiredService<OsloRpcServer>());
        return services;
    }
}
