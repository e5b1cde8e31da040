using System.Diagnostics.Metrics;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Configuration;

namespace NfsVolumeWorker.Balancing;

/// <summary>
/// Spreads the partition queues over the running instances. RabbitMQ's single active consumer keeps a
/// partition on its first subscriber, so without help the first instance holds all N. Every round
/// (<see cref="BalancingOptions.Interval"/>, jittered) this reads who consumes what from the management API;
/// with K instances, one that is active on more than ceil(N/K) partitions hands one over
/// (<see cref="PartitionSlot.HandOverAsync"/>). At shutdown it hands over every partition the same way
/// before the bus stops, so no successor receives a partition's messages out of order.
/// </summary>
public sealed class PartitionBalancer(
    PartitionChannels channels, IOptions<BrokerOptions> broker, IOptions<WorkerOptions> worker, IOptions<BalancingOptions> options,
    ILogger<PartitionBalancer> logger) : BackgroundService
{
    private static readonly Meter Meter = new("NfsVolumeWorker.Balancing");
    private static readonly Counter<long> HandOvers = Meter.CreateCounter<long>("nfsvol.partition.handovers", description: "Partitions this instance handed over to another.");
    private int _held = -1;

    /// <summary>Partitions this instance was active on at the last round (-1 before the first).</summary>
    public int Held => Volatile.Read(ref _held);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        Meter.CreateObservableGauge("nfsvol.partition.active", () => Held, description: "Partitions this instance is the active consumer of.");
        if (string.IsNullOrWhiteSpace(broker.Value.ManagementUrl) || !options.Value.Enabled)
        {
            BalancerLog.Disabled(logger, string.IsNullOrWhiteSpace(broker.Value.ManagementUrl) ? "Broker:ManagementUrl is not set" : "Balancing:Enabled is false (opt-in)");
            return;
        }
        using var management = new ManagementClient(new Uri(broker.Value.ManagementUrl), new Uri(broker.Value.Url), options.Value.RequestTimeout);
        var instance = worker.Value.InstanceName;
        BalancerLog.Enabled(logger, instance, management.VirtualHost, options.Value.Interval.TotalSeconds);
        var failures = 0;
#pragma warning disable CA1031 // a failed round (management API down, a channel error) must never stop the worker
        while (!stoppingToken.IsCancellationRequested)
        {
            var jitter = options.Value.Interval * (0.75 + Random.Shared.NextDouble() * 0.5);
            await Task.Delay(jitter, stoppingToken).ConfigureAwait(false);
            try
            {
                var snapshot = await management.GetConsumersAsync(channels.Count, stoppingToken).ConfigureAwait(false);
                failures = 0;
                var mine = snapshot.ActiveOf(instance);
                Volatile.Write(ref _held, mine.Count);
                if (snapshot.PartitionToHandOver(instance) is { } partition)
                {
                    var handed = await channels[partition].HandOverAsync(options.Value.IdleTimeout, reopen: true, stoppingToken).ConfigureAwait(false);
                    if (handed)
                    {
                        HandOvers.Add(1);
                        BalancerLog.HandedOver(logger, partition, mine.Count, channels.Count, snapshot.Instances.Count, snapshot.FairShare);
                    }
                    else
                    {
                        BalancerLog.HandOverSkipped(logger, partition);
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

    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        await base.StopAsync(cancellationToken).ConfigureAwait(false);
        // Stopping before the bus (registered after it): hand every partition over by closing its channel, so
        // the next owner gets the unacknowledged messages first (MassTransit's own stop sends basic.cancel,
        // after which RabbitMQ 3.10 gives newer messages to the next consumer first).
        var held = channels.All.Where(s => s.IsSubscribed).ToList();
        foreach (var slot in channels.All)
        {
            slot.MarkStopping();
        }
        var results = await Task.WhenAll(held.Select(async s =>
        {
            try
            {
                return await s.HandOverAsync(options.Value.IdleTimeout, reopen: true, cancellationToken).ConfigureAwait(false);
            }
#pragma warning disable CA1031 // best effort: the bus's own stop follows
            catch (Exception e) when (e is not OperationCanceledException)
#pragma warning restore CA1031
            {
                BalancerLog.RoundFailed(logger, e.Message);
                return false;
            }
        })).ConfigureAwait(false);
        BalancerLog.ReleasedAtStop(logger, results.Count(r => r));
    }
}

/// <summary>Partition balancing. Section <c>Balancing</c>.</summary>
public sealed class BalancingOptions
{
    public const string SectionName = "Balancing";

    /// <summary>True to spread partitions over instances (needs Broker:ManagementUrl). Default false: under load the
    /// hand-over was seen to drop every consumer of the handing instance for a while (partitions ping-pong, some
    /// briefly without an active consumer); until that is understood, balancing is opt-in.</summary>
    public bool Enabled { get; set; }

    /// <summary>Time between rounds (each jittered by ±25%). Default 5 seconds.</summary>
    public TimeSpan Interval { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>How long a hand-over waits for the partition's message in progress. Default 30 seconds.</summary>
    public TimeSpan IdleTimeout { get; set; } = TimeSpan.FromSeconds(30);

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

    [LoggerMessage(3105, LogLevel.Information, "Shutting down: released {Count} partition(s) to the other instances")]
    public static partial void ReleasedAtStop(ILogger logger, int count);
}

/// <summary>Registration of the balancer.</summary>
public static class BalancingServiceCollectionExtensions
{
    /// <summary>Adds the balancer. Call after AddMassTransit, so it stops before the bus.</summary>
    public static IServiceCollection AddPartitionBalancing(this IServiceCollection services)
    {
        services.AddOptions<BalancingOptions>().BindConfiguration(BalancingOptions.SectionName);
        services.AddSingleton(sp => new PartitionChannels(sp.GetRequiredService<IOptions<WorkerOptions>>().Value.PartitionCount));
        services.AddHostedService<PartitionBalancer>();
        return services;
    }
}
