using System.Globalization;

namespace NfsVolumeWorker.Testing;

/// <summary>
/// A fresh directory of the NFS 4.2 export served inside the VM of <c>ops/dev/nfs42-vm</c>, mounted over a directory
/// with <c>vers=4.2</c> (an NFS client on loopback, the kernel's nfsd on an XFS with reflink behind it); unmounted and
/// removed on dispose. Only inside that VM: these machines' own kernel has no NFS.
/// </summary>
public sealed class Nfs42Export : IDisposable
{
    private const string ServerVariable = "NFSVOL_TEST_NFS42_SERVER";
    private const string ExportVariable = "NFSVOL_TEST_NFS42_EXPORT";

    private readonly string _serverDirectory;
    private bool _mounted;

    private Nfs42Export(string mountPoint, string serverDirectory)
    {
        MountPoint = mountPoint;
        _serverDirectory = serverDirectory;
    }

    public string MountPoint { get; }

    /// <summary>Mounts a new, empty directory of the export over <paramref name="mountPoint"/> (an existing, empty
    /// directory).</summary>
    public static Nfs42Export Mount(string mountPoint)
    {
        var server = Environment.GetEnvironmentVariable(ServerVariable);
        var exportRoot = Environment.GetEnvironmentVariable(ExportVariable);
        if (string.IsNullOrEmpty(server) || string.IsNullOrEmpty(exportRoot))
        {
            throw new InvalidOperationException($"{ServerVariable} and {ExportVariable} are set only inside the VM of ops/dev/nfs42-vm/run");
        }
        var name = $"t-{Guid.NewGuid():N}";
        var export = new Nfs42Export(mountPoint, Path.Combine(exportRoot, name));
        Directory.CreateDirectory(export._serverDirectory);
        try
        {
            RequiredTool.RunChecked(LoopFileSystem.Sbin("mount", "mount"), "-t", "nfs4", "-o", "vers=4.2", $"{server}:/{name}", mountPoint);
            export._mounted = true;
            return export;
        }
        catch
        {
            export.Dispose();
            throw;
        }
    }

    /// <summary>The file behind <paramref name="fileName"/> (a name on the mount) as the server's own file system holds
    /// it: what FIEMAP on the server side reads.</summary>
    public string ServerPath(string fileName) => Path.Combine(_serverDirectory, fileName);

    /// <summary>This mount's per-operation counters from <c>/proc/self/mountstats</c> (NFS operation name → counts).</summary>
    public IReadOnlyDictionary<string, NfsOperationCount> Operations()
    {
        var counts = new Dictionary<string, NfsOperationCount>(StringComparer.Ordinal);
        var inThisMount = false;
        foreach (var line in File.ReadLines("/proc/self/mountstats"))
        {
            if (line.StartsWith("device ", StringComparison.Ordinal))
            {
                inThisMount = line.Contains($" mounted on {MountPoint} with fstype nfs4", StringComparison.Ordinal);
                continue;
            }
            // "	        COPY: ops transmissions timeouts bytes-sent bytes-received queue rtt execute [errors]"
            var fields = line.Trim().Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (inThisMount && fields.Length >= 6 && fields[0].EndsWith(':') && long.TryParse(fields[1], CultureInfo.InvariantCulture, out var ops)
                && long.TryParse(fields[4], CultureInfo.InvariantCulture, out var sent) && long.TryParse(fields[5], CultureInfo.InvariantCulture, out var received))
            {
                counts[fields[0].TrimEnd(':')] = new NfsOperationCount(ops, sent, received);
            }
        }
        return counts.Count > 0 ? counts : throw new InvalidOperationException($"/proc/self/mountstats has no per-operation counters for {MountPoint}");
    }

    /// <summary>How many of <paramref name="fileName"/>'s extents the server's file system reports shared
    /// (FIEMAP, read with <c>filefrag -v</c> on the server side of the export).</summary>
    public int SharedExtents(string fileName)
    {
        var report = RequiredTool.RunChecked(LoopFileSystem.Sbin("filefrag", "e2fsprogs"), "-v", ServerPath(fileName));
        return report.Split('\n').Count(l => l.Contains("shared", StringComparison.Ordinal));
    }

    public void Dispose()
    {
        if (_mounted)
        {
            RequiredTool.Run(LoopFileSystem.Sbin("umount", "mount"), MountPoint);
            _mounted = false;
        }
        try
        {
            Directory.Delete(_serverDirectory, recursive: true);
        }
        catch (DirectoryNotFoundException)
        {
        }
    }
}

/// <summary>One NFS operation's counters on a mount: calls, and the bytes the client sent and received for them.</summary>
public readonly record struct NfsOperationCount(long Operations, long BytesSent, long BytesReceived)
{
    public static NfsOperationCount operator -(NfsOperationCount after, NfsOperationCount before) =>
        new(after.Operations - before.Operations, after.BytesSent - before.BytesSent, after.BytesReceived - before.BytesReceived);
}
