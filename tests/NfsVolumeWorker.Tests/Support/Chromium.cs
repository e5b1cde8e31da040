using NfsVolumeWorker.Testing;

namespace NfsVolumeWorker.Tests.Support;

/// <summary>Headless Chromium (Debian <c>chromium</c>, installed by <c>ops/dev/system-packages</c>): a screenshot of a
/// page, and its DOM after the browser parsed it. Runs as root here, hence <c>--no-sandbox</c>.</summary>
internal static class Chromium
{
    public static string Executable => RequiredTool.Find("chromium", "chromium");

    public static async Task ScreenshotAsync(Uri page, string pngPath, int width = 1400, int height = 1100)
    {
        var (code, stdout, stderr) = await Tools.RunAsync(Executable, [.. Common(), $"--window-size={width},{height}", $"--screenshot={pngPath}", page.ToString()]);
        Assert.True(code == 0 && File.Exists(pngPath), $"chromium --screenshot exited {code}: {stdout}{stderr}");
    }

    public static async Task<string> DumpDomAsync(Uri page)
    {
        var (code, stdout, stderr) = await Tools.RunAsync(Executable, [.. Common(), "--dump-dom", page.ToString()]);
        Assert.True(code == 0, $"chromium --dump-dom exited {code}: {stderr}");
        return stdout;
    }

    private static string[] Common() =>
    [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars", "--no-first-run",
        "--disable-extensions", "--disable-background-networking", "--user-data-dir=" + Directory.CreateTempSubdirectory("nfsvol-chromium-").FullName,
    ];
}
