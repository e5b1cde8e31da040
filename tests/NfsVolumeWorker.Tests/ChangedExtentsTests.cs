using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Tests.Support;

namespace NfsVolumeWorker.Tests;

/// <summary>The native GetChangedExtents command, answered by ChangedExtentsListed with the ranges written after a snapshot.</summary>
public sealed class ChangedExtentsTests(ITestOutputHelper output)
{
    private const long MiB = WorkerTestBed.MiB;

    [Fact]
    public async Task GetChangedExtents_answers_with_the_ranges_written_after_the_snapshot()
    {
        await using var bed = await WorkerTestBed.StartAsync(output, "changed-extents");
        var volume = Guid.NewGuid();
        var snapshot = Guid.NewGuid();
        await bed.RunOkAsync(new CreateVolume { CommandId = Guid.NewGuid(), VolumeId = volume, SizeBytes = 16 * MiB }, nameof(VolumeCreated));
        await bed.RunOkAsync(new CreateSnapshot { CommandId = Guid.NewGuid(), VolumeId = volume, SnapshotId = snapshot }, nameof(SnapshotCreated));
        await Tools.WriteAsync(bed.PathOf($"volume-{volume}.{snapshot}"), "qcow2", 0x42, 4 * MiB, 2 * MiB);

        var listed = await bed.RunOkAsync(new GetChangedExtents { CommandId = Guid.NewGuid(), VolumeId = volume, FromSnapshotId = snapshot }, nameof(ChangedExtentsListed));
        output.WriteLine(listed.MessageJson);
        var message = listed.Message;
        Assert.Equal(2 * MiB, message.GetProperty("totalBytes").GetInt64());
        Assert.Equal(1, message.GetProperty("extentCount").GetInt32());
        var extent = message.GetProperty("extents")[0];
        Assert.Equal(4 * MiB, extent.GetProperty("offset").GetInt64());
        Assert.Equal(2 * MiB, extent.GetProperty("length").GetInt64());

        var backwards = await bed.RunAsync(new GetChangedExtents { CommandId = Guid.NewGuid(), VolumeId = volume, ToSnapshotId = Guid.NewGuid() });
        Assert.Equal(nameof(CommandFailed), backwards.Type);
        Assert.Equal("SnapshotNotFound", backwards.Text("errorCode"));
    }
}
