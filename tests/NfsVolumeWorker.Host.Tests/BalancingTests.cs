using System.Diagnostics;
using NfsVolumeWorker.Balancing;
using NfsVolumeWorker.Partitions;
using NfsVolumeWorker.Testing;

namespace NfsVolumeWorker.Host.Tests;

public sealed class BalancingTests : IAsyncLifetime
{
    private readonly string _share = Directory.CreateTempSubdirectory("nfsvol-balancing-").FullName;
    private readonly List<WorkerProcess> _workers = [];

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (var w in _workers)
        {
            await w.DisposeAsync();
        }
        Directory.Delete(_share, recursive: true);
    }

    [Fact]
    public async Task Without_a_management_url_there_is_no_balancing_and_it_says_so_once()
    {
        var broker = await RabbitMqBroker.SharedAsync();
        await using var vhost = await broker.CreateVirtualHostAsync("nobalancing");
        var w = WorkerProcess.Start("solo", vhost.AmqpUri, null, _share);
        _workers.Add(w);
        var sw = Stopwatch.StartNew();
        while (!w.Output.Contains("Partition balancing is off", StringComparison.Ordinal) && sw.Elapsed < TimeSpan.FromSeconds(60) && !w.HasExited)
        {
            await Task.Delay(200);
        }
        await Task.Delay(3000);
        Assert.Single(System.Text.RegularExpressions.Regex.Matches(w.Output, "Partition balancing is off: Broker:ManagementUrl is not set"));
        Assert.Equal(0, await w.TerminateAsync(TimeSpan.FromSeconds(60)));
    }
}

public sealed class ConsumerSnapshotSpecs
{
    private static readonly DateTimeOffset T0 = DateTimeOffset.UnixEpoch;

    /// <summary>(partition, instance, active, subscription order).</summary>
    private static ConsumerSnapshot Snapshot(int partitions, params (int P, string I, bool Active, int Order)[] consumers) =>
        new(partitions, consumers.Select(c => new PartitionConsumerInfo(c.P, $"nfsvol.partition.{c.P:D2}", c.I, c.Active, T0.AddSeconds(c.Order))).ToList());

    [Fact]
    public void An_instance_above_its_share_hands_over_a_partition_whose_next_in_line_is_below_its_share()
    {
        // N=4, K=3, fair share 2: a holds 3, b 1, c 0.
        var s = Snapshot(4,
            (0, "a", true, 0), (0, "b", false, 1), (0, "c", false, 2),
            (1, "a", true, 0), (1, "c", false, 1), (1, "b", false, 2),
            (2, "a", true, 0), (2, "b", false, 1), (2, "c", false, 2),
            (3, "b", true, 0), (3, "a", false, 1), (3, "c", false, 2));
        Assert.Equal(2, s.FairShare);
        Assert.Equal("b", s.NextInLine(0)!.Connection);
        Assert.Equal("c", s.NextInLine(1)!.Connection);
        Assert.Equal([new BalanceAction(2, BalanceMove.HandOver)], s.Plan("a"));
        Assert.Empty(s.Plan("b"));
        Assert.Empty(s.Plan("c"));
    }

    [Fact]
    public void A_full_instance_next_in_line_steps_back_so_the_one_below_its_share_comes_first()
    {
        // N=6, K=3, fair share 2: a holds 4, b 2 (full), c 0; b is next in line on all of a's.
        var consumers = new List<(int, string, bool, int)>();
        for (var p = 0; p < 4; p++)
        {
            consumers.AddRange([(p, "a", true, 0), (p, "b", false, 1), (p, "c", false, 2)]);
        }
        consumers.AddRange([(4, "b", true, 0), (4, "a", false, 1), (4, "c", false, 2), (5, "b", true, 0), (5, "a", false, 1), (5, "c", false, 2)]);
        var s = Snapshot(6, [.. consumers]);
        Assert.Empty(s.Plan("a")); // handing over to b would only make b too full
        Assert.Equal(Enumerable.Range(0, 4).Select(p => new BalanceAction(p, BalanceMove.StepBack)), s.Plan("b"));
        Assert.Empty(s.Plan("c"));
    }

    [Fact]
    public void A_lone_instance_or_one_within_its_share_keeps_its_partitions()
    {
        Assert.Empty(Snapshot(4, (0, "a", true, 0), (1, "a", true, 0), (2, "a", true, 0), (3, "a", true, 0)).Plan("a"));
        var even = Snapshot(4, (0, "a", true, 0), (1, "a", true, 0), (2, "b", true, 0), (3, "b", true, 0),
            (0, "b", false, 1), (1, "b", false, 1), (2, "a", false, 1), (3, "a", false, 1));
        Assert.Empty(even.Plan("a"));
        Assert.Empty(even.Plan("b"));
    }

