namespace NfsVolumeWorker.Testing.Tests;

internal static class ProcessInfo
{
    /// <summary>The command name of a live process (/proc/pid/comm), or null when there is none.</summary>
    public static string? Command(int pid)
    {
        try
        {
            return File.ReadAllText($"/proc/{pid}/comm").Trim();
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }
}
