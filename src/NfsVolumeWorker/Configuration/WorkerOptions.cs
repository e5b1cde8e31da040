using NfsVolumeWorker.Broker;
using System.ComponentModel.DataAnnotations;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Contracts;

namespace NfsVolumeWorker.Configuration;

/// <summary>How the worker consumes and runs commands. Section <c>Worker</c>.</summary>
public sealed class WorkerOptions
{
    public const string SectionName = "Worker";

    /// <summary>Number of partition queues (N). Every instance and every producer that routes directly must
    /// agree on it. Default 16.</summary>
    [Range(1, 256)]
    public int PartitionCount { get; set; } = PartitionKey.DefaultPartitionCount;

    /// <summary>Volumes whose queued commands this instance runs at once (drain loops: copies, merges, anything that
    /// waited in an inbox). Short commands of idle volumes run inline beside them, one per partition at most. Default 8.</summary>
    [Range(1, 256)]
    public int MaxParallelVolumes { get; set; } = 8;

    /// <summary>Messages a partition consumer or the ingress router may hold unacknowledged (each handles one at
    /// a time, in order; a hand-over returns them to the head of the queue). Default 32.</summary>
    [Range(1, 1000)]
    public int PrefetchCount { get; set; } = 32;

    /// <summary>On SIGTERM, how long running operations may take to finish before they are cancelled
    /// (and resumed by the next owner). Default 5 minutes.</summary>
    public TimeSpan ShutdownTimeout { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>How often the share inboxes are scanned for commands no one is running (after a crash of
    /// another instance). Default 2 seconds.</summary>
    public TimeSpan SweepInterval { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>How long command outcomes are kept to answer redelivered commands. Default 7 days.</summary>
    public TimeSpan OutcomeRetention { get; set; } = TimeSpan.FromDays(7);

    /// <summary>Attempts for a command failing with a transient error before it fails for good. Default 5.</summary>
    [Range(1, 100)]
    public int TransientAttempts { get; set; } = 5;

    /// <summary>First back-off delay between transient attempts (doubles each time). Default 1 second.</summary>
    public TimeSpan TransientBackoff { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>Run short commands (<see cref="Messaging.CommandCatalog.ShortCommands"/>: CreateSnapshot) at once in the
    /// partition consumer, without an inbox entry, when nothing of their volume waits or runs; the message is
    /// acknowledged after the terminal event is confirmed. False: every command goes through the inbox. Default true.</summary>
    public bool InlineShortCommands { get; set; } = true;

    /// <summary>Name of this instance in logs and consumer tags. Default <c>&lt;host&gt;-&lt;pid&gt;</c>.</summary>
    public string InstanceName { get; set; } = $"{Environment.MachineName}-{Environment.ProcessId}";
}

/// <summary>The broker. Section <c>Broker</c>.</summary>
public sealed class BrokerOptions
{
    public const string SectionName = "Broker";

    /// <summary>AMQP URL, e.g. <c>amqp://user:password@host:5672/vhost</c> (<c>amqps://</c> for TLS): credentials,
    /// vhost and the first node tried. Required.</summary>
    [Required(ErrorMessage = "Broker:Url is required (e.g. --Broker:Url=amqp://guest:guest@127.0.0.1:5672/).")]
    public string Url { get; set; } = "";

    /// <summary>The other nodes of the same RabbitMQ cluster, <c>host[:port]</c> separated by commas (e.g.
    /// <c>rabbit-2:5672,rabbit-3:5672</c>); with Url's credentials and vhost. Connections try Url's node first, then
    /// these in order. Empty: Url's node only (or a load balancer in front of the cluster).</summary>
    public string? Hosts { get; set; }

    /// <summary>Longest wait for the broker to confirm a forward of the router or a terminal event; then it is sent
    /// again (same message id) after a back-off. A confirm can be lost with the connection of a node that died.
    /// Default 1 minute.</summary>
    public TimeSpan ConfirmTimeout { get; set; } = TimeSpan.FromMinutes(1);

    /// <summary>RabbitMQ management API base URL (for partition balancing), e.g. <c>http://127.0.0.1:15672/</c>;
    /// empty to disable balancing.</summary>
    public string? ManagementUrl { get; set; }
}

/// <summary>Validates the broker URL and host list beyond presence (<see cref="BrokerAddress.TryParse"/>).</summary>
public sealed class BrokerOptionsValidator : IValidateOptions<BrokerOptions>
{
    public ValidateOptionsResult Validate(string? name, BrokerOptions options)
    {
        if (!BrokerAddress.TryParse(options.Url, options.Hosts, out _, out var error))
        {
            return ValidateOptionsResult.Fail(error);
        }
        if (options.ConfirmTimeout < TimeSpan.FromSeconds(1))
        {
            return ValidateOptionsResult.Fail($"Broker:ConfirmTimeout must be at least 00:00:01 (got {options.ConfirmTimeout}).");
        }
        if (!string.IsNullOrEmpty(options.ManagementUrl) && !Uri.TryCreate(options.ManagementUrl, UriKind.Absolute, out _))
        {
            return ValidateOptionsResult.Fail($"Broker:ManagementUrl '{options.ManagementUrl}' is not an absolute URL.");
        }
        return ValidateOptionsResult.Success;
    }
}

/// <summary>Validates the shares: at least one, each with a usable local directory.</summary>
public sealed class SharesOptionsValidator : IValidateOptions<Storage.Shares.SharesOptions>
{
    public ValidateOptionsResult Validate(string? name, Storage.Shares.SharesOptions options)
    {
        IReadOnlyList<Storage.Shares.Share> shares;
        try
        {
            shares = Storage.Shares.ShareMap.Build(options);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return ValidateOptionsResult.Fail($"Shares:SharesConfigFile cannot be read: {e.Message}");
        }
        if (shares.Count == 0)
        {
            return ValidateOptionsResult.Fail("No share is configured: set Shares:Items:0:Export (a host:/export or a local directory) or Shares:SharesConfigFile.");
        }
        var failures = shares.Where(s => !Directory.Exists(s.LocalPath))
            .Select(s => $"share {s.Export}: {s.LocalPath} does not exist (mount it, or set Shares:Items:N:Path)").ToList();
        return failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);
    }
}
