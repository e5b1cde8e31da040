using System.Collections.Frozen;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Storage.Errors;

namespace NfsVolumeWorker.Messaging;

/// <summary>The contract's <see cref="ErrorCode"/> of each <see cref="StorageErrorCode"/>: the entry of the same name.
/// Storage knows nothing of the contracts, so the two lists are matched by name here, once; a missing entry
/// fails the first use (and a test proves the lists match one to one).</summary>
public static class StorageErrorCodes
{
    private static readonly FrozenDictionary<StorageErrorCode, ErrorCode> ByStorageCode =
        Enum.GetValues<StorageErrorCode>().ToFrozenDictionary(c => c, c => ErrorCodes.Named(c.ToString())
            ?? throw new InvalidOperationException($"StorageErrorCode.{c} has no entry in ErrorCodes."));

    /// <summary>The table entry of <paramref name="code"/>.</summary>
    public static ErrorCode ToErrorCode(this StorageErrorCode code) => ByStorageCode[code];
}
