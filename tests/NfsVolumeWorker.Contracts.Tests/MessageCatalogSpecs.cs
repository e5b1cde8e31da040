namespace NfsVolumeWorker.Contracts.Tests;

/// <summary>The catalog is the one list of message types: every command and terminal event type is in it.</summary>
public sealed class MessageCatalogSpecs
{
    private static readonly Type[] Concrete = typeof(MessageCatalog).Assembly.GetTypes().Where(t => t is { IsClass: true, IsAbstract: false }).ToArray();

    [Fact]
    public void Every_command_type_is_in_the_catalog()
    {
        var commands = Concrete.Where(t => t.IsSubclassOf(typeof(VolumeCommand))).ToList();
        Assert.NotEmpty(commands);
        Assert.Equal(commands.OrderBy(t => t.Name), MessageCatalog.Commands.OrderBy(t => t.Name));
    }

    [Fact]
    public void Every_terminal_event_type_is_in_the_catalog_and_found_by_name()
    {
        var events = Concrete.Where(t => typeof(ITerminalEvent).IsAssignableFrom(t)).ToList();
        Assert.Contains(typeof(ChangedExtentsListed), events);
        Assert.Equal(events.OrderBy(t => t.Name), MessageCatalog.TerminalEvents.OrderBy(t => t.Name));
        Assert.All(events, t => Assert.Equal(t, MessageCatalog.TerminalEventNamed(t.Name)));
        Assert.Null(MessageCatalog.TerminalEventNamed("OperationProgressed"));
        Assert.Equal(typeof(GetChangedExtents), MessageCatalog.CommandNamed(nameof(GetChangedExtents)));
    }
}
