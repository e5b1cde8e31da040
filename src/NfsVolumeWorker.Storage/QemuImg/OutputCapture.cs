using System.Text;

namespace NfsVolumeWorker.Storage.QemuImg;

/// <summary>
/// Drains one redirected stream of a child process into a capped buffer. Both pipes are drained at
/// once from the moment the process starts: a child blocked writing a full pipe nobody reads would
/// never exit. Past the cap the text is dropped but the pipe keeps being read.
/// </summary>
internal sealed class OutputCapture
{
    private readonly StringBuilder _text = new();
    private readonly int _limit;
    private bool _truncated;

    private OutputCapture(int limit)
    {
        _limit = limit;
        Completion = Task.CompletedTask;
    }

    /// <summary>Ends when the stream reaches end of file (the child and its children closed it).</summary>
    public Task Completion { get; private set; }

    /// <summary>True when more than the cap arrived.</summary>
    public bool Truncated
    {
        get { lock (_text) { return _truncated; } }
    }

    /// <summary>What was captured so far; safe to call while the drain still runs.</summary>
    public string Text
    {
        get { lock (_text) { return _text.ToString(); } }
    }

    public static OutputCapture Start(StreamReader reader, int limit, ProgressLineParser? parser = null, Action<double>? onProgress = null)
    {
        var capture = new OutputCapture(limit);
        capture.Completion = capture.DrainAsync(reader, parser, onProgress);
        return capture;
    }

    private async Task DrainAsync(StreamReader reader, ProgressLineParser? parser, Action<double>? onProgress)
    {
        var buffer = new char[4096];
        try
        {
            while (true)
            {
                var read = await reader.ReadAsync(buffer.AsMemory()).ConfigureAwait(false);
                if (read == 0)
                {
                    break;
                }
                Append(buffer.AsSpan(0, read));
                if (parser is not null && onProgress is not null)
                {
                    parser.Append(buffer.AsSpan(0, read), onProgress);
                }
            }
            if (parser is not null && onProgress is not null)
            {
                parser.Complete(onProgress);
            }
        }
        catch (IOException)
        {
            // The pipe broke because the child was killed: what we have is all there is.
        }
        catch (ObjectDisposedException)
        {
            // The process object was disposed after a kill whose exit was never confirmed.
        }
    }

    private void Append(ReadOnlySpan<char> chunk)
    {
        lock (_text)
        {
            var room = _limit - _text.Length;
            if (chunk.Length > room)
            {
                _truncated = true;
                chunk = chunk[..Math.Max(room, 0)];
            }
            _text.Append(chunk);
        }
    }
}
