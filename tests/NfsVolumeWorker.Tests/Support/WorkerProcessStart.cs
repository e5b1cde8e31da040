using NfsVolumeWorker.Testing;

namespace NfsVolumeWorker.Tests.Support;

/// <summary>How these tests start a worker process: the settings every test worker shares (<see cref="WorkerSettings"/>)
/// and single-line console logs with a timestamp, unless a test chooses its own log format.</summary>
public static class WorkerProcessStart
{
    extension(WorkerProcess)
    {
        public static WorkerProcess Start(Uri brokerUri, string shareDirectory, string instanceName, IDictionary<string, string?>? extra = null)
        {
            var start = WorkerCommandLine.StartInfo(WorkerCommandLine.DllPath(), WorkerSettings.For(brokerUri, shareDirectory, instanceName, extra));
            if (extra?.ContainsKey("Logging:Console:FormatterName") != true)
            {
                start.Environment["Logging__Console__FormatterName"] = "simple";
                start.Environment["Logging__Console__FormatterOptions__SingleLine"] = "true";
                start.Environment["Logging__Console__FormatterOptions__TimestampFormat"] = "HH:mm:ss.fff ";
            }
            return WorkerProcess.Start(instanceName, start);
        }
    }
}
