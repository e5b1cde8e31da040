using System.Diagnostics;
using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Storage.Inbox;
using NfsVolumeWorker.Storage.QemuImg;
using NfsVolumeWorker.Storage.Shares;
using static NfsVolumeWorker.Storage.Tests.Engine.CrashAssertions;

namespace NfsVolumeWorker.Storage.Tests.Inbox;

/// <summary>The command store's format on the share: a format-1 share (nothing recorded) is read and finished by
/// this worker, which records format 2; a share with a newer format, or a format file that is not one, is refused
/// whole and nothing on it is touched.</summary>
public sealed class CommandStoreFormatSpecs : IDisposable
{
    private const UnixFileMode Mode = UnixFileMode.UserRead | UnixFileMode.UserWrite;

    private readonly TempDirectory _dir = new("nfsvol-format-");

    public void Dispose() => _dir.Dispose();

    private Share NewShare(string name)
    {
        var path = Directory.CreateDirectory(Path.Combine(_dir.Path, name)).FullName;
        return new Share(path, path, null);
    }

    /// <summary>An inbox entry exactly as a format-1 worker wrote it.</summary>
    private static string Format1Entry(Share share, Guid volumeId, long sequence, Guid commandId)
    {
        var dir = Path.Combine(share.WorkerDirectory, "inbox", $"volume-{volumeId}");
        Directory.CreateDirectory(dir);
        File.WriteAllBytes(Path.Combine(dir, ".append.lock"), []);
        var path = Path.Combine(dir, $"{sequence:D12}-{commandId:N}.cmd");
        File.WriteAllText(path, commandId.ToString());
        return path;
    }

    [Fact]
    public async Task A_format_1_share_is_drained_by_this_worker_which_records_format_2()
    {
        var share = NewShare("legacy");
        var volume = Guid.NewGuid();
        var commands = new[] { Guid.NewGuid(), Guid.NewGuid() };
        Format1Entry(share, volume, 1, commands[0]);
        Format1Entry(share, volume, 2, commands[1]);
        Directory.CreateDirectory(Path.Combine(share.WorkerDirectory, "inbox", $"volume-{Guid.NewGuid()}")); // one that ran
        Assert.Equal(CommandStoreFormat.Unrecorded, CommandStoreFormat.Read(share));

        ShareMarker.EnsureAvailable(share);
        Assert.Equal(CommandStoreFormat.Current, CommandStoreFormat.Read(share));
        Assert.Equal("2\n", await File.ReadAllTextAsync(CommandStoreFormat.PathOf(share)));

        var survey = VolumeInbox.Survey(share, 10, TimeSpan.Zero);
        Assert.Equal(new[] { (volume, 2) }, survey.Waiting);
        Assert.Single(survey.Empty);
        Assert.Equal(1, VolumeInbox.RemoveEmpty(share, survey));
        using (var drain = VolumeInbox.TryTakeDrain(share, volume))
        {
            Assert.NotNull(drain);
            var entries = VolumeInbox.List(share, volume);
            Assert.Equal(commands, entries.Select(e => e.CommandId));
            Assert.Equal(commands[0].ToString(), Encoding.UTF8.GetString(entries[0].ReadPayload()));
            entries.ForEach(VolumeInbox.Remove);
        }
        Assert.Equal(1, VolumeInbox.RemoveEmpty(share, VolumeInbox.Survey(share, 10, TimeSpan.Zero)));
        Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(share.WorkerDirectory, "inbox")));
    }

    [Theory]
    [InlineData("3\n", "format 3")]
    [InlineData("999", "format 999")]
    [InlineData("two\n", "does not hold a command store format version")]
    [InlineData("", "does not hold a command store format version")]
    public async Task A_share_with_a_newer_or_unreadable_format_is_refused_whole_and_nothing_on_it_is_touched(string content, string said)
    {
        var share = NewShare("newer");
        var volume = Guid.NewGuid();
        Directory.CreateDirectory(share.WorkerDirectory);
        await File.WriteAllTextAsync(CommandStoreFormat.PathOf(share), content);
        Format1Entry(share, volume, 1, Guid.NewGuid());
        var volumeFile = Path.Combine(share.LocalPath, $"volume-{volume}");
        await File.WriteAllBytesAsync(volumeFile, new byte[4096]);
        var before = Snapshot(share.LocalPath);

        void Refused(Action action)
        {
            var e = Assert.Throws<StorageException>(action);
            Assert.Equal(StorageErrorCode.ShareUnavailable, e.Code);
            Assert.Contains(said, e.Message, StringComparison.Ordinal);
        }
        Refused(() => ShareMarker.EnsureAvailable(share));
        Assert.False(ShareMarker.IsAvailable(share, out var problem));
        Assert.Contains(said, problem, StringComparison.Ordinal);
        Refused(() => VolumeInbox.Survey(share, 10, TimeSpan.Zero));
        Refused(() => VolumeInbox.TryTakeDrain(share, volume));
        Refused(() => VolumeInbox.AppendAsync(share, volume, Guid.NewGuid(), new byte[] { 1 }, Mode, CancellationToken.None).GetAwaiter().GetResult());
        var engine = new VolumeEngine(new ShareMap([share]), new QemuImgRunner(Options.Create(new QemuImgOptions()), NullLogger<QemuImgRunner>.Instance),
            Options.Create(new VolumeEngineOptions()), NullLogger<VolumeEngine>.Instance);
        var refused = await Assert.ThrowsAsync<StorageException>(() => engine.CreateSnapshotAsync(new CreateSnapshotRequest(share.Export, volume, Guid.NewGuid())));
        Assert.Equal(StorageErrorCode.ShareUnavailable, refused.Code);

        Assert.Equal(before, Snapshot(share.LocalPath));
    }

    [Fact]
    public async Task A_worker_already_serving_a_share_stops_touching_it_once_a_newer_worker_records_a_newer_format()
    {
        var share = NewShare("upgraded");
        ShareMarker.EnsureAvailable(share);
        await File.WriteAllTextAsync(CommandStoreFormat.PathOf(share), $"{CommandStoreFormat.Current + 1}\n");

        var started = Stopwatch.GetTimestamp();
        while (ShareMarker.IsAvailable(share, out _))
        {
            Assert.True(Stopwatch.GetElapsedTime(started) < CommandStoreFormat.RecheckInterval * 3, "the newer format was not noticed");
            await Task.Delay(100);
        }
        Assert.False(ShareMarker.IsAvailable(share, out var problem));
        Assert.Contains($"format {CommandStoreFormat.Current + 1}", problem, StringComparison.Ordinal);
        Assert.Equal($"{CommandStoreFormat.Current + 1}\n", await File.ReadAllTextAsync(CommandStoreFormat.PathOf(share)));
    }
}
