using System.Diagnostics;
using System.Globalization;
using NfsVolumeWorker.Benchmarks;
using NfsVolumeWorker.Testing;

namespace NfsVolumeWorker.PipelineBenchmark;

/// <summary>Where one column of figures runs: a local directory, or a FUSE passthrough of one (ops/bench/delay-fs)
/// that delays every create, rename, unlink, fsync and directory read as a LAN NFS server's round trip would.
/// <see cref="Path"/> is what the worker and qemu-img see; <see cref="BackingPath"/> is the same tree without the
/// delay, for setting up many files fast.</summary>
internal sealed class BenchShare : IAsyncDisposable
{
    private readonly Process? _fuse;
    private readonly LoopFileSystem? _loop;

    private BenchShare(string name, string path, string backingPath, Process? fuse, LoopFileSystem? loop = null)
    {
        Name = name;
        Path = path;
        BackingPath = backingPath;
        _fuse = fuse;
        _loop = loop;
    }

    public string Name { get; }

    public string Path { get; }

    public string BackingPath { get; }

    public static BenchShare Local(string root)
    {
        Directory.CreateDirectory(root);
        return new BenchShare("local", root, root, null);
    }

    /// <summary>A journaled ext4 (64 GiB, sparse image beside it) loop-mounted on <paramref name="root"/>/mnt: a local
    /// directory on the file system most shares' servers run, for machines whose own is not (these VMs' root ext4
    /// has no journal, where every new inode scans past all inodes deleted in the last 30 s).</summary>
    public static BenchShare LoopExt4(string root)
    {
        var mount = System.IO.Path.Combine(root, "mnt");
        Directory.CreateDirectory(mount);
        var loop = LoopFileSystem.MountExt4(mount, root, 64L << 30);
        return new BenchShare("ext4 loop", mount, mount, null, loop);
    }

    /// <summary>Mounts the delaying passthrough of <paramref name="root"/>/backing on <paramref name="root"/>/mnt and
    /// waits until the kernel lists the mount.</summary>
    public static async Task<BenchShare> MountDelayedAsync(string root, double delayMs, CancellationToken cancellationToken)
    {
        var backing = System.IO.Path.Combine(root, "backing");
        var mount = System.IO.Path.Combine(root, "mnt");
        Directory.CreateDirectory(backing);
        Directory.CreateDirectory(mount);
        var script = System.IO.Path.Combine(RepositoryRoot.Find(), "ops", "bench", "delay-fs");
        var start = new ProcessStartInfo(script)
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        start.ArgumentList.Add(backing);
        start.ArgumentList.Add(mount);
        start.ArgumentList.Add("--delay-ms");
        start.ArgumentList.Add(delayMs.ToString(CultureInfo.InvariantCulture));
        var process = Process.Start(start) ?? throw new HarnessException("could not start ops/bench/delay-fs");
        var stderr = process.StandardError.ReadToEndAsync(cancellationToken);
        var share = new BenchShare($"fuse {delayMs.ToString(CultureInfo.InvariantCulture)} ms", mount, backing, process);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (!IsMounted(mount))
        {
            if (process.HasExited)
            {
                throw new HarnessException($"ops/bench/delay-fs exited with {process.ExitCode}: {(await stderr).Trim()} " +
                    "(needs /dev/fuse, root or fusermount3, and Debian python3-fusepy: ops/dev/system-packages installs it)");
            }
            if (DateTime.UtcNow > deadline)
            {
                await share.DisposeAsync();
                throw new HarnessException($"{mount} was not mounted within 30 s");
            }
            await Task.Delay(100, cancellationToken);
        }
        return share;
    }

    /// <summary>A fresh directory for one worker (its own share), created through the backing tree.</summary>
    public (string Path, string BackingPath) Subdirectory(string name)
    {
        var backing = System.IO.Path.Combine(BackingPath, name);
        Directory.CreateDirectory(backing);
        return (System.IO.Path.Combine(Path, name), backing);
    }

    private static bool IsMounted(string mountPoint) =>
        File.ReadLines("/proc/self/mounts").Any(l => l.Split(' ') is { Length: > 2 } f && f[1] == mountPoint);

    /// <summary>Unmounts (fusermount3 -u, else a lazy umount) and waits for the passthrough to exit.</summary>
    public async ValueTask DisposeAsync()
    {
        _loop?.Dispose();
        if (_fuse is null)
        {
            return;
        }
        if (IsMounted(Path))
        {
            var r = await Proc.RunAsync("fusermount3", ["-u", Path], check: false);
            if (r.ExitCode != 0 && IsMounted(Path))
            {
                await Proc.RunAsync("umount", ["-l", Path], check: false);
            }
        }
        if (!_fuse.WaitForExit(TimeSpan.FromSeconds(10)))
        {
            _fuse.Kill();
            await _fuse.WaitForExitAsync();
        }
        _fuse.Dispose();
    }
}
