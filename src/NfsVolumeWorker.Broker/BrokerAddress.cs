using System.Globalization;
using RabbitMQ.Client;

namespace NfsVolumeWorker.Broker;

/// <summary>One node of the broker: a host name or address and its AMQP port.</summary>
public readonly record struct BrokerEndpoint(string Host, int Port)
{
    public override string ToString() =>
        Host.Contains(':', StringComparison.Ordinal) ? $"[{Host}]:{Port}" : $"{Host}:{Port}";
}

/// <summary>
/// A broker as a URL and a list of further nodes describe it: the one parser of broker settings, for the worker
/// (<c>Broker:Url</c>, <c>Broker:Hosts</c>), the oslo adapter (<c>Oslo:BrokerUrl</c>, an oslo transport URL)
/// and <c>nfsvol</c> (<c>--broker</c>). The URL gives the scheme (TLS or not), the credentials, the vhost and
/// the first node; the list adds the other nodes of the same cluster. Connections try the nodes in this order
/// (URL first) and take the first that answers (<see cref="BrokerConnections"/>).
/// </summary>
public sealed class BrokerAddress
{
    private BrokerAddress(string scheme, string userName, string password, string virtualHost, IReadOnlyList<BrokerEndpoint> endpoints)
    {
        Scheme = scheme;
        UserName = userName;
        Password = password;
        VirtualHost = virtualHost;
        Endpoints = endpoints;
    }

    /// <summary><c>amqp</c> or <c>amqps</c> (MassTransit's <c>rabbitmq://</c> and oslo's <c>rabbit://</c> are read as <c>amqp</c>).</summary>
    public string Scheme { get; }

    public bool UseTls => Scheme == "amqps";

    public string UserName { get; }

    public string Password { get; }

    /// <summary>The vhost, unescaped; <c>/</c> when the URL names none.</summary>
    public string VirtualHost { get; }

    /// <summary>Every node, the URL's first, without repeats; never empty.</summary>
    public IReadOnlyList<BrokerEndpoint> Endpoints { get; }

    /// <summary>The first node's URL, with credentials and vhost: what RabbitMQ.Client's
    /// <see cref="ConnectionFactory.Uri"/> takes (credentials, vhost, TLS).</summary>
    public Uri PrimaryUri => new(string.Create(CultureInfo.InvariantCulture,
        $"{Scheme}://{Uri.EscapeDataString(UserName)}:{Uri.EscapeDataString(Password)}@{Endpoints[0]}/{Uri.EscapeDataString(VirtualHost)}"));

    /// <summary>For logs: <c>amqp://user:***@host1:5672,host2:5672/vhost</c>.</summary>
    public string Redacted => string.Create(CultureInfo.InvariantCulture,
        $"{Scheme}://{UserName}:***@{string.Join(',', Endpoints)}/{(VirtualHost == "/" ? "" : Uri.EscapeDataString(VirtualHost))}");

    /// <summary>The nodes as RabbitMQ.Client endpoints (with TLS, each checked against its own host name).</summary>
    public IReadOnlyList<AmqpTcpEndpoint> AmqpEndpoints() =>
        Endpoints.Select(e => UseTls ? new AmqpTcpEndpoint(e.Host, e.Port, new SslOption(e.Host, enabled: true)) : new AmqpTcpEndpoint(e.Host, e.Port)).ToList();

    /// <summary>Tries the nodes in order (RabbitMQ.Client's own resolver for a list shuffles it): the URL's node is
    /// used whenever it answers, the others only when it does not.</summary>
    public IEndpointResolver InOrder() => new OrderedResolver(AmqpEndpoints());

    /// <summary>Parses a URL and a node list; throws <see cref="FormatException"/> saying what is wrong.</summary>
    public static BrokerAddress Parse(string? url, string? hosts = null, string urlSetting = "Broker:Url", string hostsSetting = "Broker:Hosts") =>
        TryParse(url, hosts, out var address, out var error, urlSetting, hostsSetting) ? address : throw new FormatException(error);

