using System.Collections.Concurrent;

namespace NfsVolumeWorker.Messaging;

/// <summary>
/// The publishes now waiting for the broker's confirmation: the router's forwards and the terminal events. A
/// quorum queue that has lost the majority of its replicas (2 of 3 nodes down), or a memory or disk alarm, holds
/// confirmations back without an error: nothing fails, everything waits. This makes that wait visible
/// (<see cref="Health.BrokerHealthCheck"/>).
/// </summary>
public sealed class BrokerWaits
{
    private readonly ConcurrentDictionary<long, (string What, DateTimeOffset Since)> _waiting = new();
    private long _next;

    /// <summary>Marks a publish as waiting until the returned scope is disposed.</summary>
    public Scope Begin(string what)
    {
        var id = Interlocked.Increment(ref _next);
        _waiting[id] = (what, DateTimeOffset.UtcNow);
        return new Scope(this, id);
    }

    /// <summary>How many publishes wait now, and the one that has waited longest.</summary>
    public (int Count, string? Oldest, DateTimeOffset? Since) Snapshot()
    {
        var all = _waiting.Values.ToList();
        if (all.Count == 0)
        {
            return (0, null, null);
        }
        var oldest = all.MinBy(w => w.Since);
        return (all.Count, oldest.What, oldest.Since);
    }

    /// <summary>Ends one wait.</summary>
    public readonly struct Scope : IDisposable
    {
        private readonly BrokerWaits? _owner;
        private readonly long _id;

        internal Scope(BrokerWaits owner, long id)
        {
            _owner = owner;
            _id = id;
        }

        public void Dispose() => _owner?._waiting.TryRemove(_id, out _);
    }
}
