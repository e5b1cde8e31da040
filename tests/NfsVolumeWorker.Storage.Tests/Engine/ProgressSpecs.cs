using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.QemuImg;
using NfsVolumeWorker.Storage.Shares;
using NfsVolumeWorker.Storage.Tests.Support;
using static NfsVolumeWorker.Storage.Tests.Support.EngineTestBed;

namespace NfsVolumeWorker.Storage.Tests.Engine;

/// <summary>Progress reports carry the bytes the fraction stands for and the time left at the rate so far.</summary>
public sealed class ProgressSpecs : IDisposable
{
    private readonly EngineTestBed _bed = new();

    public void Dispose() => _bed.Dispose();

    [Fact]
    public void Time_left_is_estimated_from_the_average_rate_once_a_second_and_a_percent_have_passed()
    {
        Assert.Null(OperationProgress.EstimateTimeLeft(TimeSpan.FromMilliseconds(900), 0.5));
        Assert.Null(OperationProgress.EstimateTimeLeft(TimeSpan.FromSeconds(30), 0.005));
        Assert.Equal(TimeSpan.FromSeconds(30), OperationProgress.EstimateTimeLeft(TimeSpan.FromSeconds(10), 0.25));
        Assert.Equal(TimeSpan.FromSeconds(2), OperationProgress.EstimateTimeLeft(TimeSpan.FromSeconds(8), 0.8));
        Assert.Equal(TimeSpan.Zero, OperationProgress.EstimateTimeLeft(TimeSpan.FromSeconds(3), 1));
    }

    [Fact]
    public void A_fraction_becomes_bytes_of_the_total_with_the_time_left_at_the_rate_since_the_step_began()
    {
        var clock = new ManualClock();
        var reports = new List<OperationProgress>();
        var volume = Guid.NewGuid();
        var forwarding = ForwardingProgress.For(new Collect(reports), volume, "copy", 4L << 30, clock)!;

        forwarding.Report(0.0);
        clock.Advance(TimeSpan.FromSeconds(6));
        forwarding.Report(0.375);
        forwarding.Report(1.2); // qemu-img never says more than 100 %, and the bytes never exceed the total

        Assert.Equal(new OperationProgress(volume, "copy", 0, 0, 4L << 30, null), reports[0]);
        Assert.Equal(1536L << 20, reports[1].BytesDone); // 37.5 % of 4 GiB: 1.5 GiB
        Assert.Equal(TimeSpan.FromSeconds(10), reports[1].TimeLeft);
        Assert.Equal(4L << 30, reports[2].BytesDone);
        Assert.Equal(TimeSpan.Zero, reports[2].TimeLeft);
        Assert.Null(ForwardingProgress.For(null, volume, "copy", 1));
    }

    [Fact]
    public async Task A_long_copy_reports_bytes_of_the_data_it_copies_and_a_time_left_that_falls()
    {
        // Copies limited to 16 MiB/s: 48 MiB of data take about 3 s, long enough for estimates (qemu-img's rate limit
        // lets a smaller copy run at full speed and waits at the end).
        var engine = _bed.EngineWith(new VolumeEngineOptions { ServerSideCopy = false, CopyWithDirectIo = false, CopyBytesPerSecond = 16 * MiB });
        var volume = await _bed.CreateVolumeAsync(64 * MiB);
        _bed.GuestWrite(volume, 0, 48 * MiB, 0x61);
        var data = Durability.FileOwnership.AllocatedBytes(_bed.PathOf($"volume-{volume}"));
        var reports = new List<OperationProgress>();

        await engine.CloneVolumeAsync(new CloneVolumeRequest(Export, volume, Guid.NewGuid()), new Collect(reports));

        Assert.NotEmpty(reports);
        Assert.All(reports, r => Assert.Equal(("copy", data), (r.Phase, r.BytesTotal)));
        Assert.All(reports, r => Assert.InRange(r.BytesDone!.Value, 0, data));
        var done = reports.Select(r => r.BytesDone!.Value).ToList();
        Assert.Equal(done.Order(), done); // never backwards
        Assert.Equal(data, done[^1]);
        var estimates = reports.Where(r => r.TimeLeft is not null && r.Fraction < 1).Select(r => r.TimeLeft!.Value).ToList();
        Assert.True(estimates.Count >= 2, $"{estimates.Count} estimates in {reports.Count} reports: {string.Join(", ", reports.Select(r => $"{r.Fraction:0.00} {r.TimeLeft}"))}");
        Assert.All(estimates, e => Assert.InRange(e, TimeSpan.Zero, TimeSpan.FromMinutes(2)));
        Assert.True(estimates[^1] < estimates[0], $"time left went from {estimates[0]} to {estimates[^1]}");
        Assert.Null(reports[0].TimeLeft); // the first report comes before anything can be estimated
    }

    private sealed class Collect(List<OperationProgress> into) : IProgress<OperationProgress>
    {
        public void Report(OperationProgress value)
        {
            lock (into)
            {
                into.Add(value);
            }
        }
    }

    private sealed class ManualClock : TimeProvider
    {
        private long _ticks;

        public override long TimestampFrequency => TimeSpan.TicksPerSecond;

        public override long GetTimestamp() => _ticks;

        public void Advance(TimeSpan by) => _ticks += by.Ticks;
    }
}