    [Fact]
    public void Consumer_tags_carry_the_subscription_time_the_plan_orders_waiters_by()
    {
        var at = DateTimeOffset.FromUnixTimeMilliseconds(1_780_000_000_123);
        var tag = Partitions.ConsumerTags.Create(7, at, "host-a-42");
        Assert.Equal("nfsvol-p07-1780000000123-host-a-42", tag);
        Assert.Equal(at, Partitions.ConsumerTags.SubscribedAt(tag));
        Assert.Null(Partitions.ConsumerTags.SubscribedAt("amq.ctag-abc"));
        Assert.Null(Partitions.ConsumerTags.SubscribedAt(null));
    }

    /// <summary>
    /// The broker as a model: per partition, its consumers in subscription order, the first one active (single
    /// active consumer keeps its active consumer and activates waiters in subscription order). A hand-over or
    /// step-back removes the consumer and subscribes it again at the back; a join subscribes everywhere at the
    /// back; a leave removes the instance everywhere.
    /// </summary>
    private sealed class SacBroker(int partitions)
    {
        private readonly List<(string Instance, int Order)>[] _lines = Enumerable.Range(0, partitions).Select(_ => new List<(string, int)>()).ToArray();
        private int _clock;

        public int Moves { get; private set; }

        public void Join(string instance)
        {
            foreach (var line in _lines)
            {
                line.Add((instance, ++_clock));
            }
        }

        public void Leave(string instance)
        {
            foreach (var line in _lines)
            {
                line.RemoveAll(c => c.Instance == instance);
            }
        }

        public ConsumerSnapshot Snapshot() => new(_lines.Length, _lines.SelectMany((line, p) => line.Select((c, i) =>
            new PartitionConsumerInfo(p, $"nfsvol.partition.{p:D2}", c.Instance, i == 0, T0.AddSeconds(c.Order)))).ToList());

        public void Apply(string instance, BalanceAction action)
        {
            var line = _lines[action.Partition];
            var at = line.FindIndex(c => c.Instance == instance);
            Assert.True(at >= 0, $"{instance} is not subscribed to {action.Partition}");
            Assert.Equal(action.Move == BalanceMove.HandOver, at == 0); // a hand-over only by the active one, a step-back only by a waiter
            line.RemoveAt(at);
            line.Add((instance, ++_clock));
            Moves++;
        }

        public Dictionary<string, int> Held(IEnumerable<string> instances) =>
            instances.ToDictionary(i => i, i => _lines.Count(l => l.Count > 0 && l[0].Instance == i));
    }

    /// <summary>Rounds until nobody moves; in each round every instance plans either from its own fresh snapshot
    /// (one after the other) or all from the same one (all at once, the worst case of stale information).</summary>
    private static int RoundsToSettle(SacBroker broker, IReadOnlyList<string> instances, bool atOnce, int maxRounds = 30)
    {
        for (var round = 1; round <= maxRounds; round++)
        {
            var moved = false;
            var shared = broker.Snapshot();
            foreach (var i in instances)
            {
                var plan = (atOnce ? shared : broker.Snapshot()).Plan(i);
                foreach (var a in plan)
                {
                    broker.Apply(i, a);
                    moved = true;
                }
            }
            if (!moved)
            {
                return round;
            }
        }
        return int.MaxValue;
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Joins_and_leaves_settle_within_the_fair_share_in_a_few_rounds(bool atOnce)
    {
        const int N = 16;
        var broker = new SacBroker(N);
        var running = new List<string>();
        var worst = 0;
        void Check(string step)
        {
            var rounds = RoundsToSettle(broker, running, atOnce);
            Assert.True(rounds <= 12, $"{step}: did not settle within 12 rounds");
            worst = Math.Max(worst, rounds);
            var fair = (N + running.Count - 1) / running.Count;
            var held = broker.Held(running);
            Assert.Equal(N, held.Values.Sum());
            Assert.True(held.Values.All(h => h <= fair), $"{step}: {string.Join(", ", held.Select(h => $"{h.Key}={h.Value}"))} (fair {fair})");
        }
        foreach (var name in new[] { "a", "b", "c", "d", "e", "f" })
        {
            broker.Join(name);
            running.Add(name);
            Check($"{name} joined");
        }
        foreach (var name in new[] { "b", "e", "a" })
        {
            broker.Leave(name);
            running.Remove(name);
            Check($"{name} left");
        }
        broker.Join("g");
        running.Add("g");
        Check("g joined");
        Assert.True(broker.Moves > 0);
        Assert.True(worst <= 12);
    }
}
