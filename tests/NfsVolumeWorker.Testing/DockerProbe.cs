using System.Net;
using System.Net.Sockets;
using System.Text;

namespace NfsVolumeWorker.Testing;

/// <summary>
/// Does a Docker engine answer? Quick and never hanging: these machines have the docker CLI but
/// no engine, and the answer must be "no" within the timeout.
/// </summary>
internal static class DockerProbe
{
    public static async Task<(bool Answers, string Detail)> ProbeAsync(TimeSpan timeout)
    {
        var host = Environment.GetEnvironmentVariable("DOCKER_HOST");
        EndPoint endPoint;
        string where;
        var tls = false;
        if (string.IsNullOrWhiteSpace(host))
        {
            const string socketPath = "/var/run/docker.sock";
            if (!Path.Exists(socketPath))
            {
                return (false, $"{socketPath} does not exist and DOCKER_HOST is not set");
            }

            endPoint = new UnixDomainSocketEndPoint(socketPath);
            where = socketPath;
        }
        else if (Uri.TryCreate(host, UriKind.Absolute, out var uri) && uri.Scheme == "unix")
        {
            endPoint = new UnixDomainSocketEndPoint(uri.AbsolutePath);
            where = host;
        }
        else if (uri is not null && uri.Scheme == "tcp")
        {
            endPoint = new DnsEndPoint(uri.Host, uri.Port > 0 ? uri.Port : 2375);
            where = host;
            tls = Environment.GetEnvironmentVariable("DOCKER_TLS_VERIFY") is { Length: > 0 } and not "0";
        }
        else
        {
            return (false, $"DOCKER_HOST={host} is neither unix:// nor tcp://");
        }

        using var cts = new CancellationTokenSource(timeout);
        try
        {
            using var socket = endPoint is UnixDomainSocketEndPoint
                ? new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified)
                : new Socket(SocketType.Stream, ProtocolType.Tcp);
            await socket.ConnectAsync(endPoint, cts.Token).ConfigureAwait(false);
            if (tls)
            {
                return (true, $"{where} accepts connections (TLS: not pinged)");
            }

            var request = Encoding.ASCII.GetBytes("GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n");
            await socket.SendAsync(request, SocketFlags.None, cts.Token).ConfigureAwait(false);
            var buffer = new byte[256];
            var n = await socket.ReceiveAsync(buffer, SocketFlags.None, cts.Token).ConfigureAwait(false);
            var head = Encoding.ASCII.GetString(buffer, 0, n);
            return head.StartsWith("HTTP/1.", StringComparison.Ordinal) && head.Contains(" 200 ", StringComparison.Ordinal)
                ? (true, $"{where} answers /_ping")
                : (false, $"{where} answered /_ping with \"{head.Split('\n')[0].Trim()}\"");
        }
        catch (OperationCanceledException)
        {
            return (false, $"{where} did not answer within {timeout.TotalSeconds:0.#} s");
        }
        catch (SocketException e)
        {
            return (false, $"{where}: {e.Message}");
        }
    }
}
