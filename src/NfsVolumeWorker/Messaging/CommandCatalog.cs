using System.Collections.Frozen;
using NfsVolumeWorker.Contracts;

namespace NfsVolumeWorker.Messaging;

/// <summary>The native command types the worker accepts, by name (the name is stored in inbox entries).</summary>
public static class CommandCatalog
{
    public static readonly FrozenDictionary<string, Type> ByName = MessageCatalog.Commands.ToFrozenDictionary(t => t.Name, StringComparer.Ordinal);

    /// <summary>The command types short enough to run inline in the partition consumer, while it holds the message
    /// (<see cref="Execution.VolumeExecutor.TryRunInlineAsync"/>): a few milliseconds of metadata work whatever the
    /// volume's size. Never a copy or a merge: those would hold the partition, and its other volumes, behind them. A
    /// <c>DeleteSnapshot</c> runs inline only when the engine finds it a metadata-only edit (the newest snapshot, its
    /// overlay mapping no data); any other delete is not started and goes to the inbox
    /// (<see cref="Storage.Engine.DeleteSnapshotRequest.OnlyIfNothingToMove"/>). A <c>CreateVolume</c> is short while
    /// volumes are sparse (<see cref="Storage.Engine.VolumeEngineOptions.SparsedVolumes"/>: a raw file's length set, or a
    /// qcow2 header written); a preallocated one writes its whole size on a share without fallocate (NFS before 4.2).</summary>
    public static readonly FrozenSet<Type> ShortCommands = new[] { typeof(CreateSnapshot), typeof(DeleteSnapshot), typeof(CreateVolume) }.ToFrozenSet();

    /// <summary>True when <paramref name="command"/> is of a <see cref="ShortCommands"/> type and short with these engine options.</summary>
    public static bool IsShort(VolumeCommand command, Storage.Engine.VolumeEngineOptions engine) =>
        ShortCommands.Contains(command.GetType()) && (command is not CreateVolume || engine.SparsedVolumes);
}
