using System.Runtime.InteropServices;
using NfsVolumeWorker.Storage.Inbox;
using NfsVolumeWorker.Storage.Shares;
using NfsVolumeWorker.Storage.Tests.Support;

namespace NfsVolumeWorker.Storage.Tests.Inbox;

/// <summary>The published mark is a mode bit of the outcome record (no new file, no sync); the <c>.published</c>
/// files older workers leave are still honoured and pruned.</summary>
public sealed class PublishedMarkSpecs : IDisposable
{
    private const UnixFileMode Mode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead;
    private readonly TempDirectory _dir = new();
    private readonly Share _share;

    public PublishedMarkSpecs()
    {
        _share = new Share(_dir.Path, _dir.Path, null);
        ShareMarker.EnsureAvailable(_share);
    }

    public void Dispose() => _dir.Dispose();

    private string Outcomes => Path.GetDirectoryName(CommandOutcomes.PathOf(_share, Guid.Empty))!;

    [Fact]
    public void Marking_sets_the_records_sticky_bit_and_makes_no_file_and_no_sync_and_leaves_its_bytes()
    {
        var id = Guid.NewGuid();
        CommandOutcomes.Write(_share, id, "{\"a\":1}"u8, Mode);
        var before = Directory.GetFiles(Outcomes).Order().ToArray();
        Assert.False(CommandOutcomes.IsMarkedPublished(_share, id));

        var syncs = SyncCount.Of(() => Assert.True(CommandOutcomes.MarkPublished(_share, id, Mode)));

        Assert.Empty(syncs);
        Assert.True(CommandOutcomes.IsMarkedPublished(_share, id));
        Assert.Equal(Mode | UnixFileMode.StickyBit, File.GetUnixFileMode(CommandOutcomes.PathOf(_share, id)));
        Assert.Equal(before, Directory.GetFiles(Outcomes).Order().ToArray());
        Assert.False(File.Exists(CommandOutcomes.PublishedMarkOf(_share, id)));
        Assert.Equal("{\"a\":1}", File.ReadAllText(CommandOutcomes.PathOf(_share, id))); // what an older worker reads
        Assert.True(CommandOutcomes.MarkPublished(_share, id, Mode)); // twice: still marked, nothing else
        Assert.Equal(Mode | UnixFileMode.StickyBit, File.GetUnixFileMode(CommandOutcomes.PathOf(_share, id)));
    }

    [Fact]
    public void An_older_workers_published_file_still_marks_its_record()
    {
        var (marked, unmarked) = (Guid.NewGuid(), Guid.NewGuid());
        CommandOutcomes.Write(_share, marked, "{}"u8, Mode);
        CommandOutcomes.Write(_share, unmarked, "{}"u8, Mode);
        File.WriteAllBytes(Path.Combine(Outcomes, $"{marked:N}.published"), []); // what a worker of format 2 before this left

        Assert.True(CommandOutcomes.IsMarkedPublished(_share, marked));
        Assert.False(CommandOutcomes.IsMarkedPublished(_share, unmarked));
        Assert.False(CommandOutcomes.IsMarkedPublished(_share, Guid.NewGuid())); // no record at all
    }

    [Fact]
    public void A_record_this_user_may_not_chmod_is_marked_with_a_published_file_as_older_workers_do()
    {
        var id = Guid.NewGuid();
        CommandOutcomes.Write(_share, id, "{}"u8, Mode);
        var record = CommandOutcomes.PathOf(_share, id);
        File.SetUnixFileMode(record, Mode | UnixFileMode.OtherWrite);
        Chown(record, 65534); // another instance's user (nobody) owns it

        // The tests run as root, who may chmod any file: the mark runs on a thread without CAP_FOWNER, as another user would.
        var marked = WithoutFileOwnerCapability(() => CommandOutcomes.MarkPublished(_share, id, Mode));

        Assert.False(marked);
        Assert.True(File.Exists(CommandOutcomes.PublishedMarkOf(_share, id)));
        Assert.Equal(Mode | UnixFileMode.OtherWrite, File.GetUnixFileMode(record)); // untouched
        Assert.True(CommandOutcomes.IsMarkedPublished(_share, id));
    }

    [Fact]
    public void Marking_a_record_that_was_pruned_meanwhile_makes_nothing()
    {
        var id = Guid.NewGuid();
        CommandOutcomes.Write(_share, Guid.NewGuid(), "{}"u8, Mode);

        Assert.True(CommandOutcomes.MarkPublished(_share, id, Mode));

        Assert.Single(Directory.GetFiles(Outcomes));
    }

