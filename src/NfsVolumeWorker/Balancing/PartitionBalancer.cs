using NfsVolumeWorker.Broker;
using System.Diagnostics.Metrics;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Configuration;
using NfsVolumeWorker.Partitions;

namespace NfsVolumeWorker.Balancing;

/// <summary>
/// Spreads the partition queues over the running instances. RabbitMQ's single active consumer keeps a
/// partition on its first subscriber, so without help the first instance holds all N. Every round
/// (<see cref="BalancingOptions.Interval"/>, jittered) this reads who consumes what from the management API
/// and makes this instance's moves of <see cref="ConsumerSnapshot.Plan"/>: hand-overs and step-backs, each a
/// <see cref="PartitionSubscription.ResubscribeAsync"/> of one partition's channel. The stop needs nothing
/// here: <see cref="PartitionSubscriptions.StoppingAsync"/> releases every partition in order.
/// </summary>
public sealed class PartitionBalancer(
    PartitionSubscriptions subscriptions, IOptions<BrokerOptions> broker, IOptions<WorkerOptions> worker, IOptions<BalancingOptions> options,
    IOptions<PartitionOptions> partitionOptions, FleetView fleet, ILogger<PartitionBalancer> logger) : BackgroundService
{
    private static readonly Meter Meter = new("NfsVolumeWorker.Balancing");
    private static readonly Counter<long> HandOvers = Meter.CreateCounter<long>("nfsvol.partition.handovers", description: "Partitions this instance handed over to another.");
    private static readonly Counter<long> StepBacks = Meter.CreateCounter<long>("nfsvol.partition.stepbacks", description: "Times this instance moved to the back of a partition's line of waiting consumers.");
    private int _held = -1;

    /// <summary>Partitions this instance was active on at the last round (-1 before the first).</summary>
    public int Held => Volatile.Read(ref _held);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        Meter.CreateObservableGauge("nfsvol.partition.active", () => Held, description: "Partitions this instance is the active consumer of.");
        if (string.IsNullOrWhiteSpace(broker.Value.ManagementUrl) || !options.Value.Enabled)
        {
            BalancerLog.Disabled(logger, string.IsNullOrWhiteSpace(broker.Value.ManagementUrl) ? "Broker:ManagementUrl is not set" : "Balancing:Enabled is false");
            return;
        }
        using var management = new ManagementClient(new Uri(broker.Value.ManagementUrl), BrokerAddress.Parse(broker.Value.Url, broker.Value.Hosts), options.Value.RequestTimeout);
        var instance = worker.Value.InstanceName;
        BalancerLog.Enabled(logger, instance, management.VirtualHost, options.Value.Interval.TotalSeconds);
        var failures = 0;
#pragma warning disable CA1031 // a failed round (management API down, a channel error) must never stop the worker
        while (!stoppingToken.IsCancellationRequested && !subscriptions.IsStopping)
        {
            var jitter = options.Value.Interval * (0.75 + Random.Shared.NextDouble() * 0.5);
            await Task.Delay(jitter, stoppingToken).ConfigureAwait(false);
            try
            {
                var snapshot = await management.GetConsumersAsync(subscriptions.All.Count, stoppingToken).ConfigureAwait(false);
                failures = 0;
                fleet.Update(snapshot, DateTimeOffset.UtcNow);
                var mine = snapshot.ActiveOf(instance).Count;
                Volatile.Write(ref _held, mine);
                if (subscriptions.Connection is not { } connection)
                {
                    continue;
                }
                foreach (var action in snapshot.Plan(instance))
                {
                    if (subscriptions.IsStopping)
                    {
                        break;
                    }
                    var moved = await subscriptions.All[action.Partition]
                        .ResubscribeAsync(connection, partitionOptions.Value.HandOverTimeout, stoppingToken).ConfigureAwait(false);
                    if (!moved)
                    {
                        BalancerLog.HandOverSkipped(logger, action.Partition);
                    }
                    else if (action.Move == BalanceMove.HandOver)
                    {
                        HandOvers.Add(1);
                        BalancerLog.HandedOver(logger, action.Partition, mine, subscriptions.All.Count, snapshot.Instances.Count, snapshot.FairShare);
                    }
                    else
                    {
                        StepBacks.Add(1);
                        BalancerLog.SteppedBack(logger, action.Partition);
                    }
                }
            }
            catch (Exception e) when (!stoppingToken.IsCancellationRequested)
            {
                // Log the first failure and then every 12th: a management API that is down must not flood the log.
                if (failures++ % 12 == 0)
                {
                    BalancerLog.RoundFailed(logger, e.Message);
                }
            }
        }
#pragma warning restore CA1031
    }
}

