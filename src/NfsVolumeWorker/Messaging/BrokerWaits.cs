using System.Collections.Concurrent;
using System.Globalization;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Configuration;

namespace NfsVolumeWorker.Messaging;

/// <summary>
/// The publishes now waiting for the broker's confirmation: the router's forwards and the terminal events. A
/// quorum queue that has lost the majority of its replicas (2 of 3 nodes down), or a memory or disk alarm, holds
/// confirmations back without an error: nothing fails, everything waits. This makes that wait visible
/// (<see cref="Health.BrokerHealthCheck"/>), and bounds it (<see cref="BrokerOptions.ConfirmTimeout"/>): a confirm
/// can also be lost for good, when the node the channel was on dies while the publish waits (seen under load with
/// <c>kill -9</c> of a node: the event's publish waited until the worker stopped, and its volume's later commands
/// with it).
/// </summary>
public sealed class BrokerWaits(IOptions<BrokerOptions> options)
{
    private readonly ConcurrentDictionary<long, (string What, DateTimeOffset Since)> _waiting = new();
    private long _next;

    /// <summary>Runs <paramref name="publish"/> (which waits for the broker's confirm) as a tracked wait of at most
    /// <see cref="BrokerOptions.ConfirmTimeout"/>; past it, throws <see cref="TimeoutException"/> and the caller sends
    /// again, as after any failed publish.</summary>
    public async Task ConfirmedAsync(string what, Func<CancellationToken, Task> publish, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(publish);
        var timeout = options.Value.ConfirmTimeout;
        using var scope = Begin(what);
        using var bounded = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        bounded.CancelAfter(timeout);
        try
        {
            await publish(bounded.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException e) when (!cancellationToken.IsCancellationRequested)
        {
            throw new TimeoutException(string.Create(CultureInfo.InvariantCulture,
                $"the broker did not confirm {what} within {timeout.TotalSeconds:0} s (Broker:ConfirmTimeout): its node went away, or its queues lost their quorum"), e);
        }
    }

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
