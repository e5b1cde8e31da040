using System.Text;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Oslo.Rpc;
using NfsVolumeWorker.OsloBridge;
using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Shares;

namespace NfsVolumeWorker.Oslo.Tests;

/// <summary>The notification records on the shares: saved atomically, claimed by exactly one claimer, given
/// back when sending fails or the claimer died.</summary>
public sealed class PendingStoreTests : IDisposable
{
    private const string ShareA = "127.0.0.1:/a";
    private const string ShareB = "127.0.0.1:/b";
    private readonly DirectoryInfo _root = Directory.CreateTempSubdirectory("oslo-pending-");
    private readonly ManualTime _time = new();
    private readonly SharePendingNotificationStore _store;

    public PendingStoreTests()
    {
        var shares = new ShareMap(new[] { ShareA, ShareB }.Select(e =>
            new Share(e, Directory.CreateDirectory(Path.Combine(_root.FullName, e[^1..])).FullName, null)));
        _store = new SharePendingNotificationStore(shares, Options.Create(new VolumeEngineOptions()), _time);
    }

    public void Dispose() => _root.Delete(recursive: true);

    private static byte[] Bytes(string s) => Encoding.UTF8.GetBytes(s);

    [Fact]
    public void Of_two_claimers_exactly_one_wins_and_after_completion_nobody_finds_the_record()
    {
        var id = Guid.NewGuid();
        _store.Save(ShareA, id, Bytes("r1"));
        using var first = _store.TryClaim(id, ShareA);
        using var second = _store.TryClaim(id, ShareA);
        Assert.NotNull(first);
        Assert.Null(second);
        Assert.Equal("r1", Encoding.UTF8.GetString(first.Record));
        Assert.Equal(ShareA, first.Share);
        first.Complete();
        Assert.Null(_store.TryClaim(id, ShareA));
        Assert.Empty(Directory.GetFiles(Path.Combine(_root.FullName, "a", ".nfsvolumeworker", SharePendingNotificationStore.Folder)));
    }

    [Fact]
    public async Task Claimers_racing_on_many_records_get_each_record_exactly_once()
    {
        var ids = Enumerable.Range(0, 200).Select(_ => Guid.NewGuid()).ToList();
        foreach (var id in ids)
        {
            _store.Save(ShareB, id, Bytes(id.ToString()));
        }
        var wins = new int[ids.Count];
        using var start = new Barrier(4);
        var claimers = Enumerable.Range(0, 4).Select(_ => Task.Run(() =>
        {
            start.SignalAndWait();
            for (var i = 0; i < ids.Count; i++)
            {
                using var claim = _store.TryClaim(ids[i], share: null); // no hint: looks on a, then on b
                if (claim is not null)
                {
                    Interlocked.Increment(ref wins[i]);
                    claim.Complete();
                }
            }
        })).ToList();
        await Task.WhenAll(claimers);
        Assert.All(wins, w => Assert.Equal(1, w));
    }

    [Fact]
    public void A_claim_disposed_without_completion_is_given_back()
    {
        var id = Guid.NewGuid();
        _store.Save(ShareA, id, Bytes("r"));
        using (var claim = _store.TryClaim(id, ShareA))
        {
            Assert.NotNull(claim);
        }
        using var again = _store.TryClaim(id, ShareB); // the hint is only where to look first
        Assert.NotNull(again);
    }

    [Fact]
    public void A_claim_whose_claimer_died_is_given_back_at_start_once_stale()
    {
        var waiting = Guid.NewGuid();
        var claimed = Guid.NewGuid();
        _store.Save(ShareA, waiting, Bytes("w"));
        _store.Save(ShareA, claimed, Bytes("c"));
        Assert.NotNull(_store.TryClaim(claimed, ShareA)); // and then the claimer "dies": never completed nor disposed

        _time.Advance(TimeSpan.FromMinutes(1));
        Assert.Equal([(ShareA, waiting)], _store.ListPending(CommandNotifications.StaleClaimAge));
        Assert.Null(_store.TryClaim(claimed, ShareA));

        _time.Advance(TimeSpan.FromMinutes(5));
        Assert.Equal([(ShareA, claimed), (ShareA, waiting)], _store.ListPending(CommandNotifications.StaleClaimAge).OrderBy(p => p.CommandId != claimed));
        using var taken = _store.TryClaim(claimed, ShareA);
        Assert.NotNull(taken);
        Assert.Equal("c", Encoding.UTF8.GetString(taken.Record));
    }

    [Fact]
    public void The_record_keeps_the_notification_but_not_the_secrets_of_the_context()
    {
        var n = new PendingNotification("volume", "resize", "hostA@nfs", new JsonObject { ["volume_id"] = "v", ["size"] = 1 },
            new JsonObject { ["_context_user_id"] = "u", ["_context_auth_token"] = "SECRET", ["_context_service_catalog"] = new JsonArray(1) },
            "extending", "available", "error_extending") { EndExtra = new JsonObject { ["size"] = 2 } };
        var id = Guid.NewGuid();
        var bytes = PendingRecord.For(id, Guid.NewGuid(), ShareA, DateTimeOffset.UnixEpoch, n).ToBytes();
        Assert.DoesNotContain("SECRET", Encoding.UTF8.GetString(bytes), StringComparison.Ordinal);
        var back = PendingRecord.FromBytes(bytes);
        Assert.Equal(id, back.CommandId);
        Assert.Equal(ShareA, back.Share);
        Assert.Equal("u", (string?)back.Notification.Context["_context_user_id"]);
        Assert.True(back.Notification.Context.ContainsKey("_context_auth_token"));
        Assert.Null(back.Notification.Context["_context_auth_token"]);
        var end = back.Notification.PayloadWith(back.Notification.EndStatus, back.Notification.EndExtra);
        Assert.Equal("available", (string?)end["status"]);
        Assert.Equal(2, (int)end["size"]!);
        Assert.Equal("v", (string?)end["volume_id"]);
    }

    private sealed class ManualTime : TimeProvider
    {
        private DateTimeOffset _now = DateTimeOffset.UtcNow;

        public override DateTimeOffset GetUtcNow() => _now;

        public void Advance(TimeSpan by) => _now += by;
    }
}
