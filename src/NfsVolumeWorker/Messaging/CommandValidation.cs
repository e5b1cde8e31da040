using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Shares;

namespace NfsVolumeWorker.Messaging;

/// <summary>
/// What makes a command unusable before it reaches the engine: missing or all-zero ids, enum values that are
/// not defined (a numeric <c>"format": 7</c> decodes without complaint), sizes the share's file system or
/// qcow2 cannot hold. Checked when a command is accepted and again before it runs (an older worker may have
/// accepted it). The engine checks the rest (and the sizes again, where it knows the image format).
/// </summary>
public static class CommandValidation
{
    /// <summary>The first problem of the command's own fields, or null; needs no share.</summary>
    public static string? FieldProblem(VolumeCommand command) => command switch
    {
        _ when command.CommandId == Guid.Empty => "the command has no commandId (a UUID chosen by the sender, not all zeros)",
        _ when command.VolumeId == Guid.Empty => "the command has no volumeId (a UUID, not all zeros)",
        _ when Undefined(command.BaseFormat) => $"baseFormat {(int)command.BaseFormat!} is not a format (raw or qcow2)",
        CreateSnapshot { SnapshotId: var s } when s == Guid.Empty => "snapshotId is missing",
        DeleteSnapshot { SnapshotId: var s } when s == Guid.Empty => "snapshotId is missing",
        RevertToSnapshot { SnapshotId: var s } when s == Guid.Empty => "snapshotId is missing",
        CreateVolumeFromSnapshot c when c.SnapshotId == Guid.Empty || c.NewVolumeId == Guid.Empty => "snapshotId and newVolumeId are required",
        CloneVolume { NewVolumeId: var n } when n == Guid.Empty => "newVolumeId is missing",
        GetChangedExtents { FromSnapshotId: var f, ToSnapshotId: var t } when f == Guid.Empty || t == Guid.Empty
            => "fromSnapshotId and toSnapshotId are snapshot ids (UUIDs, not all zeros) or absent (base, active)",
        CreateVolume { Format: var f } when Undefined(f) => $"format {(int)f!} is not a format (raw or qcow2)",
        CreateVolumeFromSnapshot { TargetFormat: var f } when Undefined(f) => $"targetFormat {(int)f!} is not a format (raw or qcow2)",
        CloneVolume { TargetFormat: var f } when Undefined(f) => $"targetFormat {(int)f!} is not a format (raw or qcow2)",
        CreateVolume { SizeBytes: <= 0 } => "sizeBytes must be positive",
        CreateSnapshot { VolumeSizeBytes: <= 0 } => "volumeSizeBytes must be positive when given",
        ExtendVolume { NewSizeBytes: <= 0 } => "newSizeBytes must be positive",
        CreateVolumeFromSnapshot { NewSizeBytes: <= 0 } => "newSizeBytes must be positive when given",
        CloneVolume { NewSizeBytes: <= 0 } => "newSizeBytes must be positive when given",
        _ => null,
    };

    /// <summary>The first problem of the command on <paramref name="share"/> (its fields, then its sizes), or null.</summary>
    public static string? Problem(VolumeCommand command, Share share, VolumeEngineOptions engine)
    {
        ArgumentNullException.ThrowIfNull(engine);
        if (FieldProblem(command) is { } problem)
        {
            return problem;
        }
        var defaultFormat = engine.Qcow2Volumes ? ImageFormat.Qcow2 : ImageFormat.Raw;
        return command switch
        {
            CreateVolume c => VolumeSizeLimit.Problem(share, c.SizeBytes, ToImageFormat(c.Format) ?? defaultFormat, "sizeBytes"),
            // The image that grows is the active one; its format is read later, so both limits apply here.
            ExtendVolume c => VolumeSizeLimit.Problem(share, c.NewSizeBytes, null, "newSizeBytes"),
            CreateSnapshot { VolumeSizeBytes: { } n } => VolumeSizeLimit.Problem(share, n, ImageFormat.Qcow2, "volumeSizeBytes"),
            // A clone onto another share is checked against that share by the engine.
            CreateVolumeFromSnapshot { NewSizeBytes: { } n, TargetShare: null } c => VolumeSizeLimit.Problem(share, n, ToImageFormat(c.TargetFormat) ?? defaultFormat, "newSizeBytes"),
            CloneVolume { NewSizeBytes: { } n, TargetShare: null } c => VolumeSizeLimit.Problem(share, n, ToImageFormat(c.TargetFormat) ?? defaultFormat, "newSizeBytes"),
            _ => null,
        };
    }

    /// <summary>The engine's format for a contract format (null stays null: the engine's default or the header's).</summary>
    public static ImageFormat? ToImageFormat(VolumeFormat? format) => format switch
    {
        VolumeFormat.Raw => ImageFormat.Raw,
        VolumeFormat.Qcow2 => ImageFormat.Qcow2,
        null => null,
        _ => throw new ArgumentOutOfRangeException(nameof(format), format, "not a volume format"),
    };

    private static bool Undefined(VolumeFormat? format) => format is { } f && !Enum.IsDefined(f);
}
