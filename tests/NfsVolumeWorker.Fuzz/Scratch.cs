namespace NfsVolumeWorker.Fuzz;

/// <summary>The one file the file-reading targets write each input to: in <c>NFSVOL_FUZZ_SCRATCH</c> when set
/// (ops/fuzz/run puts it in the run's output folder), else in a fresh temporary folder removed at exit.</summary>
internal static class Scratch
{
    private static readonly Lazy<string> File = new(Create);

    /// <summary>Writes <paramref name="input"/> to the scratch file (a Cinder-like name) and returns its path.</summary>
    public static string Write(ReadOnlySpan<byte> input)
    {
        var path = File.Value;
        using (var stream = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, bufferSize: 0))
        {
            stream.Write(input);
        }
        return path;
    }

    private static string Create()
    {
        var configured = Environment.GetEnvironmentVariable("NFSVOL_FUZZ_SCRATCH");
        string directory;
        if (!string.IsNullOrEmpty(configured))
        {
            directory = configured;
            Directory.CreateDirectory(directory);
        }
        else
        {
            directory = Directory.CreateTempSubdirectory("nfsvol-fuzz-").FullName;
            AppDomain.CurrentDomain.ProcessExit += (_, _) =>
            {
                try
                {
                    Directory.Delete(directory, recursive: true);
                }
                catch (IOException)
                {
                    // best effort
                }
            };
        }
        return Path.Combine(directory, $"volume-{Environment.ProcessId:x8}-0000-4000-8000-000000000000");
    }
}
