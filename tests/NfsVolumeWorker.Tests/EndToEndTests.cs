using System.Text.Json;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Tests.Support;

namespace NfsVolumeWorker.Tests;

/// <summary>Every command type through the real broker and the in-process worker: the right event and the
/// right files, with guest data checked by qemu-io and qemu-img compare.</summary>
public sealed class EndToEndTests(ITestOutputHelper output)
{
    private const long MiB = WorkerTestBed.MiB;

    [Fact]
    public async Task Every_command_yields_its_event_and_its_files()
    {
        await using var bed = await WorkerTestBed.StartAsync(output, "e2e");
        var vol = Guid.NewGuid();
        var baseFile = bed.PathOf($"volume-{vol}");

        // CreateVolume: a raw, sparse 16 MiB file.
        var created = await bed.RunOkAsync(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = vol, SizeBytes = 16 * MiB }, nameof(VolumeCreated));
        Assert.Equal($"volume-{vol}", created.Text("activeFile"));
        Assert.False(created.AlreadyDone);
        Assert.Equal(16 * MiB, new FileInfo(baseFile).Length);
        Assert.Equal("raw", Tools.FormatOf(baseFile));
        await Tools.WriteAsync(baseFile, "raw", 0x11, 0, 4 * MiB);

        // CreateSnapshot: an overlay on the base, recorded in the .info file.
        var s1 = Guid.NewGuid();
        var snapped = await bed.RunOkAsync(new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = vol, SnapshotId = s1 }, nameof(SnapshotCreated));
        var overlay1 = $"volume-{vol}.{s1}";
        Assert.Equal(overlay1, snapped.Text("activeFile"));
        Assert.Equal(s1.ToString(), snapped.Text("snapshotId"));
        Assert.True(Tools.IsQcow2(bed.PathOf(overlay1)));
        var info = InfoOf(bed, vol);
        Assert.Equal(overlay1, info.GetProperty("active").GetString());
        Assert.Equal(overlay1, info.GetProperty(s1.ToString()).GetString());
        await Tools.WriteAsync(bed.PathOf(overlay1), "qcow2", 0x22, 4 * MiB, 4 * MiB);

        // CreateVolumeFromSnapshot: a full copy of the snapshot's data (the base at the time), not of later writes.
        var fromSnap = Guid.NewGuid();
        var cloned = await bed.RunOkAsync(new CreateVolumeFromSnapshot { CommandId = Guid.NewGuid(), VolumeId = vol, SnapshotId = s1, NewVolumeId = fromSnap }, nameof(VolumeCloned));
        Assert.Equal(fromSnap.ToString(), cloned.Text("newVolumeId"));
        Assert.Equal(s1.ToString(), cloned.Text("snapshotId"));
        Assert.Equal(0, await Tools.CompareAsync(bed.PathOf($"volume-{fromSnap}"), "raw", baseFile, "raw"));
        Assert.True(await Tools.ReadsAsync(bed.PathOf($"volume-{fromSnap}"), "raw", 0, 4 * MiB, 4 * MiB));

        // CloneVolume: a full copy of the volume's current data (through a temporary snapshot, removed after).
        var clone = Guid.NewGuid();
        var clonedNow = await bed.RunOkAsync(new CloneVolume { CommandId = Guid.NewGuid(), VolumeId = vol, NewVolumeId = clone }, nameof(VolumeCloned));
        Assert.Equal(clone.ToString(), clonedNow.Text("newVolumeId"));
        Assert.Equal(0, await Tools.CompareAsync(bed.PathOf($"volume-{clone}"), "raw", bed.PathOf(overlay1), "qcow2"));
        Assert.True(await Tools.ReadsAsync(bed.PathOf($"volume-{clone}"), "raw", 0x22, 4 * MiB, 4 * MiB));
        Assert.Equal([$"volume-{vol}", overlay1, $"volume-{vol}.info"], VolumeFiles(bed, vol));
        Assert.Equal(overlay1, InfoOf(bed, vol).GetProperty("active").GetString());

        // ExtendVolume: the active image grows; the snapshot still reads what it held.
        var extended = await bed.RunOkAsync(new ExtendVolume { CommandId = Guid.NewGuid(), VolumeId = vol, NewSizeBytes = 32 * MiB }, nameof(VolumeExtended));
        Assert.Equal(32 * MiB, extended.Message.GetProperty("newSizeBytes").GetInt64());
        Assert.Contains("\"virtual-size\": 33554432", await Tools.MustAsync("qemu-img", "info", "--output=json", "-U", "-f", "qcow2", bed.PathOf(overlay1)), StringComparison.Ordinal);
        Assert.Equal(16 * MiB, new FileInfo(baseFile).Length);

        // RevertToSnapshot: the writes since s1 are gone; the volume reads the base's data again.
        var reverted = await bed.RunOkAsync(new RevertToSnapshot { CommandId = Guid.NewGuid(), VolumeId = vol, SnapshotId = s1 }, nameof(VolumeReverted));
        Assert.Equal(s1.ToString(), reverted.Text("snapshotId"));
        var activeAfterRevert = InfoOf(bed, vol).GetProperty("active").GetString()!;
        Assert.True(await Tools.ReadsAsync(bed.PathOf(activeAfterRevert), "qcow2", 0, 4 * MiB, 4 * MiB));
        Assert.True(await Tools.ReadsAsync(bed.PathOf(activeAfterRevert), "qcow2", 0x11, 0, 4 * MiB));

        // DeleteSnapshot: the chain collapses into the base; the data stays.
        await Tools.WriteAsync(bed.PathOf(activeAfterRevert), "qcow2", 0x33, 8 * MiB, 1 * MiB);
        var deletedSnap = await bed.RunOkAsync(new DeleteSnapshot { CommandId = Guid.NewGuid(), VolumeId = vol, SnapshotId = s1 }, nameof(SnapshotDeleted));
        Assert.Equal(s1.ToString(), deletedSnap.Text("snapshotId"));
        var active = InfoOf(bed, vol).GetProperty("active").GetString()!;
        Assert.False(InfoOf(bed, vol).TryGetProperty(s1.ToString(), out _));
        Assert.True(await Tools.ReadsAsync(bed.PathOf(active), Tools.FormatOf(bed.PathOf(active)), 0x11, 0, 4 * MiB));
        Assert.True(await Tools.ReadsAsync(bed.PathOf(active), Tools.FormatOf(bed.PathOf(active)), 0x33, 8 * MiB, 1 * MiB));

        // DeleteVolume: no file of the volume is left; the clones are untouched.
        var deleted = await bed.RunOkAsync(new DeleteVolume { CommandId = Guid.NewGuid(), VolumeId = vol }, nameof(VolumeDeleted));
        Assert.Null(deleted.Text("activeFile"));
        Assert.Empty(VolumeFiles(bed, vol));
        Assert.True(File.Exists(bed.PathOf($"volume-{clone}")));
        Assert.True(File.Exists(bed.PathOf($"volume-{fromSnap}")));

        Assert.Equal("", await Tools.CheckShareAsync(bed.Share));
        Assert.Equal(0, bed.Worker.Engine.OverlapsDetected);
        // Inboxes are empty once every command has finished (an entry goes once its event is confirmed).
        await Tools.WaitForEmptyInboxAsync(bed.Share);
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(bed.Share, ".nfsvolumeworker", "inbox"), "*.cmd", SearchOption.AllDirectories));
        Assert.Equal(8, bed.Events.Terminal.Count);
    }

    [Fact]
    public async Task A_failing_command_yields_CommandFailed_with_the_engine_error_code_and_changes_nothing()
    {
        await using var bed = await WorkerTestBed.StartAsync(output, "e2e-fail");
        var vol = Guid.NewGuid();
        await bed.RunOkAsync(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = vol, SizeBytes = 8 * MiB }, nameof(VolumeCreated));
        var before = Tools.Tree(bed.Share).Where(p => !p.StartsWith(".nfsvolumeworker", StringComparison.Ordinal)).ToList();

        var revert = new RevertToSnapshot { CommandId = Guid.NewGuid(), VolumeId = vol, SnapshotId = Guid.NewGuid() };
        var failed = await bed.RunAsync(revert);
        Assert.Equal(nameof(CommandFailed), failed.Type);
        Assert.Equal("SnapshotNotFound", failed.Text("errorCode"));
        Assert.Equal(nameof(RevertToSnapshot), failed.Text("commandType"));

        var shrink = await bed.RunAsync(new ExtendVolume { CommandId = Guid.NewGuid(), VolumeId = vol, NewSizeBytes = 4 * MiB });
        Assert.Equal("ShrinkNotAllowed", shrink.Text("errorCode"));

        var encrypted = await bed.RunAsync(new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = vol, SnapshotId = Guid.NewGuid(), EncryptionKeyId = "k1" });
        Assert.Equal("VolumeEncrypted", encrypted.Text("errorCode"));

        var missing = await bed.RunAsync(new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = Guid.NewGuid(), SnapshotId = Guid.NewGuid() });
        Assert.Equal("VolumeNotFound", missing.Text("errorCode"));

        Assert.Equal(before, Tools.Tree(bed.Share).Where(p => !p.StartsWith(".nfsvolumeworker", StringComparison.Ordinal)).ToList());
        Assert.Equal(8 * MiB, new FileInfo(bed.PathOf($"volume-{vol}")).Length);
    }

    internal static JsonElement InfoOf(WorkerTestBed bed, Guid vol) =>
        JsonDocument.Parse(File.ReadAllBytes(bed.PathOf($"volume-{vol}.info"))).RootElement;

    internal static List<string> VolumeFiles(WorkerTestBed bed, Guid vol) =>
        Directory.EnumerateFiles(bed.Share, $"*volume-{vol}*").Select(Path.GetFileName).Order(StringComparer.Ordinal).Select(n => n!)
            .OrderBy(n => n.EndsWith(".info", StringComparison.Ordinal)).ThenBy(n => n.Length).ToList();
}
