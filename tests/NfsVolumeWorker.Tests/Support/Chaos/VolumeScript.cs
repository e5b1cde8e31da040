using System.Collections.Concurrent;
using System.Globalization;
using NfsVolumeWorker.Contracts;

namespace NfsVolumeWorker.Tests.Support.Chaos;

/// <summary>What a chaos run has sent and seen, shared by its lanes.</summary>
internal sealed class ChaosLedger
{
    private readonly ConcurrentQueue<VolumeCommand> _sent = new();
    private readonly ConcurrentDictionary<Guid, ConcurrentQueue<VolumeCommand>> _byVolume = new();
    private int _writes;
    private int _verifications;
    private int _expectedFailures;

    public IReadOnlyList<VolumeCommand> Sent => [.. _sent];

    /// <summary>Per volume id (the command's VolumeId, its partition key), the commands in the order sent.</summary>
    public IEnumerable<IReadOnlyList<VolumeCommand>> Scripts => _byVolume.Values.Select(q => (IReadOnlyList<VolumeCommand>)[.. q]);

    public int Writes => _writes;

    public int Verifications => _verifications;

    public int ExpectedFailures => _expectedFailures;

    /// <summary>Volumes (and clones) that stay on the share, with their model, for the final check.</summary>
    public ConcurrentBag<VolumeModel> Kept { get; } = [];

    /// <summary>Volumes (and clones) deleted during the run: none of their files may remain.</summary>
    public ConcurrentBag<Guid> Deleted { get; } = [];

    public void Record(VolumeCommand c)
    {
        _sent.Enqueue(c);
        _byVolume.GetOrAdd(c.VolumeId, _ => new ConcurrentQueue<VolumeCommand>()).Enqueue(c);
    }

    public void Wrote() => Interlocked.Increment(ref _writes);

    public void Verified() => Interlocked.Increment(ref _verifications);

    public void FailedAsExpected() => Interlocked.Increment(ref _expectedFailures);
}

/// <summary>
/// One lane of the chaos load: volume after volume, a random script of commands (seeded), each sent only after
/// the previous command of that volume has its terminal event, with guest writes into the active image in
/// between (the test knows no command of the volume is in flight then). The model says what every image must
/// hold; at the end of each script the volume, its snapshots and its clones are read back against it while the
/// volume is idle, then deleted (all but the lane's last volume, which the final check reads again).
/// </summary>
internal sealed class VolumeScript(int lane, Random random, string share, CommandBus producer, EventCollector events, ChaosLedger ledger, TimeSpan commandTimeout)
{
    private const long InitialSize = 8 * ImageData.Region; // 2 MiB
    private const long MaxSize = 16 * ImageData.Region; // 4 MiB
    private const int MaxSnapshots = 4;
    private const int MaxClones = 2;

    /// <summary>A fresh id from the lane's seeded random (a version-4 UUID), so a seed also repeats the ids and with them the partitions.</summary>
    private Guid NewId()
    {
        Span<byte> b = stackalloc byte[16];
        random.NextBytes(b);
        b[7] = (byte)((b[7] & 0x0F) | 0x40);
        b[8] = (byte)((b[8] & 0x3F) | 0x80);
        return new Guid(b);
    }

