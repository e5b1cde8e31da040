using Microsoft.Extensions.Options;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Messaging;
using NfsVolumeWorker.Oslo;
using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Shares;

namespace NfsVolumeWorker.OsloBridge;

/// <summary>initialize_connection as Cinder's NFS driver answers it: the active image from the chain, its
/// format (raw or qcow2 only) and a size check against the volume's size in Cinder.</summary>
public sealed class EngineConnectionInfoProvider(VolumeEngine engine, ShareMap shares, IOptions<SharesOptions> sharesOptions) : IConnectionInfoProvider
{
    public OsloConnectionInfo Connect(string share, Guid volumeId, long expectedSizeBytes, VolumeFormat? baseFormat)
    {
        Storage.Engine.ConnectionInfo info;
        try
        {
            info = engine.GetConnectionInfo(new ConnectionInfoRequest(share, volumeId, expectedSizeBytes)
            {
                BaseFormat = baseFormat switch { VolumeFormat.Raw => ImageFormat.Raw, VolumeFormat.Qcow2 => ImageFormat.Qcow2, _ => null },
            });
        }
        catch (StorageException e)
        {
            // Cinder's own words for a size that differs from its records.
            throw new OsloServiceException(e.Code.ToErrorCode(), e.Code == StorageErrorCode.SizeMismatch
                ? "The volume virtual_size does not match the size in cinder, aborting as we suspect an exploit."
                : e.Message);
        }
        if (info.Format is not ("raw" or "qcow2"))
        {
            throw new OsloServiceException(ErrorCodes.UnsupportedFormat, "nfs volume must be a valid raw or qcow2 image.");
        }
        return new OsloConnectionInfo(info.Export, info.Name, info.Format, info.Options, Path.GetFullPath(sharesOptions.Value.MountPointBase));
    }

    public (double TotalGb, double FreeGb) Capacity()
    {
        double total = 0, free = 0;
        foreach (var share in shares.All)
        {
            try
            {
                var d = new DriveInfo(share.LocalPath);
                total += d.TotalSize;
                free += d.AvailableFreeSpace;
            }
            catch (Exception e) when (e is IOException or ArgumentException or UnauthorizedAccessException)
            {
                // an unreachable share counts as empty, as Cinder's driver reports it
            }
        }
        return (total / (1L << 30), free / (1L << 30));
    }
}
