using System.Collections;
using System.Globalization;

namespace NfsVolumeWorker.Storage.Diagnostics;

/// <summary>A log scope of named values (<c>CommandId</c>, <c>VolumeId</c>, ...): structured for JSON logs (each
/// value a property) and readable in text logs (<c>CommandId:…, VolumeId:…</c>), where a dictionary would print
/// its type name.</summary>
public sealed class LogScope(params KeyValuePair<string, object?>[] values) : IReadOnlyList<KeyValuePair<string, object?>>
{
    public int Count => values.Length;

    public KeyValuePair<string, object?> this[int index] => values[index];

    public IEnumerator<KeyValuePair<string, object?>> GetEnumerator() => ((IEnumerable<KeyValuePair<string, object?>>)values).GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    public override string ToString() =>
        string.Join(", ", values.Select(v => string.Create(CultureInfo.InvariantCulture, $"{v.Key}:{v.Value}")));
}
