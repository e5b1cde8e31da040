using System.Diagnostics;
using System.Text;

namespace NfsVolumeWorker.Tests.Support;

/// <summary>Runs the real qemu tools (argument vectors, no shell) and fails the test with their output on error.</summary>
internal static class Tools
{
    public static async Task<(int ExitCode, string Stdout, string Stderr)> RunAsync(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {file}");
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        await p.WaitForExitAsync();
        return (p.ExitCode, await stdout, await stderr);
    }

    public static async Task<string> MustAsync(string file, params string[] args)
    {
        var (code, stdout, stderr) = await RunAsync(file, args);
        Assert.True(code == 0, $"{file} {string.Join(' ', args)} exited {code}: {stdout}{stderr}");
        return stdout;
    }

    /// <summary>Writes <paramref name="length"/> bytes of <paramref name="pattern"/> at <paramref name="offset"/>, as a guest would.</summary>
    public static Task WriteAsync(string image, string format, byte pattern, long offset, long length) =>
        MustAsync("qemu-io", "-f", format, "-c", $"write -P {pattern} {offset} {length}", image);

    /// <summary>True when the image reads <paramref name="pattern"/> over the whole range.</summary>
    public static async Task<bool> ReadsAsync(string image, string format, byte pattern, long offset, long length)
    {
        var (code, stdout, stderr) = await RunAsync("qemu-io", "-f", format, "-c", $"read -P {pattern} {offset} {length}", image);
        return code == 0 && !(stdout + stderr).Contains("Pattern verification failed", StringComparison.Ordinal);
    }

    /// <summary>qemu-img compare: 0 identical, 1 different.</summary>
    public static async Task<int> CompareAsync(string a, string aFormat, string b, string bFormat)
    {
        var (code, _, stderr) = await RunAsync("qemu-img", "compare", "-f", aFormat, "-F", bFormat, a, b);
        Assert.True(code is 0 or 1, $"qemu-img compare failed ({code}): {stderr}");
        return code;
    }

    public static bool IsQcow2(string path)
    {
        Span<byte> magic = stackalloc byte[4];
        using var f = File.OpenRead(path);
        return f.Read(magic) == 4 && magic.SequenceEqual(stackalloc byte[] { 0x51, 0x46, 0x49, 0xFB });
    }

    public static string FormatOf(string path) => IsQcow2(path) ? "qcow2" : "raw";

    /// <summary>Every image on the share is readable: qcow2 images pass qemu-img check, every chain opens
    /// (qemu-img info --backing-chain with explicit formats), every .info file is JSON. Returns a report of
    /// problems (empty when the share is fine).</summary>
    public static async Task<string> CheckShareAsync(string shareDirectory)
    {
        var problems = new StringBuilder();
        foreach (var file in Directory.EnumerateFiles(shareDirectory, "volume-*").Order(StringComparer.Ordinal))
        {
            var name = Path.GetFileName(file);
            if (name.EndsWith(".info", StringComparison.Ordinal))
            {
                try
                {
                    using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllBytes(file));
                }
                catch (System.Text.Json.JsonException e)
                {
                    problems.AppendLine($"{name}: not JSON: {e.Message}");
                }
                continue;
            }
            if (IsQcow2(file))
            {
                var (code, stdout, stderr) = await RunAsync("qemu-img", "check", "-U", "-f", "qcow2", file);
                if (code != 0)
                {
                    problems.AppendLine($"{name}: qemu-img check exited {code}: {stdout}{stderr}");
                }
            }
            var info = await RunAsync("qemu-img", "info", "-U", "--backing-chain", "-f", FormatOf(file), file);
            if (info.ExitCode != 0)
            {
                problems.AppendLine($"{name}: qemu-img info --backing-chain exited {info.ExitCode}: {info.Stderr}");
            }
        }
        return problems.ToString();
    }

    /// <summary>The commands waiting in the share's volume inboxes.</summary>
    public static List<string> InboxEntries(string share)
    {
        var inbox = Path.Combine(share, ".nfsvolumeworker", "inbox");
        return Directory.Exists(inbox) ? Directory.EnumerateFiles(inbox, "*.cmd", SearchOption.AllDirectories).ToList() : [];
    }

    /// <summary>Waits (up to 10 s) until no command waits in any inbox: an entry goes just after its terminal
    /// event is confirmed (event first, for crash safety), so a test that saw the event may still see it.</summary>
    public static Task WaitForEmptyInboxAsync(string share) =>
        Eventually.WaitAsync(() => InboxEntries(share).Count, n => n == 0, TimeSpan.FromSeconds(10));

    /// <summary>The files of a directory tree (relative paths), for "nothing was touched" checks.</summary>
    public static SortedSet<string> Tree(string directory) =>
        new(Directory.EnumerateFileSystemEntries(directory, "*", SearchOption.AllDirectories).Select(p => Path.GetRelativePath(directory, p)), StringComparer.Ordinal);
}

internal static class Eventually
{
    public static async Task<T> WaitAsync<T>(Func<Task<T>> probe, Func<T, bool> done, TimeSpan timeout, int pollMs = 200)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var value = await probe();
            if (done(value) || DateTime.UtcNow > deadline)
            {
                return value;
            }
            await Task.Delay(pollMs);
        }
    }

    public static Task<T> WaitAsync<T>(Func<T> probe, Func<T, bool> done, TimeSpan timeout, int pollMs = 100) =>
        WaitAsync(() => Task.FromResult(probe()), done, timeout, pollMs);
}

/// <summary>Worker settings under which a clone's copy is slow: the worker's own copy limit
/// (<c>Engine:CopyBytesPerSecond</c>, <c>qemu-img convert -r</c>), so that a clone of a few hundred MiB of real data
/// takes seconds, as a big volume would.</summary>
internal static class SlowCopy
{
    public static Dictionary<string, string?> Settings(long bytesPerSecond) => new()
    {
        ["Engine:CopyBytesPerSecond"] = bytesPerSecond.ToString(System.Globalization.CultureInfo.InvariantCulture),
        // The limit holds for what qemu-img reads and writes itself: a server-side copy (convert -C) on a local file
        // system would run at the kernel's pace. So: read and write, in a pinned mode (no copy-mode measurement).
        ["Engine:ServerSideCopy"] = "false",
        ["Engine:CopyWithDirectIo"] = "true",
    };
}
