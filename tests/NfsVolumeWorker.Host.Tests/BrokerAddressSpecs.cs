using NfsVolumeWorker.Broker;
using NfsVolumeWorker.Configuration;

namespace NfsVolumeWorker.Host.Tests;

/// <summary>Broker:Url and Broker:Hosts: the nodes the worker tries, in order, and what is refused at start.</summary>
public sealed class BrokerAddressSpecs
{
    [Fact]
    public void The_URL_alone_is_one_node_with_its_credentials_and_vhost()
    {
        var a = BrokerAddress.Parse("amqp://nfs:s%40cret@rabbit-1:5673/cinder%2Fvols");
        Assert.Equal([new BrokerEndpoint("rabbit-1", 5673)], a.Endpoints);
        Assert.Equal("nfs", a.UserName);
        Assert.Equal("s@cret", a.Password);
        Assert.Equal("cinder/vols", a.VirtualHost);
        Assert.False(a.UseTls);
        Assert.Equal("amqp://nfs:***@rabbit-1:5673/cinder%2Fvols", a.Redacted);
        Assert.Equal(new Uri("amqp://nfs:s%40cret@rabbit-1:5673/cinder%2Fvols"), a.PrimaryUri);
    }

    [Fact]
    public void Hosts_add_the_other_nodes_after_the_URLs_with_default_ports_and_no_repeats()
    {
        var a = BrokerAddress.Parse("amqp://guest:guest@127.0.0.1:25001/", " 127.0.0.1:25002, rabbit-3 ,127.0.0.1:25001,[::1]:25004");
        Assert.Equal(
            [new BrokerEndpoint("127.0.0.1", 25001), new BrokerEndpoint("127.0.0.1", 25002), new BrokerEndpoint("rabbit-3", 5672), new BrokerEndpoint("::1", 25004)],
            a.Endpoints);
        Assert.Equal("/", a.VirtualHost);
        Assert.Equal("amqp://guest:***@127.0.0.1:25001,127.0.0.1:25002,rabbit-3:5672,[::1]:25004/", a.Redacted);
        Assert.Equal(["127.0.0.1:25001", "127.0.0.1:25002", "rabbit-3:5672", "::1:25004"], a.InOrder().All().Select(e => $"{e.HostName}:{e.Port}"));
    }

    [Fact]
    public void With_TLS_every_node_defaults_to_5671_and_is_checked_against_its_own_name()
    {
        var a = BrokerAddress.Parse("amqps://u:p@rabbit-1/", "rabbit-2");
        Assert.True(a.UseTls);
        Assert.Equal([new BrokerEndpoint("rabbit-1", 5671), new BrokerEndpoint("rabbit-2", 5671)], a.Endpoints);
        Assert.All(a.AmqpEndpoints(), e => Assert.True(e.Ssl.Enabled && e.Ssl.ServerName == e.HostName));
    }

    [Fact]
    public void MassTransits_rabbitmq_scheme_means_amqp()
    {
        var a = BrokerAddress.Parse("rabbitmq://u:p@rabbit-1/v");
        Assert.Equal("amqp", a.Scheme);
        Assert.Equal(5672, a.Endpoints[0].Port);
    }

    [Fact]
    public void An_oslo_transport_url_naming_several_nodes_gives_the_first_node_credentials_and_the_rest_as_the_list()
    {
        var a = BrokerAddress.Parse("rabbit://cinder:s3cret@rabbit-1:5672,cinder:s3cret@rabbit-2,other:x@[::1]:5673/openstack", urlSetting: "Oslo:BrokerUrl");

        Assert.Equal("amqp", a.Scheme);
        Assert.Equal(("cinder", "s3cret", "openstack"), (a.UserName, a.Password, a.VirtualHost));
        Assert.Equal([new BrokerEndpoint("rabbit-1", 5672), new BrokerEndpoint("rabbit-2", 5672), new BrokerEndpoint("::1", 5673)], a.Endpoints);
        Assert.Equal("amqp://cinder:***@rabbit-1:5672,rabbit-2:5672,[::1]:5673/openstack", a.Redacted);
    }

    [Fact]
    public void Errors_name_the_setting_the_caller_reads()
    {
        Assert.False(BrokerAddress.TryParse("http://u:p@h/", null, out _, out var error, urlSetting: "Oslo:BrokerUrl"));
        Assert.StartsWith("Oslo:BrokerUrl 'http://u:***@h/'", error, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("http://u:p@rabbit-1/", null, "Broker:Url 'http://u:***@rabbit-1/' is not an amqp://")]
    [InlineData("amqp://u:p@h1:5672,h2:5672/", null, "Broker:Url")]
    [InlineData("amqp://u:p@h1,h2/", null, "More nodes of the same cluster go in Broker:Hosts")]
    [InlineData("", null, "Broker:Url")]
    [InlineData("amqp://u:p@h1/", "h2,,h3", "has an empty entry")]
    [InlineData("amqp://u:p@h1/", "h2:0", "Broker:Hosts entry 'h2:0'")]
    [InlineData("amqp://u:p@h1/", "h2:99999", "Broker:Hosts entry 'h2:99999'")]
    [InlineData("amqp://u:p@h1/", "amqp://h2:5672/", "Broker:Hosts entry 'amqp://h2:5672/'")]
    [InlineData("amqp://u:p@h1/", "u:p@h2", "Broker:Hosts entry '***@h2'")]
    [InlineData("amqp://u:p@h1/", "::1:5672", "Broker:Hosts entry '::1:5672'")]
    [InlineData("amqp://u:p@h1/", "h 2", "Broker:Hosts entry 'h 2'")]
    public void Invalid_settings_are_refused_at_start_saying_which_and_never_showing_the_password(string url, string? hosts, string expected)
    {
        var result = new BrokerOptionsValidator().Validate(null, new BrokerOptions { Url = url, Hosts = hosts });
        Assert.True(result.Failed);
        Assert.Contains(expected, result.FailureMessage, StringComparison.Ordinal);
        Assert.DoesNotContain(":p@", result.FailureMessage, StringComparison.Ordinal);
    }
}
