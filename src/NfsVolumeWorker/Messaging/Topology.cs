using System.Globalization;

namespace NfsVolumeWorker.Messaging;

/// <summary>Names of the worker's queues and exchanges on the broker.</summary>
public static class Topology
{
    /// <summary>Where native producers' commands arrive (bound to each command type's exchange).</summary>
    public const string IngressQueue = "nfsvol.ingress";

    /// <summary>Header the router sets on a command it forwards from a redelivered ingress message: the partition
    /// then treats it as a redelivery (its event, if the command finished, was published already), not as a
    /// producer sending the command again (which gets the recorded event again).</summary>
    public const string RedeliveredHeader = "nfsvol-redelivered";

    /// <summary>The exchange MassTransit publishes messages of <paramref name="type"/> to
    /// (<c>NfsVolumeWorker.Contracts:CreateVolume</c>).</summary>
    public static string ExchangeOf(Type type)
    {
        ArgumentNullException.ThrowIfNull(type);
        return $"{type.Namespace}:{type.Name}";
    }

    /// <summary>The send address of partition <paramref name="partition"/>: its fanout exchange, which the
    /// partition's receive endpoint declares and binds to the partition queue.</summary>
    public static Uri PartitionAddress(int partition) => new($"exchange:{Contracts.PartitionKey.QueueName(partition)}");

    /// <summary>The partition number of a partition queue's input address, or -1.</summary>
    public static int PartitionOf(Uri? inputAddress)
    {
        var name = inputAddress?.Segments.LastOrDefault() ?? "";
        const string prefix = "nfsvol.partition.";
        return name.StartsWith(prefix, StringComparison.Ordinal)
            && int.TryParse(name.AsSpan(prefix.Length), NumberStyles.None, CultureInfo.InvariantCulture, out var p) ? p : -1;
    }
}
