using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Messaging;
using NfsVolumeWorker.Testing;
using NfsVolumeWorker.Tests.Support;

namespace NfsVolumeWorker.Tests;

/// <summary>Several worker processes (real child processes) on one broker and one share.</summary>
public sealed class MultiInstanceTests(ITestOutputHelper output)
{
    private const long MiB = WorkerTestBed.MiB;

    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task With_two_and_then_three_worker_processes_each_queue_has_exactly_one_active_consumer()
    {
        await using var bed = await WorkerProcessBed.CreateAsync(output, "sac");
        var vhost = bed.VirtualHost;
        bed.Start("w1");
        bed.Start("w2");
        var two = await Ownership.WaitForAsync(vhost, ["w1", "w2"], StartTimeout);
        output.WriteLine("two workers: " + Ownership.Describe(two));
        Assert.All(two.Values, q => Assert.Single(q.Active));

        bed.Start("w3");
        var three = await Ownership.WaitForAsync(vhost, ["w1", "w2", "w3"], StartTimeout);
        output.WriteLine("three workers: " + Ownership.Describe(three));
        Assert.All(three.Values, q => Assert.Single(q.Active));
        // Adding an instance never takes a partition from its owner (single active consumer hands a
        // queue over only when its active consumer goes).
        Assert.All(three.Keys, q => Assert.Equal(two[q].Active, three[q].Active));

        var queues = await vhost.ListQueuesAsync();
        foreach (var name in Ownership.WorkerQueues)
        {
            var q = queues.Single(x => x.Name == name);
            Assert.Equal("quorum", q.Type);
            Assert.True(q.IsSingleActiveConsumer, name);
        }

        // And they work: a command on every partition completes once.
        var events = bed.Events;
        var producer = bed.Producer;
        var commands = Enumerable.Range(0, WorkerSettings.Partitions).SelectMany(p => Ids.InPartition(p, 3))
            .Select(v => new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = v, SizeBytes = MiB }).ToList();
        foreach (var c in commands)
        {
            await producer.PublishAsync(c);
        }
        await events.WaitForAllAsync(commands.Select(c => c.CommandId).ToList(), TimeSpan.FromSeconds(60));
        Assert.Equal(0, events.AssertOneTerminalEventEach(commands.Select(c => c.CommandId)));
        Assert.All(events.Terminal, e => Assert.Equal(nameof(VolumeCreated), e.Type));
    }

    [Fact]
    public async Task Kill_9_of_a_worker_in_the_middle_of_a_clone_moves_its_partitions_and_every_command_completes_once()
    {
        await using var bed = await WorkerProcessBed.CreateAsync(output, "kill9");
        var vhost = bed.VirtualHost;
        var share = bed.Share;
        var slow = SlowCopy.Settings(32L << 20);
        foreach (var name in new[] { "w1", "w2", "w3" })
        {
            bed.Start(name, slow);
        }
        var before = await Ownership.WaitForAsync(vhost, ["w1", "w2", "w3"], StartTimeout);
        output.WriteLine("before: " + Ownership.Describe(before));
        var events = bed.Events;
        var producer = bed.Producer;
        var sent = new List<VolumeCommand>();
        async Task Send<T>(T c)
            where T : VolumeCommand
        {
            sent.Add(c);
            await producer.PublishAsync(c);
        }

        // A volume with real data, and a clone of it that takes seconds.
        var a = Guid.NewGuid();
        await Send(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = a, SizeBytes = 512 * MiB });
        await events.WaitForAsync(sent[^1].CommandId);
        await Tools.WriteAsync(Path.Combine(share, $"volume-{a}"), "raw", 0x6b, 0, 192 * MiB);
        var clone = new CloneVolume { CommandId = Guid.NewGuid(), VolumeId = a, NewVolumeId = Guid.NewGuid() };
        await Send(clone);

        // Other volumes' work before and during the clone, on every partition.
        async Task SendSome(int volumes)
        {
            for (var i = 0; i < volumes; i++)
            {
                var v = Guid.NewGuid();
                var s = Guid.NewGuid();
                await Send(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = v, SizeBytes = 4 * MiB });
                await Send(new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = v, SnapshotId = s });
                await Send(new ExtendVolume { CommandId = Guid.NewGuid(), VolumeId = v, NewSizeBytes = 8 * MiB });
                await Send(new DeleteSnapshot { CommandId = Guid.NewGuid(), VolumeId = v, SnapshotId = s });
            }
        }
        await SendSome(20);

        // Find the worker whose qemu-img is copying, and kill it without warning while it copies.
        await Eventually.WaitAsync(() => events.Progress.Count(p => p.CommandId == clone.CommandId), n => n > 0, TimeSpan.FromSeconds(30));
        var victim = await Eventually.WaitAsync(() => bed.Workers.FirstOrDefault(w => ProcessTree.Children(w.Pid, "qemu-img").Count > 0), w => w is not null, TimeSpan.FromSeconds(10), 50);
        Assert.NotNull(victim);
        var orphans = ProcessTree.Children(victim.Pid, "qemu-img");
        var owned = before.Values.Where(q => q.Active.Contains(victim.InstanceName)).Select(q => q.Queue).ToList();
        output.WriteLine($"killing {victim.InstanceName} (pid {victim.Pid}) in the middle of the clone; it owns [{string.Join(", ", owned)}]; its qemu-img: {string.Join(",", orphans)}");
        victim.KillHard();
        Assert.True(victim.HasExited);

        // Its partitions move: every queue has one active consumer, among the survivors.
        var survivors = bed.Workers.Where(w => w != victim).Select(w => w.InstanceName).ToList();
        var after = await Ownership.WaitForAsync(vhost, survivors, TimeSpan.FromSeconds(30));
        output.WriteLine("after: " + Ownership.Describe(after));
        Assert.All(after.Values, q => Assert.True(q.Active.Count == 1 && survivors.Contains(q.Active[0])));

        // Work sent after the kill (some of it to the moved partitions) completes too.
        await SendSome(10);
        await events.WaitForAllAsync(sent.Select(c => c.CommandId).ToList(), TimeSpan.FromSeconds(120));
        var repeats = events.AssertOneTerminalEventEach(sent.Select(c => c.CommandId));
        output.WriteLine($"{sent.Count} commands, each with one terminal event ({repeats} identical repeats)");
        var failed = events.Terminal.Where(e => e.Type == nameof(CommandFailed)).ToList();
        Assert.True(failed.Count == 0, string.Join(Environment.NewLine, failed));
        Assert.Equal(nameof(VolumeCloned), events.TerminalOf(clone.CommandId)[0].Type);

        // The share is readable and the clone is a full copy; nothing is left waiting or half done.
        Assert.Equal(0, await Tools.CompareAsync(Path.Combine(share, $"volume-{clone.NewVolumeId}"), "raw", Path.Combine(share, $"volume-{a}"), "raw"));
        Assert.Equal("", await Tools.CheckShareAsync(share));
        await Tools.WaitForEmptyInboxAsync(share);
        var leftovers = Tools.InboxEntries(share)
            .Concat(Directory.EnumerateFiles(Path.Combine(share, ".nfsvolumeworker", "journal")))
            .Concat(Directory.EnumerateFiles(share, ".volume-*.tmp-*").Where(f => !f.Contains(".info.tmp-", StringComparison.Ordinal))).ToList();
        // A .info temp file of an atomic replace the kill interrupted is harmless (the .info itself is whole)
        // and, by crash rule 5, left for 'nfsvol check' to report; image temp files are removed by the re-run.
        output.WriteLine("interrupted .info replacements: " + string.Join(", ", Directory.EnumerateFiles(share, ".volume-*.info.tmp-*").Select(Path.GetFileName)));
        Assert.True(leftovers.Count == 0, "left over: " + string.Join(", ", leftovers.Select(f => Path.GetRelativePath(share, f))));
        // Every inbox directory goes once its volume has been idle for the grace period, the one the kill left
        // behind included (the survivors' sweep found it, resumed it, then removed it): an idle sweep reads an empty folder.
        var inbox = Path.Combine(share, ".nfsvolumeworker", "inbox");
        var directories = await Eventually.WaitAsync(() => Directory.EnumerateFileSystemEntries(inbox).ToList(), d => d.Count == 0, TimeSpan.FromSeconds(40));
        Assert.True(directories.Count == 0, "inbox directories left: " + string.Join(", ", directories.Select(Path.GetFileName)));
        foreach (var w in bed.Workers)
        {
            var overlaps = w.Output.Split('\n').Where(l => l.Contains("overlapped", StringComparison.Ordinal)).ToList();
            Assert.True(overlaps.Count == 0, $"{w.InstanceName}: {string.Join(Environment.NewLine, overlaps)}");
        }
    }
}
