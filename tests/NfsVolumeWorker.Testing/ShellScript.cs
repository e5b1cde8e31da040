namespace NfsVolumeWorker.Testing;

/// <summary>A <c>/bin/sh</c> script a test writes: mostly a wrapper around a real tool (qemu-img, prlimit) that records
/// what it was given or changes how it runs, before it <c>exec</c>s the tool.</summary>
public static class ShellScript
{
    /// <summary>Writes <c>#!/bin/sh</c> and <paramref name="body"/> to <paramref name="path"/>, executable by its
    /// owner; returns the path.</summary>
    public static string Write(string path, string body)
    {
        File.WriteAllText(path, "#!/bin/sh\n" + body);
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        return path;
    }
}
