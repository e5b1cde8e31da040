using System.Globalization;
using System.Text;

namespace NfsVolumeWorker.Contracts;

/// <summary>
/// The stable function that maps a volume to one of N partition queues. Every command for one volume
/// goes to the same partition, before and after a broker restart (unlike RabbitMQ's consistent-hash
/// exchange), so one consumer sees them in order.
/// </summary>
/// <remarks>
/// Definition (reimplement it anywhere): take the volume id as a lower-case hyphenated UUID string
/// (36 ASCII characters, e.g. <c>0f6a2e8c-5d1b-4c1e-9a57-2b9d2f6c1e10</c>), compute the 64-bit FNV-1a hash
/// of its bytes (offset basis 14695981039346656037, prime 1099511628211), and take it modulo N.
/// Changing N moves volumes between partitions: drain the queues before changing it.
/// </remarks>
public static class PartitionKey
{
    /// <summary>The default number of partitions.</summary>
    public const int DefaultPartitionCount = 16;

    private const ulong FnvOffsetBasis = 14695981039346656037UL;
    private const ulong FnvPrime = 1099511628211UL;

    /// <summary>The partition (0..<paramref name="partitionCount"/>-1) of <paramref name="volumeId"/>.</summary>
    /// <param name="volumeId">The partition key: the volume whose chain the command reads or changes (for a clone, the source).</param>
    /// <param name="partitionCount">N, at least 1.</param>
    public static int PartitionOf(Guid volumeId, int partitionCount)
    {
        if (partitionCount < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(partitionCount), partitionCount, "There must be at least one partition.");
        }
        Span<byte> text = stackalloc byte[36];
        Encoding.ASCII.GetBytes(volumeId.ToString("D", CultureInfo.InvariantCulture), text);
        var hash = FnvOffsetBasis;
        foreach (var b in text)
        {
            hash ^= b;
            hash *= FnvPrime;
        }
        return (int)(hash % (ulong)partitionCount);
    }

    /// <summary>The name of partition queue <paramref name="partition"/>: <c>nfsvol.partition.07</c>.</summary>
    /// <param name="partition">0-based partition number.</param>
    public static string QueueName(int partition) => $"nfsvol.partition.{partition.ToString("D2", CultureInfo.InvariantCulture)}";
}