    /// <summary>
    /// <paramref name="url"/>: <c>amqp[s]://user:password@host[:port]/vhost</c> (also <c>rabbitmq://</c>, and oslo's
    /// <c>rabbit://</c> with its own way of naming several nodes: <c>rabbit://u:p@h1:5672,u:p@h2:5672/vhost</c>);
    /// <paramref name="hosts"/>: empty, or <c>host[:port]</c> entries separated by commas (a port defaults to
    /// the scheme's: 5672, 5671 with TLS; an IPv6 address in brackets). A node named twice counts once.
    /// Errors name the settings as <paramref name="urlSetting"/> and <paramref name="hostsSetting"/> and never
    /// show a password.
    /// </summary>
    public static bool TryParse(string? url, string? hosts, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out BrokerAddress? address, out string error,
        string urlSetting = "Broker:Url", string hostsSetting = "Broker:Hosts")
    {
        address = null;
        error = "";
        url = url?.Trim();
        if (url is not null && url.StartsWith("rabbit://", StringComparison.OrdinalIgnoreCase) && OsloNodes(url) is { } oslo)
        {
            // oslo names each node with its own credentials; the first gives them to all, the rest become the list.
            url = oslo.Url;
            hosts = string.IsNullOrWhiteSpace(hosts) ? oslo.Hosts : $"{oslo.Hosts},{hosts}";
        }
        if (string.IsNullOrWhiteSpace(url) || !Uri.TryCreate(url, UriKind.Absolute, out var uri)
            || uri.Scheme is not ("amqp" or "amqps" or "rabbitmq" or "rabbit") || string.IsNullOrEmpty(uri.Host) || uri.Host.Contains(',', StringComparison.Ordinal))
        {
            error = $"{urlSetting} '{Redact(url ?? "")}' is not an amqp://user:password@host:port/vhost URL (amqps:// for TLS). "
                + $"More nodes of the same cluster go in {hostsSetting}, not in the URL.";
            return false;
        }
        var scheme = uri.Scheme is "rabbitmq" or "rabbit" ? "amqp" : uri.Scheme;
        var defaultPort = scheme == "amqps" ? 5671 : 5672;
        var user = uri.UserInfo.Split(':', 2);
        var userName = user[0].Length > 0 ? Uri.UnescapeDataString(user[0]) : "guest";
        var password = user.Length > 1 ? Uri.UnescapeDataString(user[1]) : "guest";
        var vhost = Uri.UnescapeDataString(uri.AbsolutePath.TrimStart('/'));
        var endpoints = new List<BrokerEndpoint> { new(uri.IdnHost.Trim('[', ']'), uri.IsDefaultPort || uri.Port <= 0 ? defaultPort : uri.Port) };

        foreach (var entry in (hosts ?? "").Split(',', StringSplitOptions.TrimEntries))
        {
            if (entry.Length == 0)
            {
                if (!string.IsNullOrWhiteSpace(hosts))
                {
                    error = $"{hostsSetting} '{hosts}' has an empty entry: expected host[:port] entries separated by commas, e.g. rabbit-2:5672,rabbit-3:5672.";
                    return false;
                }
                continue;
            }
            if (!TryParseHost(entry, defaultPort, out var endpoint))
            {
                var shown = entry.Contains('@', StringComparison.Ordinal) ? "***" + entry[entry.LastIndexOf('@')..] : entry;
                error = $"{hostsSetting} entry '{shown}' is not host[:port] (a name or address and a port from 1 to 65535; [addr]:port for IPv6; "
                    + $"no scheme, credentials or vhost: those come from {urlSetting}).";
                return false;
            }
            if (!endpoints.Any(e => string.Equals(e.Host, endpoint.Host, StringComparison.OrdinalIgnoreCase) && e.Port == endpoint.Port))
            {
                endpoints.Add(endpoint);
            }
        }
        address = new BrokerAddress(scheme, userName, password, vhost.Length == 0 ? "/" : vhost, endpoints);
        return true;
    }

    /// <summary>oslo's several-node form split into a one-node URL and a node list; null for a one-node URL.</summary>
    private static (string Url, string Hosts)? OsloNodes(string url)
    {
        var start = "rabbit://".Length;
        var slash = url.IndexOf('/', start);
        var authority = slash < 0 ? url[start..] : url[start..slash];
        if (!authority.Contains(',', StringComparison.Ordinal))
        {
            return null;
        }
        var nodes = authority.Split(',');
        var rest = nodes.Skip(1).Select(n => n.Contains('@', StringComparison.Ordinal) ? n[(n.LastIndexOf('@') + 1)..] : n);
        return (string.Concat(url.AsSpan(0, start), nodes[0], slash < 0 ? "/" : url[slash..]), string.Join(',', rest));
    }

    private static bool TryParseHost(string entry, int defaultPort, out BrokerEndpoint endpoint)
    {
        endpoint = default;
        if (entry.Contains('/', StringComparison.Ordinal) || entry.Contains('@', StringComparison.Ordinal))
        {
            return false;
        }
        string host;
        string? port = null;
        if (entry.StartsWith('['))
        {
            var close = entry.IndexOf(']', StringComparison.Ordinal);
            if (close < 0)
            {
                return false;
            }
            host = entry[1..close];
            var rest = entry[(close + 1)..];
            if (rest.Length > 0)
            {
                if (!rest.StartsWith(':'))
                {
                    return false;
                }
                port = rest[1..];
            }
            if (!System.Net.IPAddress.TryParse(host, out _))
            {
                return false;
            }
        }
        else
        {
            var colon = entry.LastIndexOf(':');
            if (colon >= 0 && entry.IndexOf(':', StringComparison.Ordinal) != colon)
            {
                return false; // a bare IPv6 address: brackets are needed to tell the port apart
            }
            host = colon < 0 ? entry : entry[..colon];
            port = colon < 0 ? null : entry[(colon + 1)..];
            if (Uri.CheckHostName(host) is UriHostNameType.Unknown or UriHostNameType.IPv6)
            {
                return false;
            }
        }
        var number = defaultPort;
        if (port is not null && (!int.TryParse(port, NumberStyles.None, CultureInfo.InvariantCulture, out number) || number is < 1 or > 65535))
        {
            return false;
        }
        endpoint = new BrokerEndpoint(host, number);
        return host.Length > 0;
    }

    /// <summary>A URL without its password, for logs and errors; also one that does not parse (a host list in it).</summary>
    public static string Redact(string url)
    {
        ArgumentNullException.ThrowIfNull(url);
        var start = url.IndexOf("://", StringComparison.Ordinal);
        if (start < 0)
        {
            return url;
        }
        start += 3;
        var end = url.IndexOf('/', start);
        var at = url.LastIndexOf('@', end < 0 ? url.Length - 1 : end - 1);
        if (at < start)
        {
            return url;
        }
        var colon = url.IndexOf(':', start);
        return colon >= 0 && colon < at ? string.Concat(url.AsSpan(0, colon), ":***", url.AsSpan(at)) : url;
    }

    public override string ToString() => Redacted;

    private sealed class OrderedResolver(IReadOnlyList<AmqpTcpEndpoint> endpoints) : IEndpointResolver
    {
        public IEnumerable<AmqpTcpEndpoint> All() => endpoints;
    }
}
