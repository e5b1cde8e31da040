using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Messaging;
using NfsVolumeWorker.Oslo;
using NfsVolumeWorker.Storage.Inbox;
using NfsVolumeWorker.Storage.Shares;

namespace NfsVolumeWorker.OsloBridge;

/// <summary>A command's terminal event from its outcome record on the share
/// (<c>.nfsvolumeworker/outcomes/&lt;command-id&gt;.json</c>, written by <see cref="Execution.CommandRunner"/>
/// before the event is published): one read, or one failed open when there is none. A record a crash tore
/// before it was durable counts as none: its event never went out.</summary>
public sealed class ShareCommandOutcomeSource(ShareMap shares) : ICommandOutcomeSource
{
    public ITerminalEvent? OutcomeOf(string share, Guid commandId) =>
        CommandOutcomes.Read(shares.Resolve(share), commandId) is { } bytes ? OutcomeRecord.TryFromBytes(bytes)?.ToEvent() : null; // torn by a crash: none yet
}
