using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text;
using NfsVolumeWorker.Storage.Inbox;
using NfsVolumeWorker.Storage.Shares;

namespace NfsVolumeWorker.Storage.Tests.Inbox;

/// <summary>
/// The inbox of format 2: a volume's directory goes once it has been empty for a while, so a survey of the share costs one directory
/// read plus one per volume with waiting work; appenders racing a removal lose nothing; empty directories left by
/// format-1 workers, and by drainers killed mid-way, are found and removed in bounded batches.
/// </summary>
public sealed class VolumeInboxSpecs : IDisposable
{
    private const UnixFileMode Mode = UnixFileMode.UserRead | UnixFileMode.UserWrite;

    private readonly TempDirectory _dir = new("nfsvol-inbox-");
    private readonly Share _share;

    public VolumeInboxSpecs()
    {
        _share = new Share(_dir.Path, _dir.Path, null);
        ShareMarker.EnsureAvailable(_share);
    }

    public void Dispose() => _dir.Dispose();

    private string InboxRoot => Path.Combine(_share.WorkerDirectory, "inbox");

    private List<string> InboxDirectories() =>
        Directory.Exists(InboxRoot) ? Directory.EnumerateDirectories(InboxRoot).Select(d => Path.GetFileName(d)).Order(StringComparer.Ordinal).ToList() : [];

    private Task<bool> AppendAsync(Guid volumeId, Guid commandId) =>
        VolumeInbox.AppendAsync(_share, volumeId, commandId, Encoding.UTF8.GetBytes(commandId.ToString()), Mode, CancellationToken.None);

    /// <summary>What the executor's drain loop does: run (here: record) each entry and remove it, until the inbox
    /// is empty. False when another drainer holds the volume.</summary>
    private bool Drain(Guid volumeId, ConcurrentQueue<Guid> ran)
    {
        using var drain = VolumeInbox.TryTakeDrain(_share, volumeId);
        if (drain is null)
        {
            return false;
        }
        while (VolumeInbox.List(_share, volumeId) is [var first, ..])
        {
            Assert.Equal(first.CommandId.ToString(), Encoding.UTF8.GetString(first.ReadPayload()));
            ran.Enqueue(first.CommandId);
            VolumeInbox.Remove(first);
        }
        return true;
    }

    /// <summary>What the sweep does with empty directories, without the grace period.</summary>
    private int RemoveEmpty() => VolumeInbox.RemoveEmpty(_share, VolumeInbox.Survey(_share, 1000, TimeSpan.Zero));

    /// <summary>Sweeps until no empty directory is left (or 10 s pass), for tests where nothing holds a lock: a
    /// child process that another test in this process is starting keeps a copy of every descriptor until it execs,
    /// so a lock released a moment ago can still look held to one sweep (the worker's next sweep takes it).</summary>
    private int RemoveAllEmpty()
    {
        var removed = RemoveEmpty();
        var deadline = Stopwatch.GetTimestamp() + Stopwatch.Frequency * 10;
        while (VolumeInbox.Survey(_share, 1000, TimeSpan.Zero).Empty.Count > 0 && Stopwatch.GetTimestamp() < deadline)
        {
            Thread.Sleep(10);
            removed += RemoveEmpty();
        }
        return removed;
    }

    /// <summary>A directory as a format-1 worker leaves it once its volume's commands ran: the two lock files.</summary>
    private string LegacyEmptyDirectory(Guid volumeId)
    {
        var dir = VolumeInbox.DirectoryOf(_share, volumeId);
        Directory.CreateDirectory(dir);
        File.WriteAllBytes(Path.Combine(dir, ".append.lock"), []);
        File.WriteAllBytes(Path.Combine(dir, ".drain.lock"), []);
        return dir;
    }

    [Fact]
    public async Task A_drained_inbox_leaves_no_directory_and_the_survey_finds_only_the_volumes_with_waiting_work()
    {
        var (a, b, waiting) = (Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid());
        var commands = new Dictionary<Guid, List<Guid>>();
        foreach (var volume in new[] { a, b, waiting })
        {
            commands[volume] = [Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid()];
            foreach (var c in commands[volume])
            {
                Assert.True(await AppendAsync(volume, c));
            }
        }
        Assert.False(await AppendAsync(a, commands[a][1])); // a duplicate of a waiting command

        var ran = new ConcurrentQueue<Guid>();
        Assert.True(Drain(a, ran));
        Assert.True(Drain(b, ran));
        Assert.Equal(commands[a].Concat(commands[b]), ran);

        // Emptied moments ago, they stay for the grace period (a next command would pay no sync for a new one)...
        var recent = VolumeInbox.Survey(_share, 100, VolumeInbox.IdleGrace);
        Assert.Empty(recent.Empty);
        Assert.Equal(0, VolumeInbox.RemoveEmpty(_share, recent));
        Assert.Equal(3, InboxDirectories().Count);
        // ...and go once it has passed.
        Assert.Equal(2, RemoveAllEmpty());
        Assert.Equal(new[] { $"volume-{waiting}" }, InboxDirectories());
        var survey = VolumeInbox.Survey(_share, 100, TimeSpan.Zero);
        Assert.Equal(new[] { (waiting, 3) }, survey.Waiting);
        Assert.Empty(survey.Empty);
        Assert.Empty(survey.Leftovers);
    }

