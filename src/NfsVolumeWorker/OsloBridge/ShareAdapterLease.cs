using NfsVolumeWorker.Oslo;
using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Storage.Locking;
using NfsVolumeWorker.Storage.Shares;
using NfsVolumeWorker.Telemetry;

namespace NfsVolumeWorker.OsloBridge;

/// <summary>
/// The adapter's lease is an OFD lock on the first configured share (<c>.nfsvolumeworker/locks/oslo-&lt;host&gt;.lock</c>),
/// the same kind of lock that serialises volumes: no lock manager, the kernel (and NFSv4 across hosts) gives it to
/// exactly one holder and drops it when the holder dies, kill -9 included. A standby tries once a second.
/// </summary>
public sealed class ShareAdapterLease(ShareMap shares, ILogger<ShareAdapterLease> logger) : IAdapterLease
{
    /// <summary>How often a standby tries to take the lease: the bound on a takeover after the holder died.</summary>
    public static readonly TimeSpan RetryInterval = TimeSpan.FromSeconds(1);

    public async Task<IDisposable> AcquireAsync(string host, CancellationToken cancellationToken)
    {
        var name = "oslo-" + new string(host.Select(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '-' or '_' or '@' ? c : '_').ToArray());
        var share = shares.All.First(); // every instance of a backend lists the same shares, so they agree on this one
        var waiting = false;
        while (true)
        {
            try
            {
                ShareMarker.EnsureAvailable(share);
                var held = await VolumeLock.AcquireNamedAsync(share, name, TimeSpan.Zero, cancellationToken).ConfigureAwait(false);
                WorkerLog.AdapterLeaseTaken(logger, host, share.Export, waiting);
                return held;
            }
            catch (StorageException e) when (e.Code is StorageErrorCode.VolumeBusy or StorageErrorCode.ShareUnavailable or StorageErrorCode.TransientIo)
            {
                if (!waiting)
                {
                    WorkerLog.AdapterStandby(logger, host, share.Export, e.Message);
                    waiting = true;
                }
            }
            await Task.Delay(RetryInterval, cancellationToken).ConfigureAwait(false);
        }
    }
}