    [Fact]
    public void Prune_removes_old_marked_records_and_old_published_files_of_older_workers_and_keeps_recent_ones()
    {
        var (old, oldLegacy, recent, recentLegacy) = (Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid());
        foreach (var id in new[] { old, oldLegacy, recent, recentLegacy })
        {
            CommandOutcomes.Write(_share, id, "{}"u8, Mode);
        }
        CommandOutcomes.MarkPublished(_share, old, Mode);
        CommandOutcomes.MarkPublished(_share, recent, Mode);
        File.WriteAllBytes(CommandOutcomes.PublishedMarkOf(_share, oldLegacy), []);
        File.WriteAllBytes(CommandOutcomes.PublishedMarkOf(_share, recentLegacy), []);
        foreach (var file in Directory.EnumerateFiles(Outcomes).Where(f => f.Contains($"{old:N}", StringComparison.Ordinal) || f.Contains($"{oldLegacy:N}", StringComparison.Ordinal)))
        {
            File.SetLastWriteTimeUtc(file, DateTime.UtcNow.AddDays(-8));
        }

        Assert.Equal(2, CommandOutcomes.Prune(_share, TimeSpan.FromDays(7)));

        Assert.Equal(
            new[] { $"{recent:N}.json", $"{recentLegacy:N}.json", $"{recentLegacy:N}.published" }.Order(),
            Directory.GetFiles(Outcomes).Select(f => Path.GetFileName(f)).Order());
        Assert.True(CommandOutcomes.IsMarkedPublished(_share, recent));
        Assert.True(CommandOutcomes.IsMarkedPublished(_share, recentLegacy));
        Assert.False(CommandOutcomes.IsMarkedPublished(_share, old));
        Assert.False(CommandOutcomes.IsMarkedPublished(_share, oldLegacy));
    }

    private static void Chown(string path, int uid)
    {
        if (Native.chown(path, uid, -1) != 0)
        {
            throw new IOException($"chown {path}: errno {Marshal.GetLastPInvokeError()}");
        }
    }

    /// <summary>Runs <paramref name="action"/> on a thread of its own whose effective capabilities lack CAP_FOWNER
    /// (capabilities are per thread on Linux), so chmod of a file this user does not own fails as for any other user.</summary>
    private static T WithoutFileOwnerCapability<T>(Func<T> action)
    {
        const int CapFowner = 3;
        T result = default!;
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            try
            {
                var header = new Native.CapHeader { Version = 0x20080522 };
                var data = new Native.CapData[2];
                if (Native.capget(ref header, data) != 0)
                {
                    throw new IOException($"capget: errno {Marshal.GetLastPInvokeError()}");
                }
                Assert.True((data[0].Effective & (1u << CapFowner)) != 0, "the tests run as root with CAP_FOWNER");
                data[0].Effective &= ~(1u << CapFowner);
                if (Native.capset(ref header, data) != 0)
                {
                    throw new IOException($"capset: errno {Marshal.GetLastPInvokeError()}");
                }
                result = action();
            }
            catch (Exception e)
            {
                failure = e;
            }
        });
        thread.Start();
        thread.Join();
        return failure is null ? result : throw new InvalidOperationException("on the thread without CAP_FOWNER", failure);
    }

#pragma warning disable SYSLIB1054, CA5392, SA1300, IDE1006 // plain P/Invoke of three libc calls, for this test only
    private static class Native
    {
        [StructLayout(LayoutKind.Sequential)]
        public struct CapHeader
        {
            public uint Version;
            public int Pid;
        }

        [StructLayout(LayoutKind.Sequential)]
        public struct CapData
        {
            public uint Effective;
            public uint Permitted;
            public uint Inheritable;
        }

        [DllImport("libc", SetLastError = true)]
        public static extern int capget(ref CapHeader header, [In, Out] CapData[] data);

        [DllImport("libc", SetLastError = true)]
        public static extern int capset(ref CapHeader header, [In] CapData[] data);

        [DllImport("libc", SetLastError = true, CharSet = CharSet.Ansi)]
        public static extern int chown(string path, int owner, int group);
    }
#pragma warning restore SYSLIB1054, CA5392, SA1300, IDE1006
}
