using NfsVolumeWorker.Broker;
using MassTransit;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Balancing;
using NfsVolumeWorker.Configuration;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Execution;
using NfsVolumeWorker.Health;
using NfsVolumeWorker.Messaging;
using NfsVolumeWorker.Oslo;
using NfsVolumeWorker.OsloBridge;
using NfsVolumeWorker.Partitions;
using NfsVolumeWorker.Status;
using NfsVolumeWorker.Storage.Diagnostics;
using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.QemuImg;
using NfsVolumeWorker.Storage.Shares;
using NfsVolumeWorker.Telemetry;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;

namespace NfsVolumeWorker.Hosting;

/// <summary>Wires the worker: options, storage engine, bus and topology, executor, health, telemetry.</summary>
public static class WorkerHostExtensions
{
    public static WebApplicationBuilder AddNfsVolumeWorker(this WebApplicationBuilder builder)
    {
        builder.Configuration.AddEnvironmentVariables("NFSVOL_");
        var services = builder.Services;

        services.AddOptions<WorkerOptions>().BindConfiguration(WorkerOptions.SectionName).ValidateDataAnnotations().ValidateOnStart();
        services.AddOptions<BrokerOptions>().BindConfiguration(BrokerOptions.SectionName).ValidateDataAnnotations().ValidateOnStart();
        services.AddSingleton<IValidateOptions<BrokerOptions>, BrokerOptionsValidator>();
        services.AddOptions<SharesOptions>().BindConfiguration(SharesOptions.SectionName).ValidateDataAnnotations().ValidateOnStart();
        services.AddSingleton<IValidateOptions<SharesOptions>, SharesOptionsValidator>();
        services.AddOptions<VolumeEngineOptions>().BindConfiguration(VolumeEngineOptions.SectionName).ValidateDataAnnotations().ValidateOnStart();
        services.AddOptions<QemuImgOptions>().BindConfiguration(QemuImgOptions.SectionName).ValidateOnStart();
        services.Configure<HostOptions>(o =>
        {
            // The executor's own grace period decides; the host must not cut it short.
            o.ShutdownTimeout = builder.Configuration.GetValue($"{WorkerOptions.SectionName}:{nameof(WorkerOptions.ShutdownTimeout)}", TimeSpan.FromMinutes(5)) + TimeSpan.FromSeconds(45);
        });

        // JSON console lines (Logging:Console:FormatterName=json) carry the scopes (CommandId, VolumeId, Partition) and a
        // UTC timestamp unless Logging:Console:FormatterOptions says otherwise: the console logger gives the older
        // Logging:Console:IncludeScopes of appsettings.json to its default formatter only, and JSON has no timestamp
        // by default (JsonLogTests).
        var consoleFormat = builder.Configuration.GetSection("Logging:Console:FormatterOptions");
        services.Configure<Microsoft.Extensions.Logging.Console.JsonConsoleFormatterOptions>(o =>
        {
            o.IncludeScopes = consoleFormat.GetValue("IncludeScopes", true);
            o.UseUtcTimestamp = consoleFormat.GetValue("UseUtcTimestamp", true);
            o.TimestampFormat = consoleFormat["TimestampFormat"] ?? "yyyy'-'MM'-'dd'T'HH':'mm':'ss'.'fff'Z'";
        });

        services.AddSingleton(sp => new ShareMap(sp.GetRequiredService<IOptions<SharesOptions>>()));
        services.AddSingleton<QemuImgRunner>();
        services.AddSingleton<VolumeEngine>();
        services.AddSingleton<BrokerWaits>();
        services.AddSingleton<EventPublisher>();
        services.AddSingleton<CommandRunner>();
        services.AddSingleton<VolumeExecutor>();
        services.AddSingleton<CommandAcceptor>();
        services.AddOptions<PartitionOptions>().BindConfiguration(PartitionOptions.SectionName).ValidateOnStart();
        services.AddSingleton<IValidateOptions<PartitionOptions>, PartitionOptionsValidator>();

        // Hosted services start in this order and stop in reverse, after every IHostedLifecycleService's
        // StoppingAsync. So: the partition topology exists before the ingress router forwards into it; at
        // SIGTERM the ingress queue and the partitions are released first (StoppingAsync: no new commands here,
        // the other instances take them in order), then running operations drain while the bus can still
        // publish their events, and the bus stops last.
        services.AddSingleton<IngressRouter>();
        services.AddSingleton<PartitionSubscriptions>();
        services.AddHostedService(sp => sp.GetRequiredService<PartitionSubscriptions>());

        services.AddMassTransit(x =>
        {
            x.UsingRabbitMq((context, cfg) =>
            {
                var broker = context.GetRequiredService<IOptions<BrokerOptions>>().Value;
                var worker = context.GetRequiredService<IOptions<WorkerOptions>>().Value;
                var address = BrokerAddress.Parse(broker.Url, broker.Hosts);
                var primary = address.Endpoints[0];
                cfg.Host(primary.Host, (ushort)primary.Port, address.VirtualHost, h =>
                {
                    h.Username(address.UserName);
                    h.Password(address.Password);
                    h.PublisherConfirmation = true;
                    h.ConnectionName(worker.InstanceName);
                    if (address.UseTls)
                    {
                        h.UseSsl(s => s.ServerName = primary.Host);
                    }
                    if (address.Endpoints.Count > 1)
                    {
                        // Every node, the URL's first: MassTransit moves to the next one when its node goes away.
                        h.UseCluster(c =>
                        {
                            foreach (var node in address.Endpoints)
                            {
                                c.Node(node.ToString());
                            }
                        });
                    }
                });

                // The bus only publishes (events, and the oslo bridge's commands). The ingress and partition
                // queues are consumed by PartitionSubscriptions on channels it owns: a MassTransit receive
                // endpoint stops with basic.cancel, and on RabbitMQ 3.10 the next single active consumer is then
                // activated at once and gets newer messages before the stopping one's unacknowledged ones, which
                // reordered commands of one volume at a router hand-over (ShutdownTests).
            });
        });

        services.AddHostedService<ExecutorLifetime>();
        services.AddSingleton<InboxBacklog>();
        services.AddSingleton<StatusBoard>();
        services.AddSingleton<StatusAddress>();
        services.AddSingleton<StatusCollector>();
        services.AddHostedService<InboxSweeper>();
        services.AddHostedService<OperatorMetrics>();
        services.AddHostedService<StartupReport>();

        // The cinder-volume RPC server (oslo.messaging), when Oslo:Enabled is true.
        services.AddOsloBridge(builder.Configuration);
        services.AddPartitionBalancing();

        services.AddHealthChecks()
            .AddCheck<ShareHealthCheck>("shares", tags: ["ready"])
            .AddCheck<PartitionHealthCheck>("partitions", tags: ["ready"])
            .AddCheck<BrokerHealthCheck>("broker", tags: ["ready"])
            .AddCheck<QemuImgHealthCheck>("qemu-img", tags: ["ready"])
            .AddCheck<DrainHealthCheck>("volumes", tags: ["ready"]);

        services.AddOpenTelemetry()
            .ConfigureResource(r => r.AddService("nfsvolumeworker", serviceInstanceId: builder.Configuration[$"{WorkerOptions.SectionName}:InstanceName"]))
            .WithTracing(t =>
            {
                t.AddSource(WorkerTelemetry.SourceName, StorageTelemetry.SourceName, OsloTelemetry.SourceName, "MassTransit");
                if (!string.IsNullOrEmpty(builder.Configuration["OTEL_EXPORTER_OTLP_ENDPOINT"]))
                {
                    t.AddOtlpExporter();
                }
            })
            .WithMetrics(m =>
            {
                m.AddMeter(WorkerTelemetry.ExportedMeters);
                m.AddRuntimeInstrumentation();
                m.AddPrometheusExporter();
                if (!string.IsNullOrEmpty(builder.Configuration["OTEL_EXPORTER_OTLP_ENDPOINT"]))
                {
                    m.AddOtlpExporter();
                }
            });

        builder.WebHost.UseUrls(builder.Configuration["Http:Urls"] ?? WorkerHttp.DefaultUrls);
        return builder;
    }

