using NfsVolumeWorker.Telemetry;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;

namespace NfsVolumeWorker.Partitions;

/// <summary>Moves a message that is not a command to an error queue, publisher-confirmed, with MassTransit's
/// fault headers (<c>MT-Reason</c>, <c>MT-Fault-*</c>), then acks it: nothing on the share was touched.</summary>
internal static class DeadLetters
{
    public static async Task MoveAsync(IChannel channel, string queue, BasicDeliverEventArgs delivery, string reason, bool skipped,
        IEnumerable<KeyValuePair<string, object?>> extraHeaders, CancellationToken cancellationToken)
    {
        var headers = delivery.BasicProperties.Headers is { } original ? new Dictionary<string, object?>(original) : [];
        headers["MT-Reason"] = skipped ? "skip" : "fault";
        headers["MT-Fault-ExceptionType"] = typeof(CommandDecodeException).FullName;
        headers["MT-Fault-Message"] = reason;
        headers["MT-Fault-Timestamp"] = DateTimeOffset.UtcNow.ToString("O", System.Globalization.CultureInfo.InvariantCulture);
        headers["MT-Host-MachineName"] = Environment.MachineName;
        foreach (var (key, value) in extraHeaders)
        {
            headers[key] = value;
        }
        var properties = new BasicProperties
        {
            Persistent = true,
            ContentType = delivery.BasicProperties.ContentType,
            MessageId = delivery.BasicProperties.MessageId,
            Headers = headers,
        };
        await channel.BasicPublishAsync("", queue, mandatory: true, properties, delivery.Body, cancellationToken).ConfigureAwait(false);
        WorkerTelemetry.DeadLettered.Add(1, new KeyValuePair<string, object?>("queue", queue));
        await channel.BasicAckAsync(delivery.DeliveryTag, multiple: false, CancellationToken.None).ConfigureAwait(false);
    }
}
