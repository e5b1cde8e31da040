using NfsVolumeWorker.Storage.Errors;

namespace NfsVolumeWorker.Storage.Layout;

/// <summary>Parsing of the ids that name files: only canonical UUIDs are accepted.</summary>
public static class Ids
{
    /// <summary>Parses <paramref name="value"/> as a UUID, or throws <see cref="StorageErrorCode.InvalidRequest"/> naming <paramref name="what"/>.</summary>
    public static Guid Parse(string? value, string what)
    {
        if (value is null || !Guid.TryParseExact(value.Trim(), "D", out var id) || id == Guid.Empty)
        {
            throw new StorageException(StorageErrorCode.InvalidRequest,
                $"The {what} must be a UUID like 0f6a2e8c-5d1b-4c1e-9a57-2b9d2f6c1e10; got '{Printable(value)}'.");
        }
        return id;
    }

    /// <summary>Rejects the empty UUID, which no Cinder object has.</summary>
    public static Guid Require(Guid id, string what) => id == Guid.Empty
        ? throw new StorageException(StorageErrorCode.InvalidRequest, $"The {what} must not be the empty UUID.")
        : id;

    private static string Printable(string? value) =>
        value is null ? "(none)" : value.Length > 80 ? string.Concat(value.AsSpan(0, 80), "...") : value;
}
