using System.Collections.Frozen;
using NfsVolumeWorker.Contracts;

namespace NfsVolumeWorker.Messaging;

/// <summary>The native command types the worker accepts, by name (the name is stored in inbox entries).</summary>
public static class CommandCatalog
{
    public static readonly FrozenDictionary<string, Type> ByName = MessageCatalog.Commands.ToFrozenDictionary(t => t.Name, StringComparer.Ordinal);

    /// <summary>The command types short enough to run inline in the partition consumer, while it holds the message
    /// (<see cref="Execution.VolumeExecutor.TryRunInlineAsync"/>): a few milliseconds of metadata work whatever the
    /// volume's size. Never a copy or a merge: those would hold the partition, and its other volumes, behind them.</summary>
    public static readonly FrozenSet<Type> ShortCommands = new[] { typeof(CreateSnapshot) }.ToFrozenSet();

    /// <summary>True when <paramref name="command"/> is of a <see cref="ShortCommands"/> type.</summary>
    public static bool IsShort(VolumeCommand command) => ShortCommands.Contains(command.GetType());
}
