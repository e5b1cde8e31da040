using NfsVolumeWorker.Storage.Durability;
using NfsVolumeWorker.Storage.Shares;

namespace NfsVolumeWorker.Storage.Locking;

/// <summary>Creates the worker's dot-directory and its subfolders on a share, refusing symlinks.</summary>
internal static class WorkerDirectories
{
    public static string Ensure(Share share, string subfolder)
    {
        DurableFile.EnsureNotSymlink(share.WorkerDirectory);
        var dir = Path.Combine(share.WorkerDirectory, subfolder);
        DurableFile.EnsureNotSymlink(dir);
        if (!Directory.Exists(dir))
        {
            Directory.CreateDirectory(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute
                | UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.GroupExecute);
        }
        return dir;
    }
}
