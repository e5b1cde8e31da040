using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Messaging;
using NfsVolumeWorker.Testing;

namespace NfsVolumeWorker.Tests.Support;

/// <summary>Who consumes the worker's queues: per queue, its consumers' instance names (the connection's
/// client-provided name, which the worker sets to Worker:InstanceName) and which one is active.</summary>
public static class Ownership
{
    public sealed record QueueOwners(string Queue, IReadOnlyList<string> Instances, IReadOnlyList<string> Active);

    public static IReadOnlyList<string> WorkerQueues { get; } =
        [Topology.IngressQueue, .. Enumerable.Range(0, WorkerSettings.Partitions).Select(PartitionKey.QueueName)];

    public static async Task<Dictionary<string, QueueOwners>> ReadAsync(VirtualHost vhost)
    {
        // Consumers first: a connection opened between the two reads then has its name, not its address.
        var consumers = await vhost.ListConsumersAsync();
        var names = await ConnectionNamesAsync(vhost);
        return WorkerQueues.ToDictionary(q => q, q =>
        {
            var of = consumers.Where(c => c.Queue == q).ToList();
            string Name(ConsumerInfo c) => c.ConnectionName is { } n && names.TryGetValue(n, out var user) ? user : c.ConnectionName ?? "?";
            return new QueueOwners(q, of.Select(Name).Order(StringComparer.Ordinal).ToList(), of.Where(c => c.Active).Select(Name).ToList());
        }, StringComparer.Ordinal);
    }

    /// <summary>Waits until every worker queue has exactly <paramref name="instances"/> as its consumers.</summary>
    public static async Task<Dictionary<string, QueueOwners>> WaitForAsync(VirtualHost vhost, IReadOnlyCollection<string> instances, TimeSpan timeout)
    {
        var wanted = instances.Order(StringComparer.Ordinal).ToList();
        var owners = await Eventually.WaitAsync(() => ReadAsync(vhost),
            o => o.Values.All(q => q.Instances.SequenceEqual(wanted) && q.Active.Count == 1), timeout, 500);
        Assert.True(owners.Values.All(q => q.Instances.SequenceEqual(wanted)),
            $"consumers are not [{string.Join(", ", wanted)}] on every queue after {timeout.TotalSeconds} s: {Describe(owners)}");
        return owners;
    }

    public static string Describe(Dictionary<string, QueueOwners> owners) =>
        string.Join("; ", owners.Values.Select(q => $"{q.Queue}: active [{string.Join(",", q.Active)}] of [{string.Join(",", q.Instances)}]"));

    private static async Task<Dictionary<string, string>> ConnectionNamesAsync(VirtualHost vhost)
    {
        var broker = vhost.Broker;
        using var http = new HttpClient { BaseAddress = broker.ManagementUri };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes($"{broker.UserName}:{broker.Password}")));
        using var doc = JsonDocument.Parse(await http.GetStringAsync(new Uri($"api/vhosts/{Uri.EscapeDataString(vhost.Name)}/connections", UriKind.Relative)));
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var c in doc.RootElement.EnumerateArray())
        {
            var name = c.GetProperty("name").GetString()!;
            result[name] = c.TryGetProperty("user_provided_name", out var u) && u.ValueKind == JsonValueKind.String ? u.GetString()! : name;
        }
        return result;
    }
}

/// <summary>Child processes of a process, from /proc.</summary>
internal static class ProcessTree
{
    /// <summary>Pids of processes named <paramref name="comm"/> whose parent is <paramref name="parentPid"/>.</summary>
    public static List<int> Children(int parentPid, string comm)
    {
        var result = new List<int>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out var pid))
            {
                continue;
            }
            try
            {
                var stat = File.ReadAllText(Path.Combine(dir, "stat"));
                var open = stat.IndexOf('(', StringComparison.Ordinal);
                var close = stat.LastIndexOf(')');
                var name = stat[(open + 1)..close];
                var ppid = int.Parse(stat[(close + 2)..].Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture);
                if (ppid == parentPid && name == comm)
                {
                    result.Add(pid);
                }
            }
            catch (IOException)
            {
            }
        }
        return result;
    }
}
