using Microsoft.Extensions.Options;
using NfsVolumeWorker.Configuration;
using NfsVolumeWorker.Messaging;

namespace NfsVolumeWorker.Host.Tests;

/// <summary>A publish waiting for the broker's confirm is tracked, and bounded by Broker:ConfirmTimeout.</summary>
public sealed class BrokerWaitsSpecs
{
    private static BrokerWaits Waits(TimeSpan timeout) =>
        new(Options.Create(new BrokerOptions { Url = "amqp://guest:guest@127.0.0.1/", ConfirmTimeout = timeout }));

    [Fact]
    public async Task A_confirm_that_never_comes_ends_in_a_timeout_that_names_it_and_the_wait_is_no_longer_listed()
    {
        var waits = Waits(TimeSpan.FromSeconds(1));
        var publish = waits.ConfirmedAsync("SnapshotCreated 1", ct => Task.Delay(Timeout.Infinite, ct), CancellationToken.None);
        Assert.Equal(1, waits.Snapshot().Count);
        Assert.Equal("SnapshotCreated 1", waits.Snapshot().Oldest);
        var e = await Assert.ThrowsAsync<TimeoutException>(() => publish);
        Assert.Contains("did not confirm SnapshotCreated 1 within 1 s", e.Message, StringComparison.Ordinal);
        Assert.Equal(0, waits.Snapshot().Count);
    }

    [Fact]
    public async Task A_stop_cancels_the_wait_as_a_cancellation_not_a_timeout()
    {
        var waits = Waits(TimeSpan.FromMinutes(1));
        using var stopping = new CancellationTokenSource();
        var publish = waits.ConfirmedAsync("forward", ct => Task.Delay(Timeout.Infinite, ct), stopping.Token);
        await stopping.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => publish);
        Assert.Equal(0, waits.Snapshot().Count);
    }

    [Fact]
    public async Task A_confirmed_publish_passes_through()
    {
        var waits = Waits(TimeSpan.FromMinutes(1));
        await waits.ConfirmedAsync("event", _ => Task.CompletedTask, CancellationToken.None);
        Assert.Equal(0, waits.Snapshot().Count);
    }
}
