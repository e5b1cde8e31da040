using System.Text.Json;
using System.Text.Json.Serialization;

namespace NfsVolumeWorker.Status;

/// <summary>
/// What <c>/status.json</c> returns and <c>/status</c> shows: one instance's view, built on request from what the
/// worker already holds (the sweeper's last pass, the executor, the balancer's last round, the status board),
/// plus a <c>statvfs</c> per share. Field names are camelCase in JSON; <c>nfsvol status</c> reads the same records.
/// </summary>
/// <param name="SchemaVersion">1; raised when a field changes meaning or goes away (new fields do not raise it).</param>
/// <param name="Instance">This instance's name (<c>Worker:InstanceName</c>; its AMQP connection name).</param>
/// <param name="StatusUrl">The HTTP base URL this instance advertises in its AMQP connection, if any.</param>
/// <param name="Partitions">This instance's subscription to each partition queue.</param>
/// <param name="Fleet">Who holds which partition, as the balancer read it from the management API at its last
/// round; null when balancing is off or no round has succeeded yet.</param>
/// <param name="Inbox">The deepest volume inboxes (at most <see cref="StatusCollector.InboxListed"/>), deepest
/// first, from the sweeper's last pass.</param>
/// <param name="Running">Operations running in this instance.</param>
/// <param name="Failures">Commands that ended in <c>CommandFailed</c> here in the last hour, newest first.</param>
public sealed record StatusReport(
    int SchemaVersion,
    string Instance,
    string Version,
    DateTimeOffset GeneratedAt,
    DateTimeOffset StartedAt,
    string? StatusUrl,
    int PartitionCount,
    IngressStatus Ingress,
    IReadOnlyList<PartitionStatus> Partitions,
    FleetStatus? Fleet,
    IReadOnlyList<ShareStatus> Shares,
    IReadOnlyList<InboxVolumeStatus> Inbox,
    VolumesStatus Volumes,
    IReadOnlyList<RunningOperationStatus> Running,
    IReadOnlyList<FailedCommandStatus> Failures,
    OsloStatus Oslo)
{
    public const int CurrentSchemaVersion = 1;

    /// <summary>camelCase, enums as strings, nulls written: the form of <c>/status.json</c>.</summary>
    public static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web)
    {
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.CamelCase) },
    };
}

/// <summary>The ingress router's queue on this instance.</summary>
public sealed record IngressStatus(bool Subscribed, DateTimeOffset? RetryingSince);

/// <summary>One partition queue as this instance sees it.</summary>
/// <param name="Active">True when this instance was the partition's active consumer at the balancer's last
/// round, false when another was; null when unknown (balancing off).</param>
/// <param name="RetryingSince">Since when its next command fails to be accepted and is retried, in order.</param>
public sealed record PartitionStatus(int Partition, bool Subscribed, bool? Active, DateTimeOffset? RetryingSince);

/// <summary>The fleet: instances and their partitions, from RabbitMQ's management API.</summary>
/// <param name="ReadAt">When the consumers were read.</param>
/// <param name="Unowned">Partitions without an active consumer.</param>
public sealed record FleetStatus(DateTimeOffset ReadAt, IReadOnlyList<InstanceStatus> Instances, IReadOnlyList<int> Unowned);

/// <summary>One instance of the fleet.</summary>
/// <param name="Active">Partitions it is the active consumer of.</param>
/// <param name="Waiting">Partitions it waits on (subscribed, not active).</param>
/// <param name="StatusUrl">The HTTP base URL it advertises (client property <c>nfsvol_status_url</c>), if any.</param>
public sealed record InstanceStatus(string Instance, IReadOnlyList<int> Active, IReadOnlyList<int> Waiting, string? StatusUrl);

/// <summary>A share: where it is, whether the worker can use it, its space and limits.</summary>
/// <param name="Available">What the worker checks before it touches the share (<c>ShareMarker.IsAvailable</c>).</param>
/// <param name="MountPoint">True when the local directory is the root of a mounted file system.</param>
/// <param name="MustBeMounted">True when it counts as available only while mounted (<c>Shares:RequireMountedShares</c>).</param>
/// <param name="FreeBytes"><c>statvfs</c> f_bavail × f_frsize; null when it cannot be read.</param>
/// <param name="MaxFileSizeBytes">The largest file the file system accepts (probed once per share); null while unknown.</param>
/// <param name="InboxVolumes">Volumes with waiting commands at the sweeper's last pass; null when it could not walk the share.</param>
public sealed record ShareStatus(
    string Export, string LocalPath, bool Available, string? Problem, bool MountPoint, bool MustBeMounted,
    long? FreeBytes, long? SizeBytes, long? MaxFileSizeBytes, int? InboxVolumes, int? InboxCommands);

/// <summary>A volume whose inbox holds waiting commands.</summary>
/// <param name="Running">True when this instance's drain loop for it is running.</param>
public sealed record InboxVolumeStatus(string Share, Guid VolumeId, int Waiting, bool Running);

/// <summary>This instance's drain loops.</summary>
/// <param name="Active">Volumes with a running drain loop.</param>
/// <param name="BackingOff">Volumes whose drain loop failed outside a command and waits out a back-off.</param>
public sealed record VolumesStatus(int Active, IReadOnlyList<BackingOffVolumeStatus> BackingOff);

/// <summary>A volume waiting out a back-off (a share or broker fault).</summary>
public sealed record BackingOffVolumeStatus(string Share, Guid VolumeId, int Attempts, string LastError, DateTimeOffset NextAttemptAt);

/// <summary>An operation running in this instance.</summary>
/// <param name="Phase">The engine's phase of the latest progress report (e.g. copy, merge); null before the first.</param>
/// <param name="Percent">0–100 from the latest progress report; null for an operation that reports none.</param>
/// <param name="SecondsLeft">Estimated from the current phase's progress so far; null while unknown.</param>
public sealed record RunningOperationStatus(
    Guid CommandId, string CommandType, Guid VolumeId, string Share, int Partition, DateTimeOffset StartedAt,
    double ElapsedSeconds, string? Phase, double? Percent, double? SecondsLeft, DateTimeOffset? ProgressAt);

/// <summary>A command that ended in <c>CommandFailed</c> (run, or rejected at acceptance).</summary>
public sealed record FailedCommandStatus(
    DateTimeOffset At, Guid CommandId, string CommandType, Guid VolumeId, string? Share, string ErrorCode, string Message, bool Transient);

/// <summary>The oslo.messaging (cinder-volume RPC) adapter.</summary>
/// <param name="Serving">True once its consumers run and while its connection is open.</param>
/// <param name="Pending">Commands it accepted that wait for their terminal event.</param>
public sealed record OsloStatus(bool Enabled, string? Host, bool Serving, int? Pending);
