using System.Diagnostics;
using NfsVolumeWorker.Storage.Engine;

namespace NfsVolumeWorker.Benchmarks;

/// <summary>Times the phases of engine operations from the steps the engine reports (each step is
/// reported right after its change was made durable), to say where an operation's time goes.</summary>
internal sealed class StepClock : IStepObserver
{
    private readonly Dictionary<string, List<double>> _phases = new(StringComparer.Ordinal);
    private readonly List<string> _order = [];
    private long _last;
    private string _previous = "start";

    /// <summary>Marks the start of an operation.</summary>
    public void Start()
    {
        _last = Stopwatch.GetTimestamp();
        _previous = "start";
    }

    public void OnStep(string stepName, Guid volumeId)
    {
        Record($"{_previous} -> {stepName}");
        _previous = stepName;
    }

    /// <summary>Marks the end of an operation (after its last step: the clean-up that follows).</summary>
    public void Stop() => Record($"{_previous} -> end");

    private void Record(string phase)
    {
        var now = Stopwatch.GetTimestamp();
        if (!_phases.TryGetValue(phase, out var list))
        {
            _phases[phase] = list = [];
            _order.Add(phase);
        }
        list.Add(Stopwatch.GetElapsedTime(_last, now).TotalSeconds);
        _last = now;
    }

    /// <summary>"phase median, ..." in the order the phases first occurred.</summary>
    public string Describe() => string.Join("; ", _order.Select(p =>
    {
        var sorted = _phases[p].Order().ToArray();
        return $"{p} {Results.Ms(sorted[sorted.Length / 2])}";
    }));
}
