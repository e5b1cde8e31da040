using System.Globalization;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;

namespace NfsVolumeWorker.Status;

/// <summary>
/// The HTTP base URL this instance advertises to <c>nfsvol status</c>, in the client property
/// <c>nfsvol_status_url</c> of its partition connection: <c>Http:AdvertisedUrl</c> when set (an address others
/// reach: behind NAT, a proxy), else the first of <c>Http:Urls</c> with a wildcard host (<c>*</c>, <c>+</c>,
/// <c>0.0.0.0</c>, <c>[::]</c>) replaced by this machine's host name. With port 0 the port is known only once the
/// server listens: the address the server reports is used if it is listening by then, else nothing is advertised.
/// </summary>
public sealed class StatusAddress(IConfiguration configuration, IServiceProvider services)
{
    public const string AdvertisedUrlKey = "Http:AdvertisedUrl";

    public string? Url
    {
        get
        {
            if (configuration[AdvertisedUrlKey] is { Length: > 0 } advertised)
            {
                return advertised.TrimEnd('/');
            }
            var listening = services.GetService<IServer>()?.Features.Get<IServerAddressesFeature>()?.Addresses ?? [];
            var configured = (configuration["Http:Urls"] ?? WorkerHttp.DefaultUrls).Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            return listening.Concat(configured).Select(Reachable).FirstOrDefault(u => u is not null);
        }
    }

    /// <summary>The URL with a wildcard host named, or null when it has no fixed port.</summary>
    internal static string? Reachable(string url)
    {
        var wildcard = url.Replace("://*", "://wildcard", StringComparison.Ordinal).Replace("://+", "://wildcard", StringComparison.Ordinal);
        if (!Uri.TryCreate(wildcard, UriKind.Absolute, out var uri) || uri.Port <= 0)
        {
            return null;
        }
        var host = uri.Host is "wildcard" or "0.0.0.0" or "[::]" or "::" ? System.Net.Dns.GetHostName() : uri.IdnHost;
        if (host.Contains(':', StringComparison.Ordinal) && !host.StartsWith('['))
        {
            host = $"[{host}]";
        }
        return string.Create(CultureInfo.InvariantCulture, $"{uri.Scheme}://{host}:{uri.Port}");
    }
}

/// <summary>The worker's HTTP endpoint defaults.</summary>
public static class WorkerHttp
{
    /// <summary>Loopback only: set <c>Http:Urls</c> to serve others.</summary>
    public const string DefaultUrls = "http://127.0.0.1:9464";
}
