using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Storage.Layout;

namespace NfsVolumeWorker.Storage.QemuImg;

/// <summary>
/// Typed wrapper around the qemu-img binary: argument vectors (no shell), explicit formats on every
/// image, JSON output parsed into records, failures turned into <see cref="QemuImgException"/>,
/// timeouts and cancellation that kill the process.
/// </summary>
public sealed class QemuImgRunner
{
    public QemuImgRunner(IOptions<QemuImgOptions> options, ILogger<QemuImgRunner> logger)
    {
        _ = options;
        _ = logger;
    }

    /// <summary><c>qemu-img info --force-share -f fmt --output=json</c> under resource limits.</summary>
    public Task<ImageInfo> InfoAsync(string path, ImageFormat format, CancellationToken cancellationToken = default) => throw new NotImplementedException();

    /// <summary><c>qemu-img info --backing-chain</c>: the image first, then each backing file.</summary>
    public Task<IReadOnlyList<ImageInfo>> InfoChainAsync(string path, ImageFormat format, CancellationToken cancellationToken = default) => throw new NotImplementedException();

    public Task CreateAsync(CreateImageRequest request, CancellationToken cancellationToken = default) => throw new NotImplementedException();

    /// <summary>Commit with <c>-p</c>; progress is reported as a fraction 0..1.</summary>
    public Task CommitAsync(CommitRequest request, IProgress<double>? progress = null, CancellationToken cancellationToken = default) => throw new NotImplementedException();

    /// <summary><c>qemu-img rebase -u -f qcow2 -b backing -F backingFormat path</c>: rewrites the header's backing reference only.</summary>
    public Task RebaseUnsafeAsync(string path, string backingFile, ImageFormat backingFormat, CancellationToken cancellationToken = default) => throw new NotImplementedException();

    /// <summary>Convert with <c>-p</c>; progress is reported as a fraction 0..1.</summary>
    public Task ConvertAsync(ConvertRequest request, IProgress<double>? progress = null, CancellationToken cancellationToken = default) => throw new NotImplementedException();

    public Task ResizeAsync(string path, ImageFormat format, long newSizeBytes, CancellationToken cancellationToken = default) => throw new NotImplementedException();

    public Task<CheckResult> CheckAsync(string path, ImageFormat format, CancellationToken cancellationToken = default) => throw new NotImplementedException();

    /// <summary><c>qemu-img compare -f -F</c>: true when the guest-visible contents are identical.</summary>
    public Task<bool> CompareAsync(string first, ImageFormat firstFormat, string second, ImageFormat secondFormat, CancellationToken cancellationToken = default) => throw new NotImplementedException();

    /// <summary>The version qemu-img reports, e.g. <c>7.2.22</c>.</summary>
    public Task<string> VersionAsync(CancellationToken cancellationToken = default) => throw new NotImplementedException();
}
