namespace NfsVolumeWorker.Testing;

/// <summary>The folder that holds NfsVolumeWorker.sln, found by walking up from the test binaries.</summary>
public static class RepositoryRoot
{
    public const string SolutionFile = "NfsVolumeWorker.sln";

    public static string? TryFind()
    {
        foreach (var start in new[] { AppContext.BaseDirectory, Directory.GetCurrentDirectory() })
        {
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                if (File.Exists(Path.Combine(dir.FullName, SolutionFile)))
                {
                    return dir.FullName;
                }
            }
        }

        return null;
    }

    public static string Find() => TryFind() ?? throw new InvalidOperationException(
        $"no {SolutionFile} above {AppContext.BaseDirectory} or {Directory.GetCurrentDirectory()}");
}