    /// <summary>Runs one volume's script to its end. With <paramref name="keep"/> false the volume and its
    /// clones are deleted after they have been verified.</summary>
    public async Task RunAsync(Func<bool> keep, CancellationToken abort)
    {
        var volume = new VolumeModel(NewId(), ImageData.Zeros(InitialSize));
        var clones = new List<VolumeModel>();
        await RunAsync(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = volume.Id, SizeBytes = InitialSize }, nameof(VolumeCreated));
        var steps = random.Next(8, 17);
        for (var step = 0; step < steps && !abort.IsCancellationRequested; step++)
        {
            var snapshots = volume.Snapshots.Count;
            switch (random.Next(100))
            {
                case < 35:
                    await WriteAsync(volume);
                    break;
                case < 52 when snapshots < MaxSnapshots:
                {
                    var s = NewId();
                    await RunAsync(new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = volume.Id, SnapshotId = s }, nameof(SnapshotCreated));
                    volume.Snapshots.Add((s, volume.Active));
                    break;
                }
                case < 67 when snapshots > 0:
                {
                    // A merge (qemu-img commit): the other snapshots and the active data stay as they are.
                    var s = volume.Snapshots[random.Next(snapshots)];
                    await RunAsync(new DeleteSnapshot { CommandId = Guid.NewGuid(), VolumeId = volume.Id, SnapshotId = s.Id }, nameof(SnapshotDeleted));
                    volume.Snapshots.Remove(s);
                    break;
                }
                case < 74 when clones.Count < MaxClones:
                {
                    var clone = new VolumeModel(NewId(), volume.Active);
                    await RunAsync(new CloneVolume { CommandId = Guid.NewGuid(), VolumeId = volume.Id, NewVolumeId = clone.Id }, nameof(VolumeCloned));
                    clones.Add(clone);
                    break;
                }
                case < 81 when clones.Count < MaxClones && snapshots > 0:
                {
                    var s = volume.Snapshots[random.Next(snapshots)];
                    long? size = random.Next(3) == 0 ? s.Data.SizeBytes + (2 * ImageData.Region) : null;
                    var clone = new VolumeModel(NewId(), size is { } grown ? s.Data.Resized(grown) : s.Data);
                    await RunAsync(new CreateVolumeFromSnapshot { CommandId = Guid.NewGuid(), VolumeId = volume.Id, SnapshotId = s.Id, NewVolumeId = clone.Id, NewSizeBytes = size },
                        nameof(VolumeCloned));
                    clones.Add(clone);
                    break;
                }
                case < 87 when snapshots > 0:
                {
                    var newest = volume.Snapshots[^1];
                    await RunAsync(new RevertToSnapshot { CommandId = Guid.NewGuid(), VolumeId = volume.Id, SnapshotId = newest.Id }, nameof(VolumeReverted));
                    volume.Active = newest.Data.Resized(volume.Active.SizeBytes);
                    break;
                }
                case < 90 when snapshots > 1:
                {
                    // Expected to fail: only the newest snapshot can be reverted to; nothing changes.
                    var older = volume.Snapshots[random.Next(snapshots - 1)];
                    await RunAsync(new RevertToSnapshot { CommandId = Guid.NewGuid(), VolumeId = volume.Id, SnapshotId = older.Id }, nameof(CommandFailed), "SnapshotNotNewest");
                    ledger.FailedAsExpected();
                    break;
                }
                case < 100 when volume.Active.SizeBytes < MaxSize:
                {
                    var size = volume.Active.SizeBytes + (2 * ImageData.Region);
                    await RunAsync(new ExtendVolume { CommandId = Guid.NewGuid(), VolumeId = volume.Id, NewSizeBytes = size }, nameof(VolumeExtended));
                    volume.Active = volume.Active.Resized(size);
                    break;
                }
                default:
                    await WriteAsync(volume);
                    break;
            }
        }

        var problems = await ModelCheck.VerifyAsync(share, volume) + string.Concat(await Task.WhenAll(clones.Select(c => ModelCheck.VerifyAsync(share, c))));
        ledger.Verified();
        Assert.True(problems.Length == 0, $"lane {lane}, volume {volume.Id}: the share does not hold what the model says:{Environment.NewLine}{problems}");

        if (keep() || abort.IsCancellationRequested)
        {
            ledger.Kept.Add(volume);
            foreach (var c in clones)
            {
                ledger.Kept.Add(c);
            }
            return;
        }
        foreach (var c in clones)
        {
            await RunAsync(new DeleteVolume { CommandId = Guid.NewGuid(), VolumeId = c.Id }, nameof(VolumeDeleted));
            ledger.Deleted.Add(c.Id);
        }
        await RunAsync(new DeleteVolume { CommandId = Guid.NewGuid(), VolumeId = volume.Id }, nameof(VolumeDeleted));
        ledger.Deleted.Add(volume.Id);
    }

    /// <summary>A guest's writes into the active image: 1 to 3 regions, each a new pattern.</summary>
    private async Task WriteAsync(VolumeModel volume)
    {
        var infoPath = Path.Combine(share, $"volume-{volume.Id}.info");
        var active = File.Exists(infoPath) ? ActiveOf(infoPath) : $"volume-{volume.Id}";
        var path = Path.Combine(share, active);
        var args = new List<string> { "-f", Tools.FormatOf(path) };
        for (var n = random.Next(1, 4); n > 0; n--)
        {
            var region = random.Next(volume.Active.Regions.Length);
            var pattern = (byte)random.Next(1, 256);
            args.AddRange(["-c", $"write -P 0x{pattern:x2} {region * ImageData.Region} {ImageData.Region}"]);
            volume.Active = volume.Active.With(region, pattern);
        }
        args.Add(path);
        await Tools.MustAsync("qemu-io", [.. args]);
        ledger.Wrote();
    }

    private static string ActiveOf(string infoPath)
    {
        using var info = System.Text.Json.JsonDocument.Parse(File.ReadAllBytes(infoPath));
        return info.RootElement.GetProperty("active").GetString()!;
    }

    private Task RunAsync<T>(T command, string expected, string? errorCode = null)
        where T : VolumeCommand => RunAsync(command, () => producer.PublishAsync(command), expected, errorCode);

    private async Task RunAsync(VolumeCommand command, Func<Task> publish, string expected, string? errorCode)
    {
        ledger.Record(command);
        await publish();
        var e = await events.WaitForAsync(command.CommandId, commandTimeout);
        var ok = e.Type == expected && (errorCode is null || e.Text("errorCode") == errorCode);
        Assert.True(ok, string.Create(CultureInfo.InvariantCulture,
            $"lane {lane}: {command.GetType().Name} {command.CommandId} of volume {command.VolumeId}: expected {expected}{(errorCode is null ? "" : " " + errorCode)}, got {e}"));
    }
}
