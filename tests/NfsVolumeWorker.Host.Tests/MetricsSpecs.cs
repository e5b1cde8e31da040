using System.Diagnostics.Metrics;
using System.Reflection;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using NfsVolumeWorker.Hosting;
using NfsVolumeWorker.Storage.Diagnostics;
using NfsVolumeWorker.Telemetry;
using OpenTelemetry.Metrics;

namespace NfsVolumeWorker.Host.Tests;

/// <summary>The worker's metrics pipeline, built as Program.cs builds it (not started: no broker needed), with an
/// in-memory exporter beside Prometheus.</summary>
public sealed class MetricsSpecs
{
    private static WebApplication BuildWorker(ICollection<MetricSnapshot> exported)
    {
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = [], ContentRootPath = AppContext.BaseDirectory, EnvironmentName = "Production" });
        builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Broker:Url"] = "amqp://127.0.0.1:1/",
            ["Shares:Items:0:Export"] = Path.GetTempPath(),
        });
        builder.AddNfsVolumeWorker();
        builder.Services.ConfigureOpenTelemetryMeterProvider(m => m.AddInMemoryExporter(exported));
        return builder.Build();
    }

    private static IEnumerable<T> StaticFieldsOf<T>() =>
        LogEventIdSpecs.ProductTypes()
            .Where(t => !t.ContainsGenericParameters)
            .SelectMany(t => t.GetFields(BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static | BindingFlags.DeclaredOnly))
            .Where(f => f.FieldType == typeof(T))
            .Select(f => (T)f.GetValue(null)!);

    private static List<Instrument> InstrumentsOf(IReadOnlyCollection<Meter> meters)
    {
        var instruments = new List<Instrument>();
        // Start() reports every instrument created so far; this listener enables none of them.
        using var listener = new MeterListener { InstrumentPublished = (i, _) => { if (meters.Contains(i.Meter)) { instruments.Add(i); } } };
        listener.Start();
        return instruments;
    }

    [Fact]
    public async Task Every_meter_of_the_product_is_exported()
    {
        var meters = StaticFieldsOf<Meter>().ToList();
        Assert.Contains(meters, m => m.Name == "NfsVolumeWorker.Balancing");
        var instruments = InstrumentsOf(meters);
        Assert.Contains(instruments, i => i.Name == "nfsvol.partition.handovers");

        await using var worker = BuildWorker([]);
        _ = worker.Services.GetRequiredService<MeterProvider>(); // starts listening; disposed with the worker

        // An instrument is enabled when a listener, here only OpenTelemetry's, subscribes to its meter.
        var notExported = instruments.Where(i => !i.Enabled).Select(i => $"{i.Meter.Name}: {i.Name}").ToList();
        Assert.True(notExported.Count == 0, "Not exported (meter name not in WorkerTelemetry.ExportedMeters):\n" + string.Join("\n", notExported));
    }

    [Fact]
    public void Every_histogram_in_seconds_has_the_duration_buckets()
    {
        var inSeconds = StaticFieldsOf<Histogram<double>>().Where(h => h.Unit == "s").ToList();
        Assert.Contains(inSeconds, h => h.Name == "nfsvolumeworker.operation.duration");
        Assert.Contains(inSeconds, h => h.Name == "nfsvolumeworker.qemu_img.duration");
        Assert.Contains(inSeconds, h => h.Name == "nfsvolumeworker.command.duration");
        Assert.All(inSeconds, h => Assert.Same(HistogramBoundaries.DurationSeconds, h.Advice));
    }

    [Fact]
    public async Task The_command_duration_is_exported_with_buckets_from_a_millisecond_to_an_hour()
    {
        var exported = new List<MetricSnapshot>();
        await using var worker = BuildWorker(exported);
        var provider = worker.Services.GetRequiredService<MeterProvider>(); // disposed with the worker

        WorkerTelemetry.CommandDuration.Record(0.004);
        // Returns false because the Prometheus reader collects only on a scrape; the in-memory one has collected.
        provider.ForceFlush(10_000);

        var metric = exported.Last(m => m.Name == "nfsvolumeworker.command.duration");
        var buckets = metric.MetricPoints.SelectMany(p =>
        {
            var list = new List<(double Bound, long Count)>();
            foreach (var b in p.GetHistogramBuckets())
            {
                list.Add((b.ExplicitBound, b.BucketCount));
            }
            return list;
        }).ToList();
        var bounds = buckets.Select(b => b.Bound).ToList();
        Assert.Contains(0.001, bounds);
        Assert.Contains(0.005, bounds);
        Assert.Contains(0.05, bounds);
        Assert.Contains(3600, bounds);
        // 4 ms lands in (0.0025, 0.005], not in a first bucket that holds everything.
        Assert.True(buckets.Single(b => b.Bound == 0.005).Count >= 1);
    }

    [Fact]
    public async Task The_runtime_meter_is_exported_so_that_jit_and_gc_work_can_be_told_from_the_workers_own()
    {
        var exported = new List<MetricSnapshot>();
        await using var worker = BuildWorker(exported);
        var provider = worker.Services.GetRequiredService<MeterProvider>(); // disposed with the worker

        provider.ForceFlush(10_000);

        var names = exported.Select(m => m.Name).ToHashSet(StringComparer.Ordinal);
        Assert.Contains("dotnet.jit.compiled_methods", names);
        Assert.Contains("dotnet.gc.collections", names);
        Assert.Contains("dotnet.process.cpu.time", names);
    }
}
