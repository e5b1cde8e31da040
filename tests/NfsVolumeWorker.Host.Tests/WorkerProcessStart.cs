using NfsVolumeWorker.Testing;

namespace NfsVolumeWorker.Host.Tests;

/// <summary>How these tests start a worker process: as operators run it, with the options a test adds as
/// <c>--Key=value</c> arguments, HTTP on a free loopback port.</summary>
internal static class WorkerProcessStart
{
    extension(WorkerProcess)
    {
        public static WorkerProcess Start(string name, Uri brokerUrl, Uri? managementUrl, string share, params string[] extra) =>
            WorkerProcess.Start(name, WorkerCommandLine.StartInfo(WorkerCommandLine.DllPath(), brokerUrl, managementUrl, share, name, "http://127.0.0.1:0", extra));
    }
}
