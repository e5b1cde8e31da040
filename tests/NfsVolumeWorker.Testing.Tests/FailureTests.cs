using System.Diagnostics;

namespace NfsVolumeWorker.Testing.Tests;

public sealed class FailureTests
{
    [Fact]
    public async Task Without_rabbitmq_server_acquiring_a_broker_fails_loudly_naming_every_way_tried_and_the_install_command()
    {
        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => RabbitMqBroker.AcquireAsync(
            new RabbitMqBrokerOptions { Mode = RabbitMqBrokerMode.Private, RabbitMqBinDirectory = "/nonexistent/rabbitmq/bin" }));

        Assert.Contains("(a)", error.Message, StringComparison.Ordinal);
        Assert.Contains(RabbitMqBrokerOptions.UrlVariable, error.Message, StringComparison.Ordinal);
        Assert.Contains("(b)", error.Message, StringComparison.Ordinal);
        Assert.Contains("(c) private rabbitmq-server: rabbitmq-server is not installed", error.Message, StringComparison.Ordinal);
        Assert.Contains("apt-get install -y rabbitmq-server", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_dedicated_broker_without_rabbitmq_server_fails_loudly()
    {
        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => RabbitMqBroker.StartDedicatedAsync(
            new RabbitMqBrokerOptions { RabbitMqBinDirectory = "/nonexistent/rabbitmq/bin" }));
        Assert.Contains("apt-get install -y rabbitmq-server", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_script_refuses_to_start_without_rabbitmq_server_and_says_how_to_install_it()
    {
        var script = new PrivateBrokerScript(PrivateBrokerScript.DefaultPath(RepositoryRoot.Find()), "/nonexistent/rabbitmq/bin");
        var dir = Path.Combine(Path.GetTempPath(), "nfsvol-rabbitmq-missing-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            var result = await script.RunAsync(TimeSpan.FromSeconds(30), "start", dir);
            Assert.NotEqual(0, result.ExitCode);
            Assert.Contains("apt-get install -y rabbitmq-server", result.StandardError, StringComparison.Ordinal);
            Assert.Equal("", result.StandardOutput);
        }
        finally
        {
            if (Directory.Exists(dir))
            {
                Directory.Delete(dir, recursive: true);
            }
        }
    }

    [Fact]
    public async Task The_docker_probe_answers_within_its_timeout()
    {
        var sw = Stopwatch.StartNew();
        var (_, detail) = await DockerProbe.ProbeAsync(TimeSpan.FromMilliseconds(500));
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(3), $"{sw.Elapsed}: {detail}");
        Assert.False(string.IsNullOrWhiteSpace(detail));
    }

    [Fact]
    public void Options_from_the_environment_refuse_an_unknown_mode()
    {
        var e = Assert.Throws<InvalidOperationException>(() =>
            RabbitMqBrokerOptions.FromEnvironment(name => name == RabbitMqBrokerOptions.ModeVariable ? "sometimes" : null));
        Assert.Contains("expected url, container or private", e.Message, StringComparison.Ordinal);
    }
}
