namespace NfsVolumeWorker.Testing;

/// <summary>
/// A small real file system loop-mounted over a directory, unmounted and removed on dispose: an ext4 (no blocks
/// reserved for root, so "full" means full for the worker too) for full-disk tests, or an XFS with reflink for
/// extent sharing. Needs root and e2fsprogs / xfsprogs; without them the test fails, saying so.
/// </summary>
public sealed class LoopFileSystem : IDisposable
{
    private readonly string _image;
    private bool _mounted;

    private LoopFileSystem(string mountPoint, string image)
    {
        MountPoint = mountPoint;
        _image = image;
    }

    public string MountPoint { get; }

    /// <summary>Mounts a fresh ext4 of <paramref name="sizeBytes"/> over <paramref name="mountPoint"/> (an existing,
    /// empty directory); the image file lives in <paramref name="imageDirectory"/>.</summary>
    public static LoopFileSystem MountExt4(string mountPoint, string imageDirectory, long sizeBytes) =>
        Mount(mountPoint, imageDirectory, sizeBytes, "ext4", ["mkfs.ext4", "e2fsprogs"], "-q", "-F", "-m", "0");

    /// <summary>Mounts a fresh XFS with extent sharing (<c>mkfs.xfs -m reflink=1</c>; at least 300 MiB) over
    /// <paramref name="mountPoint"/>.</summary>
    public static LoopFileSystem MountXfsWithReflink(string mountPoint, string imageDirectory, long sizeBytes) =>
        Mount(mountPoint, imageDirectory, sizeBytes, "xfs", ["mkfs.xfs", "xfsprogs"], "-q", "-f", "-m", "reflink=1");

    private static LoopFileSystem Mount(string mountPoint, string imageDirectory, long sizeBytes, string kind, string[] mkfs, params string[] mkfsArgs)
    {
        if (Environment.UserName != "root")
        {
            throw new InvalidOperationException($"these tests loop-mount a small {kind} and need root (the test machines run as root)");
        }
        var image = Path.Combine(imageDirectory, $"{kind}-{Guid.NewGuid():N}.img");
        using (var f = File.Create(image))
        {
            f.SetLength(sizeBytes);
        }
        var fs = new LoopFileSystem(mountPoint, image);
        try
        {
            RequiredTool.RunChecked(Sbin(mkfs[0], mkfs[1]), [.. mkfsArgs, image]);
            RequiredTool.RunChecked(Sbin("mount", "mount"), "-o", "loop", image, mountPoint);
            fs._mounted = true;
            return fs;
        }
        catch
        {
            fs.Dispose();
            throw;
        }
    }

    /// <summary>Detaches the file system now, even while files on it are open (<c>umount -l</c>): what an NFS
    /// share that goes away looks like to the worker (an empty mount-point directory).</summary>
    public void Unmount()
    {
        RequiredTool.RunChecked(Sbin("umount", "mount"), "-l", MountPoint);
        _mounted = false;
    }

    /// <summary>Mounts the same image again, with everything that was on it.</summary>
    public void Remount()
    {
        RequiredTool.RunChecked(Sbin("mount", "mount"), "-o", "loop", _image, MountPoint);
        _mounted = true;
    }

    /// <summary>Bytes still free for writing.</summary>
    public long Available => new DriveInfo(MountPoint).AvailableFreeSpace;

    /// <summary>Writes a filler file until the file system answers ENOSPC, leaving <paramref name="leaveBytes"/>
    /// free (0: completely full). Returns the filler's path; delete it to free the space again.</summary>
    public string Fill(long leaveBytes = 0)
    {
        var path = Path.Combine(MountPoint, $"filler-{Guid.NewGuid():N}");
        var chunk = new byte[1024 * 1024];
        Array.Fill(chunk, (byte)0x6b);
        using var stream = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None, 0);
        try
        {
            while (Available > leaveBytes)
            {
                var room = Available - leaveBytes;
                stream.Write(chunk, 0, (int)Math.Min(chunk.Length, Math.Max(4096, room)));
                stream.Flush(flushToDisk: true);
            }
        }
        catch (IOException)
        {
            // ENOSPC: full.
        }
        return path;
    }

    public void Dispose()
    {
        if (_mounted)
        {
            RequiredTool.Run(Sbin("umount", "mount"), "-l", MountPoint);
            _mounted = false;
        }
        File.Delete(_image);
    }

    internal static string Sbin(string name, string package)
    {
        foreach (var dir in new[] { "/usr/sbin", "/sbin", "/usr/bin", "/bin" })
        {
            if (File.Exists(Path.Combine(dir, name)))
            {
                return Path.Combine(dir, name);
            }
        }
        return RequiredTool.Find(name, package);
    }
}
