namespace NfsVolumeWorker.Storage.Engine;

/// <summary>
/// Named points right after each change an operation makes to the disk. A test (or the CLI's
/// <c>NFSVOL_PAUSE_AT_STEP</c>) stops an operation at any of them to prove that every intermediate
/// state is readable and that running the operation again finishes it.
/// </summary>
public static class OperationSteps
{
    public const string CreateVolumeTempWritten = "create-volume:temp-written";
    public const string CreateVolumeRenamed = "create-volume:renamed";

    public const string DeleteVolumeJournaled = "delete-volume:journaled";
    public const string DeleteVolumeFileDeleted = "delete-volume:file-deleted";
    public const string DeleteVolumeInfoDeleted = "delete-volume:info-deleted";

    public const string CreateSnapshotOverlayCreated = "create-snapshot:overlay-created";
    public const string CreateSnapshotOverlayRenamed = "create-snapshot:overlay-renamed";
    public const string CreateSnapshotInfoWritten = "create-snapshot:info-written";

    public const string DeleteSnapshotJournaled = "delete-snapshot:journaled";
    public const string DeleteSnapshotBaseGrown = "delete-snapshot:base-grown";
    public const string DeleteSnapshotCommitted = "delete-snapshot:committed";
    public const string DeleteSnapshotPulledUp = "delete-snapshot:pulled-up";
    public const string DeleteSnapshotLowerReplaced = "delete-snapshot:lower-replaced";
    public const string DeleteSnapshotRebased = "delete-snapshot:rebased";
    public const string DeleteSnapshotInfoWritten = "delete-snapshot:info-written";
    public const string DeleteSnapshotOverlayDeleted = "delete-snapshot:overlay-deleted";

    public const string CloneJournaled = "clone:journaled";
    public const string CloneCopied = "clone:copied";
    public const string CloneResized = "clone:resized";
    public const string CloneRenamed = "clone:renamed";

    public const string RevertOverlayCreated = "revert:overlay-created";
    public const string RevertRenamed = "revert:renamed";

    public const string ExtendResized = "extend:resized";

    /// <summary>Every step, for test matrices.</summary>
    public static IReadOnlyList<string> All { get; } = typeof(OperationSteps).GetFields()
        .Where(f => f.IsLiteral).Select(f => (string)f.GetRawConstantValue()!).ToArray();
}

/// <summary>Told of each step an operation completes. The default does nothing.</summary>
public interface IStepObserver
{
    /// <summary>Called right after <paramref name="stepName"/> changed the disk (and made the change durable).</summary>
    void OnStep(string stepName, Guid volumeId);
}

/// <summary>The observer used outside tests.</summary>
public sealed class NoStepObserver : IStepObserver
{
    public static readonly NoStepObserver Instance = new();

    public void OnStep(string stepName, Guid volumeId) { }
}
