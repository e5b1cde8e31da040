using System.Reflection;
using Microsoft.Extensions.Logging;

namespace NfsVolumeWorker.Host.Tests;

/// <summary>Every <c>[LoggerMessage]</c> of the product has its own event id, inside its area's range, so an
/// operator can filter logs by id. The ranges are listed in docs/observability.md, "Logs".</summary>
public sealed class LogEventIdSpecs
{
    /// <summary>The product's assemblies: worker host, storage engine, oslo adapter, nfsvol.</summary>
    internal static readonly string[] ProductAssemblies = ["NfsVolumeWorker", "NfsVolumeWorker.Storage", "NfsVolumeWorker.Oslo", "nfsvol"];

    /// <summary>Event id range of each class that declares log messages. A new area takes the next free thousand.</summary>
    private static readonly Dictionary<string, (int First, int Last)> RangeByClass = new(StringComparer.Ordinal)
    {
        ["NfsVolumeWorker.Storage.Diagnostics.EngineLog"] = (1000, 1099),
        ["NfsVolumeWorker.Storage.QemuImg.QemuImgLog"] = (2000, 2099),
        ["NfsVolumeWorker.Telemetry.WorkerLog"] = (3000, 3099),
        ["NfsVolumeWorker.Balancing.BalancerLog"] = (3100, 3119),
        ["NfsVolumeWorker.Partitions.PartitionLog"] = (3120, 3139),
        ["NfsVolumeWorker.Oslo.OsloLog"] = (4000, 4099),
        ["NfsVolumeWorker.Storage.Recovery.RecoveryLog"] = (5000, 5099),
    };

    internal static IEnumerable<Type> ProductTypes() =>
        ProductAssemblies.Select(name => Assembly.Load(name)).SelectMany(a => a.GetTypes());

    private static List<(string Method, int Id)> LogMessages() =>
        ProductTypes()
            .SelectMany(t => t.GetMethods(BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static | BindingFlags.Instance | BindingFlags.DeclaredOnly))
            .Select(m => (Method: m, Attribute: m.GetCustomAttribute<LoggerMessageAttribute>()))
            .Where(x => x.Attribute is not null)
            .Select(x => ($"{x.Method.DeclaringType!.FullName}.{x.Method.Name}", x.Attribute!.EventId))
            .ToList();

    [Fact]
    public void The_product_declares_its_log_messages_in_every_area()
    {
        // Guards the two tests below against passing on nothing (an assembly not loaded, a class renamed).
        var classes = LogMessages().Select(m => m.Method[..m.Method.LastIndexOf('.')]).ToHashSet();
        Assert.Equal(RangeByClass.Keys.Order(), classes.Order());
    }

    [Fact]
    public void No_two_log_messages_share_an_event_id()
    {
        var shared = LogMessages()
            .GroupBy(m => m.Id)
            .Where(g => g.Count() > 1)
            .Select(g => $"{g.Key}: {string.Join(", ", g.Select(m => m.Method))}")
            .ToList();
        Assert.True(shared.Count == 0, "Event ids used twice:\n" + string.Join("\n", shared));
    }

    [Fact]
    public void Every_log_message_has_an_event_id_inside_its_area_range()
    {
        var outside = new List<string>();
        foreach (var (method, id) in LogMessages())
        {
            var type = method[..method.LastIndexOf('.')];
            if (!RangeByClass.TryGetValue(type, out var range))
            {
                outside.Add($"{method} ({id}): {type} has no event id range (add one here and in docs/observability.md)");
            }
            else if (id < range.First || id > range.Last)
            {
                outside.Add($"{method} ({id}): outside {range.First}-{range.Last}");
            }
        }
        Assert.True(outside.Count == 0, string.Join("\n", outside));
    }
}
