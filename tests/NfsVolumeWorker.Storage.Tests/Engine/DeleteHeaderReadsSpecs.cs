using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Tests.Support;
using static NfsVolumeWorker.Storage.Engine.OperationSteps;
using static NfsVolumeWorker.Storage.Tests.Engine.CrashAssertions;
using static NfsVolumeWorker.Storage.Tests.Support.EngineTestBed;

namespace NfsVolumeWorker.Storage.Tests.Engine;

/// <summary>
/// A snapshot delete reads each image's header once, in its chain read (on NFS each read is a round trip): the merge
/// planner judges an overlay's allocation from that header and reads only its tables, and the pull-up acts on what the
/// planner saw of the lower image instead of reading its tables again. Counted by <c>nfsvolumeworker.storage.image_reads</c>
/// (part header or tables) in the delete's own async flow.
/// </summary>
public sealed class DeleteHeaderReadsSpecs : IDisposable
{
    private static readonly Guid Volume = Guid.Parse("5e6f7081-0000-4000-8000-00000000000e");
    private static readonly Guid A = Guid.Parse("aaaaaaaa-0000-4000-8000-0000000000e1");
    private static readonly Guid B = Guid.Parse("bbbbbbbb-0000-4000-8000-0000000000e2");
    private static readonly Guid C = Guid.Parse("cccccccc-0000-4000-8000-0000000000e3");

    private readonly EngineTestBed _bed = new(new VolumeEngineOptions { LockTimeout = TimeSpan.FromSeconds(30), MergePlanning = MergePlanning.ByCost });

    public void Dispose() => _bed.Dispose();

    /// <summary>A raw 64 MiB volume with 2 MiB written, then each snapshot in turn followed by that many MiB written
    /// (0: none, so the snapshot's overlay maps nothing).</summary>
    private async Task SetUpAsync(params (Guid Snapshot, int MiBWritten)[] snapshots)
    {
        await _bed.Engine.CreateVolumeAsync(new CreateVolumeRequest(Export, Volume, 64 * MiB, ImageFormat.Raw));
        _bed.GuestWrite(Volume, 0, 2 * MiB, 0x31);
        var at = 4L;
        foreach (var (snapshot, written) in snapshots)
        {
            await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, Volume, snapshot));
            if (written > 0)
            {
                _bed.GuestWrite(Volume, at * MiB, written * MiB, 0x42);
                at += written;
            }
        }
        _ = Shares.ShareCapabilities.Of(_bed.Share); // the planner's probe, once per share and process
    }

    private async Task<(long Headers, long Tables, OperationResult Result)> DeleteAsync(Guid snapshot, VolumeEngine? engine = null)
    {
        var (reads, result) = await CounterTally.OfAsync("nfsvolumeworker.storage.image_reads", "part",
            () => (engine ?? _bed.NewEngine()).DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, Volume, snapshot)));
        Assert.Equal(OperationOutcome.Completed, result.Outcome);
        Assert.Empty(_bed.ShareProblems());
        return (reads.GetValueOrDefault("header"), reads.GetValueOrDefault("tables"), result);
    }

    private int ChainLength() => _bed.Engine.ReadChain(Export, Volume).Images.Count;

    [Theory]
    [InlineData("newest", "no data moved")]
    [InlineData("middle", "no data moved")]
    [InlineData("newest-with-data", "commit of")]
    [InlineData("middle-with-data", "commit of")]
    public async Task A_delete_that_commits_or_moves_nothing_reads_each_header_once_and_the_overlays_tables_once(string kind, string merged)
    {
        await (kind switch
        {
            "newest" => SetUpAsync((A, 0)),
            "middle" => SetUpAsync((A, 0), (B, 1)),
            "newest-with-data" => SetUpAsync((A, 1)),
            _ => SetUpAsync((A, 1), (B, 1)),
        });
        var images = ChainLength();

        var (headers, tables, result) = await DeleteAsync(A);

        Assert.Contains(merged, result.Message, StringComparison.Ordinal);
        Assert.Equal(images, headers); // was one more: the planner read the overlay's header again
        Assert.Equal(1, tables);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_pull_up_reads_each_header_once_and_each_images_tables_once(bool lowerMapsNothing)
    {
        // B's overlay holds 24 MiB (8 when A's maps nothing), A's below it 2 (or nothing): deleting B pulls A's up.
        await (lowerMapsNothing ? SetUpAsync((A, 0), (B, 8)) : SetUpAsync((A, 2), (B, 24), (C, 1)));
        var images = ChainLength();

        var (headers, tables, result) = await DeleteAsync(B);

        Assert.Contains("pull-up of", result.Message, StringComparison.Ordinal);
        Assert.Equal(lowerMapsNothing, result.Message.Contains("only re-points", StringComparison.Ordinal));
        // Was three more headers (B's by the planner, A's by the planner and again by the pull-up) and one more table read.
        Assert.Equal(images, headers);
        Assert.Equal(2, tables); // B's (does it map nothing?), then A's (is there anything to pull up?)
    }

    [Theory]
    [InlineData("nothing-to-move")]
    [InlineData("pull-up")]
    public async Task A_resumed_delete_reads_the_headers_again_after_the_crash_and_each_once(string kind)
    {
        var snapshot = kind == "pull-up" ? B : A;
        await (kind == "pull-up" ? SetUpAsync((A, 2), (B, 24), (C, 1)) : SetUpAsync((A, 0), (B, 1)));
        var images = ChainLength();
        await Assert.ThrowsAsync<InjectedCrash>(() => _bed.NewEngine(new CrashAtStep(DeleteSnapshotJournaled, 1)).DeleteSnapshotAsync(new DeleteSnapshotRequest(Export, Volume, snapshot)));
        Assert.Single(JournalEntries(_bed.Share));

        var (headers, tables, _) = await DeleteAsync(snapshot);

        // The journaled plan is not re-planned, but what it acts on is read afresh once: the chain (every header) and
        // the one image whose allocation decides the step (the overlay, or the lower image pulled up).
        Assert.Equal(images, headers);
        Assert.Equal(1, tables);
        Assert.Empty(JournalEntries(_bed.Share));
    }
}
