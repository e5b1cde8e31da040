using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;

namespace NfsVolumeWorker.Testing;

/// <summary>The few calls of RabbitMQ's management HTTP API the tests need.</summary>
internal sealed class ManagementApi : IDisposable
{
    private readonly HttpClient _http;
    private readonly string _user;

    public ManagementApi(Uri baseUri, string user, string password, TimeSpan? timeout = null)
    {
        _user = user;
        _http = new HttpClient
        {
            BaseAddress = baseUri.AbsoluteUri.EndsWith('/') ? baseUri : new Uri(baseUri.AbsoluteUri + "/"),
            Timeout = timeout ?? TimeSpan.FromSeconds(30),
        };
        _http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue(
            "Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes($"{user}:{password}")));
    }

    public Uri BaseUri => _http.BaseAddress!;

    public void Dispose() => _http.Dispose();

    private static string Escape(string segment) => Uri.EscapeDataString(segment);

    /// <summary>Answers the overview within the timeout, with these credentials.</summary>
    public async Task<(bool Answers, string Detail)> ProbeAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            using var response = await _http.GetAsync(new Uri("api/overview", UriKind.Relative), cts.Token).ConfigureAwait(false);
            return response.IsSuccessStatusCode
                ? (true, $"{BaseUri} answers")
                : (false, $"{BaseUri}api/overview: HTTP {(int)response.StatusCode}");
        }
        catch (Exception e) when (e is HttpRequestException or OperationCanceledException)
        {
            return (false, $"{BaseUri}: {e.Message}");
        }
    }

    public async Task CreateVirtualHostAsync(string vhost, CancellationToken ct)
    {
        using (var response = await _http.PutAsync(
                   new Uri($"api/vhosts/{Escape(vhost)}", UriKind.Relative), JsonContent.Create(new { }), ct).ConfigureAwait(false))
        {
            await EnsureAsync(response, "create vhost " + vhost, ct).ConfigureAwait(false);
        }

        using (var response = await _http.PutAsync(
                   new Uri($"api/permissions/{Escape(vhost)}/{Escape(_user)}", UriKind.Relative),
                   JsonContent.Create(new { configure = ".*", write = ".*", read = ".*" }), ct).ConfigureAwait(false))
        {
            await EnsureAsync(response, $"grant {_user} on {vhost}", ct).ConfigureAwait(false);
        }
    }

    public async Task DeleteVirtualHostAsync(string vhost, CancellationToken ct)
    {
        using var response = await _http.DeleteAsync(new Uri($"api/vhosts/{Escape(vhost)}", UriKind.Relative), ct).ConfigureAwait(false);
        if (response.StatusCode != HttpStatusCode.NotFound)
        {
            await EnsureAsync(response, "delete vhost " + vhost, ct).ConfigureAwait(false);
        }
    }

    public async Task<IReadOnlyList<QueueInfo>> ListQueuesAsync(string vhost, CancellationToken ct)
    {
        var consumers = await ListConsumersAsync(vhost, ct).ConfigureAwait(false);
        using var doc = await GetJsonAsync($"api/queues/{Escape(vhost)}", ct).ConfigureAwait(false);
        var queues = new List<QueueInfo>();
        foreach (var q in doc.RootElement.EnumerateArray())
        {
            var name = Str(q, "name") ?? "";
            queues.Add(new QueueInfo(
                name,
                Str(q, "type") ?? "classic",
                Dict(q, "arguments"),
                (int)Num(q, "consumers"),
                Num(q, "messages"),
                Num(q, "messages_ready"),
                Num(q, "messages_unacknowledged"),
                Str(q, "single_active_consumer_tag"),
                consumers.Where(c => c.Queue == name).ToList()));
        }

        return queues;
    }

    public async Task<IReadOnlyList<ConsumerInfo>> ListConsumersAsync(string vhost, CancellationToken ct)
    {
        using var doc = await GetJsonAsync($"api/consumers/{Escape(vhost)}", ct).ConfigureAwait(false);
        var consumers = new List<ConsumerInfo>();
        foreach (var c in doc.RootElement.EnumerateArray())
        {
            var queue = c.TryGetProperty("queue", out var qe) ? Str(qe, "name") : null;
            var channel = c.TryGetProperty("channel_details", out var ch) && ch.ValueKind == JsonValueKind.Object ? ch : default;
            consumers.Add(new ConsumerInfo(
                queue ?? "",
                Str(c, "consumer_tag") ?? "",
                c.TryGetProperty("active", out var a) ? a.ValueKind == JsonValueKind.True : true,
                Str(c, "activity_status"),
                (int)Num(c, "prefetch_count"),
                c.TryGetProperty("ack_required", out var ack) && ack.ValueKind == JsonValueKind.True,
                channel.ValueKind == JsonValueKind.Object ? Str(channel, "name") : null,
                channel.ValueKind == JsonValueKind.Object ? Str(channel, "connection_name") : null,
                Dict(c, "arguments")));
        }

        return consumers;
    }

    /// <summary>Force-closes every connection on <paramref name="vhost"/> whose client-provided name is
    /// <paramref name="clientProvidedName"/> (as a broker restart or a network cut would); how many.</summary>
    public async Task<int> CloseConnectionsAsync(string vhost, string clientProvidedName, CancellationToken ct)
    {
        var names = new List<string>();
        using (var doc = await GetJsonAsync($"api/vhosts/{Escape(vhost)}/connections", ct).ConfigureAwait(false))
        {
            foreach (var c in doc.RootElement.EnumerateArray())
            {
                var provided = Str(c, "user_provided_name")
                    ?? (c.TryGetProperty("client_properties", out var cp) && cp.ValueKind == JsonValueKind.Object ? Str(cp, "connection_name") : null);
                if (provided == clientProvidedName && Str(c, "name") is { } name)
                {
                    names.Add(name);
                }
            }
        }
        foreach (var name in names)
        {
            using var request = new HttpRequestMessage(HttpMethod.Delete, new Uri($"api/connections/{Escape(name)}", UriKind.Relative));
            request.Headers.Add("X-Reason", "test: connection cut");
            using var response = await _http.SendAsync(request, ct).ConfigureAwait(false);
            if (response.StatusCode != HttpStatusCode.NotFound)
            {
                await EnsureAsync(response, "close connection " + name, ct).ConfigureAwait(false);
            }
        }
        return names.Count;
    }

    private async Task<JsonDocument> GetJsonAsync(string path, CancellationToken ct)
    {
        using var response = await _http.GetAsync(new Uri(path, UriKind.Relative), ct).ConfigureAwait(false);
        await EnsureAsync(response, "GET " + path, ct).ConfigureAwait(false);
        var stream = await response.Content.ReadAsStreamAsync(ct).ConfigureAwait(false);
        await using (stream.ConfigureAwait(false))
        {
            return await JsonDocument.ParseAsync(stream, cancellationToken: ct).ConfigureAwait(false);
        }
    }

    private async Task EnsureAsync(HttpResponseMessage response, string what, CancellationToken ct)
    {
        if (!response.IsSuccessStatusCode)
        {
            var body = await response.Content.ReadAsStringAsync(ct).ConfigureAwait(false);
            throw new HttpRequestException(string.Create(CultureInfo.InvariantCulture,
                $"management API {BaseUri}: {what}: HTTP {(int)response.StatusCode} {body}"));
        }
    }

    private static string? Str(JsonElement e, string name) =>
        e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    private static long Num(JsonElement e, string name) =>
        e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetInt64() : 0;

    private static Dictionary<string, object?> Dict(JsonElement e, string name)
    {
        var result = new Dictionary<string, object?>(StringComparer.Ordinal);
        if (e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Object)
        {
            foreach (var p in v.EnumerateObject())
            {
                result[p.Name] = ToObject(p.Value);
            }
        }

        return result;
    }

    internal static object? ToObject(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.String => e.GetString(),
        JsonValueKind.Number => e.TryGetInt64(out var l) ? l : e.GetDouble(),
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        JsonValueKind.Object => e.EnumerateObject().ToDictionary(p => p.Name, p => ToObject(p.Value), StringComparer.Ordinal),
        JsonValueKind.Array => e.EnumerateArray().Select(ToObject).ToList(),
        _ => null,
    };
}
