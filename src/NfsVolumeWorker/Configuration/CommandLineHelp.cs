using System.Reflection;
using System.Text.RegularExpressions;
using System.Xml.Linq;
using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.QemuImg;
using NfsVolumeWorker.Storage.Shares;

namespace NfsVolumeWorker.Configuration;

/// <summary>
/// <c>--help</c>: every option with its default and meaning. Built from the options classes and their XML
/// docs, so it cannot drift from the code.
/// </summary>
public static partial class CommandLineHelp
{
    public static bool IsRequested(string[] args) => args.Any(a => a is "--help" or "-h" or "-?" or "help");

    public static void Write(TextWriter output)
    {
        output.WriteLine("""
            nfsvolumeworker: snapshots for Cinder-style volume files on NFS shares, driven by RabbitMQ.

            Usage: NfsVolumeWorker [--Section:Option=value ...]

            Every option can also come from appsettings.json, or from an environment variable
            NFSVOL_<Section>__<Option> (e.g. NFSVOL_Broker__Url). Options are checked at start; an invalid
            one stops the worker with exit code 2 and says which.

            Minimal: --Broker:Url=amqp://guest:guest@127.0.0.1:5672/ --Shares:Items:0:Export=/srv/share
            A share as Cinder names it, served from a local directory:
                     --Shares:Items:0:Export=192.0.2.10:/export --Shares:Items:0:Path=/mnt/export
            Or Cinder's own files: --Shares:SharesConfigFile=/etc/cinder/nfs_shares --Shares:MountPointBase=/var/lib/cinder/mnt

            Options:
            """);
        Section(output, BrokerOptions.SectionName, new BrokerOptions());
        Section(output, WorkerOptions.SectionName, new WorkerOptions());
        Section(output, Partitions.PartitionOptions.SectionName, new Partitions.PartitionOptions());
        Section(output, Balancing.BalancingOptions.SectionName, new Balancing.BalancingOptions());
        Section(output, SharesOptions.SectionName, new SharesOptions());
        output.WriteLine("  --Shares:Items:N:Export / :Path / :MountOptions");
        output.WriteLine("      A share: as Cinder names it (host:/export) or a local directory; its local directory; mount options.");
        Section(output, VolumeEngineOptions.SectionName, new VolumeEngineOptions());
        Section(output, QemuImgOptions.SectionName, new QemuImgOptions());
        Section(output, Oslo.OsloOptions.SectionName, new Oslo.OsloOptions());
        output.WriteLine("""
              --Http:Urls  (default http://127.0.0.1:9464)
                  Where /health (JSON), /metrics (Prometheus) and the status page (/status, /status.json) are served. Loopback by default.
              --Http:AdvertisedUrl  (default: the first of Http:Urls, a wildcard host replaced by the host name)
                  The base URL other hosts reach this instance at; advertised to nfsvol status in the AMQP connection.
              --Logging:LogLevel:Default  (default Information)
              --Logging:Console:FormatterName=json
                  Structured JSON log lines (volume id, command id and partition in every line of a command).
              --OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4317
                  Also export traces and metrics over OTLP.

            Exit codes: 0 stopped cleanly, 2 invalid configuration, other: unexpected failure (see the log).
            """);
    }

    private static void Section(TextWriter output, string section, object defaults)
    {
        var docs = LoadDocs(defaults.GetType().Assembly);
        foreach (var p in defaults.GetType().GetProperties(BindingFlags.Public | BindingFlags.Instance).Where(p => p.CanWrite))
        {
            var value = p.GetValue(defaults);
            var shown = value switch
            {
                null => "",
                string s when s.Length == 0 => "",
                _ => $"  (default {value})",
            };
            output.WriteLine($"  --{section}:{p.Name}{shown}");
            if (docs.TryGetValue($"P:{p.DeclaringType!.FullName}.{p.Name}", out var doc))
            {
                output.WriteLine($"      {doc}");
            }
        }
    }

    private static Dictionary<string, string> LoadDocs(Assembly assembly)
    {
        var path = Path.ChangeExtension(assembly.Location, ".xml");
        if (!File.Exists(path))
        {
            return [];
        }
        return XDocument.Load(path).Descendants("member")
            .Where(m => m.Attribute("name") is not null && m.Element("summary") is not null)
            .ToDictionary(m => m.Attribute("name")!.Value, m => Spaces().Replace(string.Concat(m.Element("summary")!.Nodes().Select(Text)), " ").Trim());
    }

    private static string Text(XNode node) => node switch
    {
        XText t => t.Value,
        XElement e when e.Attribute("cref") is { } cref => cref.Value[(cref.Value.LastIndexOf('.') + 1)..],
        XElement e when e.Attribute("langword") is { } word => word.Value,
        XElement e => e.Value,
        _ => "",
    };

    [GeneratedRegex(@"\s+")]
    private static partial Regex Spaces();
}
