using NfsVolumeWorker.Status;
using NfsVolumeWorker.Storage.Engine;

namespace NfsVolumeWorker.Host.Tests;

public sealed class StatusBoardSpecs
{
    private sealed class Clock : TimeProvider
    {
        public DateTimeOffset Now { get; set; } = new(2026, 12, 5, 12, 0, 0, TimeSpan.Zero);

        public override DateTimeOffset GetUtcNow() => Now;
    }

    [Fact]
    public void The_failure_ring_keeps_the_newest_200_and_lists_only_the_last_hour_newest_first()
    {
        var clock = new Clock();
        var board = new StatusBoard(clock);
        for (var i = 0; i < 250; i++)
        {
            board.Failed(Guid.NewGuid(), "CreateVolume", Guid.NewGuid(), "s", $"Code{i}", "m", false);
            clock.Now += TimeSpan.FromSeconds(10);
        }
        var listed = board.RecentFailures();
        // 250 at 10 s apart span 41 min: all in the hour, but only the newest 200 kept.
        Assert.Equal(StatusBoard.FailureCapacity, listed.Count);
        Assert.Equal("Code249", listed[0].ErrorCode);
        Assert.Equal("Code50", listed[^1].ErrorCode);

        clock.Now += TimeSpan.FromMinutes(30);
        Assert.All(board.RecentFailures(), f => Assert.True(clock.Now - f.At <= StatusBoard.FailureWindow));
        Assert.True(board.RecentFailures().Count < StatusBoard.FailureCapacity);
        clock.Now += TimeSpan.FromHours(1);
        Assert.Empty(board.RecentFailures());
    }

    [Fact]
    public void A_running_command_shows_its_latest_progress_and_the_time_left_of_its_phase_until_it_ends()
    {
        var clock = new Clock();
        var board = new StatusBoard(clock);
        var command = Guid.NewGuid();
        var volume = Guid.NewGuid();
        board.Started(command, "CloneVolume", "host:/export", volume, 3);
        var before = Assert.Single(board.Running());
        Assert.Null(before.Percent);
        Assert.Null(before.SecondsLeft);

        clock.Now += TimeSpan.FromSeconds(10);
        board.Progressed(command, new OperationProgress(volume, "copy", 0.25));
        var running = Assert.Single(board.Running());
        Assert.Equal(25, running.Percent);
        Assert.Equal("copy", running.Phase);
        Assert.Equal(30, running.SecondsLeft); // 10 s for a quarter: 30 s for the rest
        Assert.Equal(10, running.ElapsedSeconds);

        board.Progressed(Guid.NewGuid(), new OperationProgress(volume, "copy", 0.5)); // not running: ignored
        board.Ended(command);
        Assert.Empty(board.Running());
    }
}