/// <summary>Partition balancing. Section <c>Balancing</c>.</summary>
public sealed class BalancingOptions
{
    public const string SectionName = "Balancing";

    /// <summary>True to spread partitions over instances (needs Broker:ManagementUrl). Default true.</summary>
    public bool Enabled { get; set; } = true;

    /// <summary>Time between rounds (each jittered by ±25%). Default 5 seconds.</summary>
    public TimeSpan Interval { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Timeout of a management API call. Default 10 seconds.</summary>
    public TimeSpan RequestTimeout { get; set; } = TimeSpan.FromSeconds(10);
}

/// <summary>The balancer's log messages (event ids 3100-3119).</summary>
internal static partial class BalancerLog
{
    [LoggerMessage(3100, LogLevel.Information, "Partition balancing is off: {Reason}. Partitions stay with the instance that subscribed first.")]
    public static partial void Disabled(ILogger logger, string reason);

    [LoggerMessage(3101, LogLevel.Information, "Partition balancing on: instance {Instance}, vhost {VirtualHost}, a round every {Seconds} s")]
    public static partial void Enabled(ILogger logger, string instance, string virtualHost, double seconds);

    [LoggerMessage(3102, LogLevel.Information, "Handed partition {Partition} over: held {Held} of {Partitions} with {Instances} instances (fair share {Share})")]
    public static partial void HandedOver(ILogger logger, int partition, int held, int partitions, int instances, int share);

    [LoggerMessage(3103, LogLevel.Warning, "Partition {Partition} was not handed over (still busy, or not subscribed); next round")]
    public static partial void HandOverSkipped(ILogger logger, int partition);

    [LoggerMessage(3104, LogLevel.Warning, "Partition balancing round failed: {Reason}")]
    public static partial void RoundFailed(ILogger logger, string reason);

    [LoggerMessage(3105, LogLevel.Information, "Stepped back on partition {Partition}: an instance below its fair share waits behind this one")]
    public static partial void SteppedBack(ILogger logger, int partition);
}

/// <summary>Registration of the balancer.</summary>
public static class BalancingServiceCollectionExtensions
{
    /// <summary>Adds the balancer (after the partition subscriptions).</summary>
    public static IServiceCollection AddPartitionBalancing(this IServiceCollection services)
    {
        services.AddOptions<BalancingOptions>().BindConfiguration(BalancingOptions.SectionName);
        services.AddSingleton<FleetView>();
        services.AddHostedService<PartitionBalancer>();
        return services;
    }
}

/// <summary>The balancer's last reading of who consumes which partition (the status page's fleet view: no request
/// of its own to the management API).</summary>
public sealed class FleetView
{
    private volatile FleetReading? _latest;

    /// <summary>The last reading; null before the first round, and always with balancing off.</summary>
    public FleetReading? Latest => _latest;

    public void Update(ConsumerSnapshot snapshot, DateTimeOffset readAt) => _latest = new FleetReading(snapshot, readAt);
}

/// <summary>One reading of the partition queues' consumers.</summary>
public sealed record FleetReading(ConsumerSnapshot Snapshot, DateTimeOffset ReadAt);
