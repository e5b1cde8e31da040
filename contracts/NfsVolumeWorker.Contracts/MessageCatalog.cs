namespace NfsVolumeWorker.Contracts;

/// <summary>
/// The native message types, written once: the commands the worker accepts and the terminal events it answers
/// with. The worker's inbox, publisher and router, the oslo adapter and nfsvol all take their lists from here
/// (a test fails when a command or terminal event type of this assembly is missing).
/// </summary>
public static class MessageCatalog
{
    /// <summary>Every command type the worker accepts.</summary>
    public static readonly IReadOnlyList<Type> Commands =
    [
        typeof(CreateVolume), typeof(DeleteVolume), typeof(CreateSnapshot), typeof(DeleteSnapshot),
        typeof(CreateVolumeFromSnapshot), typeof(CloneVolume), typeof(RevertToSnapshot), typeof(ExtendVolume),
        typeof(GetChangedExtents),
    ];

    /// <summary>Every event that ends a command (success events and <see cref="CommandFailed"/>).</summary>
    public static readonly IReadOnlyList<Type> TerminalEvents =
    [
        typeof(VolumeCreated), typeof(VolumeDeleted), typeof(SnapshotCreated), typeof(SnapshotDeleted),
        typeof(VolumeCloned), typeof(VolumeReverted), typeof(VolumeExtended), typeof(ChangedExtentsListed),
        typeof(CommandFailed),
    ];

    /// <summary>A command type by its name (<c>CreateSnapshot</c>), or null.</summary>
    public static Type? CommandNamed(string name) => Commands.FirstOrDefault(t => t.Name == name);

    /// <summary>A terminal event type by its name (<c>SnapshotCreated</c>), or null.</summary>
    public static Type? TerminalEventNamed(string name) => TerminalEvents.FirstOrDefault(t => t.Name == name);
}