    public static WebApplication MapWorkerEndpoints(this WebApplication app)
    {
        app.MapHealthChecks("/health", new Microsoft.AspNetCore.Diagnostics.HealthChecks.HealthCheckOptions
        {
            ResponseWriter = HealthReportWriter.WriteAsync,
        });
        app.MapPrometheusScrapingEndpoint("/metrics");
        // The status page and the same data as JSON (docs/status.md); nfsvol status reads the JSON.
        app.MapGet("/status", (StatusCollector status) => Results.Content(StatusPage.Render(status.Collect()), "text/html; charset=utf-8"));
        app.MapGet("/status.json", (StatusCollector status) => Results.Json(status.Collect(), StatusReport.Json));
        return app;
    }
}

/// <summary>Checks qemu-img before anything starts (a worker that cannot run it takes no command), and logs one line
/// once everything started saying what this instance serves.</summary>
internal sealed class StartupReport(ShareMap shares, QemuImgRunner qemuImg, IOptions<WorkerOptions> worker, IOptions<BrokerOptions> broker, ILogger<StartupReport> logger) : IHostedLifecycleService
{
    private string _qemuImgVersion = "";

    public async Task StartingAsync(CancellationToken cancellationToken) =>
        _qemuImgVersion = await qemuImg.VersionAsync(cancellationToken).ConfigureAwait(false);

    public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StartedAsync(CancellationToken cancellationToken)
    {
        WorkerLog.Started(logger, worker.Value.InstanceName, shares.All.Count,
            string.Join(", ", shares.All.Select(s => $"{s.Export} -> {s.LocalPath}")), worker.Value.PartitionCount,
            BrokerAddress.Parse(broker.Value.Url, broker.Value.Hosts).Redacted, _qemuImgVersion);
        return Task.CompletedTask;
    }

    public Task StoppingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StoppedAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
