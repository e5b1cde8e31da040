using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Storage.QemuImg;
using NfsVolumeWorker.Storage.Shares;
using NfsVolumeWorker.Storage.Tests.Support;
using static NfsVolumeWorker.Storage.Tests.Support.EngineTestBed;
using NfsVolumeWorker.Testing;

namespace NfsVolumeWorker.Storage.Tests.Engine;

/// <summary>
/// Checks that a request is refused with a given code and touched nothing: every file of the share (names,
/// sizes, mtimes, SHA-256 of the contents, symlink targets) is the same afterwards, no journal entry was
/// written, and no qemu-img process was started (the engine runs a spy in place of qemu-img, which
/// records that it was called; a refusal must come from reading headers, before any tool could follow a
/// hostile backing reference).
/// </summary>
public sealed class RefusalBed : IDisposable
{
    private readonly TempDirectory _spyDir = new("nfsvol-spy-");

    public RefusalBed(EngineTestBed bed)
    {
        Bed = bed;
        SpyLog = _spyDir.File("qemu-img-calls");
        var spy = _spyDir.File("qemu-img");
        ShellScript.Write(spy, $"echo \"$@\" >> '{SpyLog}'\necho 'spy: qemu-img must not run here' >&2\nexit 1\n");
        var qemu = new QemuImgRunner(Options.Create(new QemuImgOptions { Executable = spy, PrlimitExecutable = spy }), NullLogger<QemuImgRunner>.Instance);
        SpyEngine = new VolumeEngine(new ShareMap([bed.Share]), qemu, Options.Create(new VolumeEngineOptions { LockTimeout = TimeSpan.FromSeconds(5) }),
            NullLogger<VolumeEngine>.Instance);
    }

    public EngineTestBed Bed { get; }

    /// <summary>An engine on the bed's share whose qemu-img is the spy.</summary>
    public VolumeEngine SpyEngine { get; }

    public string SpyLog { get; }

    /// <summary>Runs <paramref name="operation"/> against the spy engine and asserts it is refused with
    /// <paramref name="code"/>, leaving the share exactly as it was.</summary>
    public async Task<StorageException> AssertRefusedAsync(StorageErrorCode code, Func<VolumeEngine, Task> operation, string what)
    {
        var before = ShareState();
        var e = await Assert.ThrowsAsync<StorageException>(() => operation(SpyEngine));
        Assert.True(code == e.Code, $"{what}: expected {code}, got {e.Code}: {e.Message}");
        Assert.False(string.IsNullOrWhiteSpace(e.Message));
        Assert.Equal(before, ShareState());
        Assert.False(File.Exists(SpyLog), $"{what}: qemu-img was started: {(File.Exists(SpyLog) ? File.ReadAllText(SpyLog) : "")}");
        return e;
    }

    public Task<StorageException> AssertRefusedAsync(StorageErrorCode code, Action<VolumeEngine> operation, string what) =>
        AssertRefusedAsync(code, engine =>
        {
            operation(engine);
            return Task.CompletedTask;
        }, what);

    /// <summary>The share's files and the journal; lock files, the share marker and the format record are left out (taking
    /// a lock creates one, the first operation on a share writes the marker and the format, and none holds data).</summary>
    public List<string> ShareState() =>
        CrashAssertions.Snapshot(Bed.Share.LocalPath).Where(l => !l.StartsWith(Path.Combine(Bed.Share.WorkerDirectory, "locks"), StringComparison.Ordinal)
            && !l.StartsWith(Path.Combine(Bed.Share.WorkerDirectory, ShareMarker.FileName), StringComparison.Ordinal)
            && !l.StartsWith(Storage.Inbox.CommandStoreFormat.PathOf(Bed.Share), StringComparison.Ordinal)
            && !l.StartsWith(Bed.Share.WorkerDirectory + "/ ", StringComparison.Ordinal)).ToList();

    public static Func<VolumeEngine, Task>[] EveryOperationOn(Guid volume, Guid snapshot, Guid newVolume) =>
    [
        e => e.CreateSnapshotAsync(new CreateSnapshotRequest(Export, volume, Guid.NewGuid())),
        e => e.DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, volume, snapshot)),
        e => e.CreateVolumeFromSnapshotAsync(new CreateVolumeFromSnapshotRequest(Export, volume, snapshot, newVolume)),
        e => e.CloneVolumeAsync(new CloneVolumeRequest(Export, volume, newVolume)),
        e => e.RevertToSnapshotAsync(new RevertToSnapshotRequest(Export, volume, snapshot)),
        e => e.ExtendVolumeAsync(new ExtendVolumeRequest(Export, volume, 128 * MiB)),
        e => Task.FromResult(e.GetConnectionInfo(new ConnectionInfoRequest(Export, volume))),
    ];

    public static readonly string[] OperationNames = ["create snapshot", "delete snapshot", "create volume from snapshot", "clone", "revert", "extend", "connection info"];

    public void Dispose() => _spyDir.Dispose();
}