    [Fact]
    public async Task Appenders_racing_the_drainer_and_the_removal_of_the_directory_lose_no_command_and_keep_their_order()
    {
        // Four appenders (each its own share object, as separate engines would be), a drainer, and a sweep removing
        // the directory whenever it finds it empty, all on one volume at once. OFD locks conflict between open file
        // descriptions, so threads of one process contend exactly as processes and NFS clients do.
        const int Appenders = 4;
        const int PerAppender = 150;
        var volume = Guid.NewGuid();
        var sent = Enumerable.Range(0, Appenders).Select(_ => Enumerable.Range(0, PerAppender).Select(_ => Guid.NewGuid()).ToList()).ToList();
        var ran = new ConcurrentQueue<Guid>();
        var removals = 0;
        using var done = new CancellationTokenSource();

        var appenders = sent.Select(ids => Task.Run(async () =>
        {
            var share = new Share(_share.Export, _share.LocalPath, null);
            foreach (var id in ids)
            {
                await Task.Delay(Random.Shared.Next(0, 3)); // now and then the drainer catches up and the directory goes
                Assert.True(await VolumeInbox.AppendAsync(share, volume, id, Encoding.UTF8.GetBytes(id.ToString()), Mode, CancellationToken.None));
            }
        })).ToList();
        var drainer = Task.Run(async () =>
        {
            while (!done.IsCancellationRequested)
            {
                Drain(volume, ran);
                await Task.Yield();
            }
        });
        var remover = Task.Run(async () =>
        {
            while (!done.IsCancellationRequested)
            {
                removals += RemoveEmpty();
                await Task.Yield();
            }
        });
        await Task.WhenAll(appenders);
        await done.CancelAsync();
        await Task.WhenAll(drainer, remover);
        Drain(volume, ran);

        Assert.Equal(Appenders * PerAppender, ran.Count);
        Assert.Equal(sent.SelectMany(s => s).Order(), ran.Order());
        var position = ran.Select((id, i) => (id, i)).ToDictionary(p => p.id, p => p.i);
        Assert.All(sent, ids => Assert.Equal(ids, ids.OrderBy(id => position[id])));
        Assert.True(removals > 5, $"the directory was removed only {removals} time(s): the race was not exercised");
        RemoveEmpty();
        Assert.Empty(InboxDirectories());
    }

    [Fact]
    public async Task An_appender_that_waited_on_the_lock_of_a_directory_removed_under_it_appends_into_a_new_one()
    {
        var volume = Guid.NewGuid();
        var dir = VolumeInbox.DirectoryOf(_share, volume);
        var appendLockPath = Path.Combine(dir, ".append.lock");
        using (var drain = VolumeInbox.TryTakeDrain(_share, volume))
        {
            Assert.NotNull(drain);
            var held = await InboxLock.AcquireAsync(appendLockPath, CancellationToken.None);
            Assert.NotNull(held);
            var command = Guid.NewGuid();
            var append = AppendAsync(volume, command);
            // The appender has the lock file open and waits for the lock (two descriptors of this process name it).
            var started = Stopwatch.GetTimestamp();
            while (OpenDescriptorsOf(appendLockPath) < 2)
            {
                Assert.True(Stopwatch.GetElapsedTime(started) < TimeSpan.FromSeconds(30), "the appender never opened the lock file");
                await Task.Delay(10);
            }
            // Now the drainer's removal: the rename away, then the locks go.
            Directory.Move(dir, Path.Combine(InboxRoot, $".removed-{volume:N}-test"));
            held.Dispose();

            Assert.True(await append);
            Assert.Equal(new[] { command }, VolumeInbox.List(_share, volume).Select(e => e.CommandId));
        }
    }

    private static int OpenDescriptorsOf(string path) =>
        Directory.EnumerateFileSystemEntries("/proc/self/fd").Count(fd =>
        {
            try
            {
                return new FileInfo(fd).LinkTarget == path;
            }
            catch (IOException)
            {
                return false; // closed as we looked
            }
        });

