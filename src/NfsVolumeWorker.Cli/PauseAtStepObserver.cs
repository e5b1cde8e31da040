using NfsVolumeWorker.Storage.Engine;

namespace NfsVolumeWorker.Cli;

/// <summary>
/// Test hook for crash tests (environment variable <c>NFSVOL_PAUSE_AT_STEP</c>): when the named step of
/// <see cref="OperationSteps"/> is reached, writes <c>PAUSED &lt;step&gt;</c> to stderr, flushes, and
/// sleeps forever, so that a test can SIGKILL the process at exactly that point. Not for production use.
/// </summary>
public sealed class PauseAtStepObserver : IStepObserver
{
    public const string EnvironmentVariable = "NFSVOL_PAUSE_AT_STEP";

    private readonly string _step;
    private readonly TextWriter _stderr;

    public PauseAtStepObserver(string step, TextWriter stderr)
    {
        if (!OperationSteps.All.Contains(step))
        {
            throw new CliUsageException($"{EnvironmentVariable}='{step}' is not a step; steps: {string.Join(", ", OperationSteps.All)}.");
        }
        _step = step;
        _stderr = stderr;
    }

    public void OnStep(string stepName, Guid volumeId)
    {
        if (stepName != _step)
        {
            return;
        }
        _stderr.WriteLine($"PAUSED {stepName}");
        _stderr.Flush();
        Thread.Sleep(Timeout.Infinite);
    }
}
