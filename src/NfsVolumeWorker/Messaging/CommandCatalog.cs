using System.Collections.Frozen;
using NfsVolumeWorker.Contracts;

namespace NfsVolumeWorker.Messaging;

/// <summary>The native command types the worker accepts, by name (the name is stored in inbox entries).</summary>
public static class CommandCatalog
{
    public static readonly FrozenDictionary<string, Type> ByName = MessageCatalog.Commands.ToFrozenDictionary(t => t.Name, StringComparer.Ordinal);
}