    [Fact]
    public async Task Empty_directories_of_a_format_1_share_are_removed_in_bounded_batches_and_volumes_with_work_or_a_drainer_are_kept()
    {
        const int Legacy = 250;
        const int Batch = 100;
        for (var i = 0; i < Legacy; i++)
        {
            LegacyEmptyDirectory(Guid.NewGuid());
        }
        var interrupted = LegacyEmptyDirectory(Guid.NewGuid());
        File.WriteAllBytes(Path.Combine(interrupted, ".000000000001-x.cmd.tmp-0123"), [1]); // an appender died mid-write
        var withWork = new[] { Guid.NewGuid(), Guid.NewGuid() };
        foreach (var v in withWork)
        {
            LegacyEmptyDirectory(v);
            Assert.True(await AppendAsync(v, Guid.NewGuid()));
        }
        var busy = Guid.NewGuid();
        LegacyEmptyDirectory(busy);
        using (var drainer = VolumeInbox.TryTakeDrain(_share, busy))
        {
            Assert.NotNull(drainer);
            var rounds = 0;
            InboxSurvey survey;
            while (true)
            {
                survey = VolumeInbox.Survey(_share, Batch, TimeSpan.Zero);
                Assert.Equal(withWork.Order(), survey.Waiting.Select(w => w.VolumeId).Order());
                Assert.True(survey.Empty.Count <= Batch);
                if (survey.Empty.SequenceEqual([busy]))
                {
                    break;
                }
                var removed = VolumeInbox.RemoveEmpty(_share, survey);
                Assert.InRange(removed, 1, Batch);
                Assert.True(++rounds <= 4, "the legacy directories are not going");
            }
            Assert.Equal(3, rounds); // 252 empty directories in batches of 100, the busy one kept each time
            Assert.Equal(0, VolumeInbox.RemoveEmpty(_share, survey));
            Assert.True(Directory.Exists(VolumeInbox.DirectoryOf(_share, busy)));
        }
        Assert.Equal(1, VolumeInbox.RemoveEmpty(_share, VolumeInbox.Survey(_share, Batch, TimeSpan.Zero)));
        Assert.Equal(withWork.Select(v => $"volume-{v}").Order(StringComparer.Ordinal), InboxDirectories());
        Assert.All(withWork, v => Assert.Single(VolumeInbox.List(_share, v)));
    }

    [Fact]
    public async Task A_drainer_killed_mid_drain_leaves_its_volume_for_the_survey_and_the_next_drainer_finishes_it()
    {
        var volume = Guid.NewGuid();
        var commands = Enumerable.Range(0, 3).Select(_ => Guid.NewGuid()).ToList();
        foreach (var c in commands)
        {
            Assert.True(await AppendAsync(volume, c));
        }
        VolumeInbox.Remove(VolumeInbox.List(_share, volume)[0]); // it ran the first command

        // Another process holds the drain lock (a POSIX record lock, which conflicts with OFD locks) and is killed.
        var lockFile = Path.Combine(VolumeInbox.DirectoryOf(_share, volume), ".drain.lock");
        using var holder = Process.Start(new ProcessStartInfo("python3",
            ["-c", "import fcntl,sys,time\nf=open(sys.argv[1],'a+')\nfcntl.lockf(f,fcntl.LOCK_EX)\nprint('LOCKED',flush=True)\ntime.sleep(600)", lockFile])
        { RedirectStandardOutput = true })!;
        Assert.Equal("LOCKED", await holder.StandardOutput.ReadLineAsync());
        Assert.Null(VolumeInbox.TryTakeDrain(_share, volume));
        var survey = VolumeInbox.Survey(_share, 10, TimeSpan.Zero);
        Assert.Equal(new[] { (volume, 2) }, survey.Waiting);
        holder.Kill(); // SIGKILL: no cleanup runs; the kernel drops the lock
        await holder.WaitForExitAsync();

        var ran = new ConcurrentQueue<Guid>();
        Assert.True(Drain(volume, ran));
        Assert.Equal(commands.Skip(1), ran);
        Assert.Equal(1, RemoveAllEmpty());
        Assert.Empty(InboxDirectories());
    }

    [Fact]
    public void A_removal_interrupted_between_its_rename_and_its_delete_is_finished_by_the_next_survey()
    {
        var gone = Path.Combine(InboxRoot, $".removed-{Guid.NewGuid():N}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(gone);
        File.WriteAllBytes(Path.Combine(gone, ".append.lock"), []);
        File.WriteAllBytes(Path.Combine(gone, ".drain.lock"), []);

        var survey = VolumeInbox.Survey(_share, 10, TimeSpan.Zero);
        Assert.Empty(survey.Waiting);
        Assert.Equal(new[] { gone }, survey.Leftovers);
        VolumeInbox.RemoveEmpty(_share, survey);
        Assert.Empty(InboxDirectories());
    }
}
