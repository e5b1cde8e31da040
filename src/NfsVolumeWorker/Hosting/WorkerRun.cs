using Microsoft.Extensions.Options;
using NfsVolumeWorker.Telemetry;

namespace NfsVolumeWorker.Hosting;

/// <summary>
/// Runs the worker to its exit code: 0 stopped, 1 could not start, 2 invalid configuration.
/// </summary>
/// <remarks>
/// The generic host leaves the services that had started running when a later one fails to start, and a stop signal
/// during the start is such a failure. The partition consumers start first: left running, they kept the ingress
/// queue's single active consumer and the commands they had taken while the host was being disposed, and no other
/// instance got them (ShutdownTests). So a failed start stops what started, exactly as a stop signal would, before
/// the process exits.
/// </remarks>
public static class WorkerRun
{
    public const int Stopped = 0;
    public const int StartFailed = 1;
    public const int InvalidConfiguration = 2;

    /// <summary>Builds the host from <paramref name="builder"/>, runs it until it stops, and returns the exit code.</summary>
    public static async Task<int> RunAsync(WebApplicationBuilder builder)
    {
        ArgumentNullException.ThrowIfNull(builder);
        WebApplication app;
        try
        {
            app = builder.Build();
            app.MapWorkerEndpoints(); // resolves the health checks, and with them options that may be invalid
        }
        catch (OptionsValidationException invalid)
        {
            return await InvalidAsync(invalid).ConfigureAwait(false);
        }
        await using (app.ConfigureAwait(false))
        {
            try
            {
                await app.StartAsync().ConfigureAwait(false);
            }
            catch (Exception e)
            {
                return await StopAfterFailedStartAsync(app, e).ConfigureAwait(false);
            }
            await app.WaitForShutdownAsync().ConfigureAwait(false);
            return Stopped;
        }
    }

    private static async Task<int> StopAfterFailedStartAsync(WebApplication app, Exception why)
    {
        var logger = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(WorkerRun).FullName!);
        var stopRequested = app.Lifetime.ApplicationStopping.IsCancellationRequested;
        try
        {
            // Bounded by HostOptions.ShutdownTimeout, as any stop.
            await app.StopAsync().ConfigureAwait(false);
        }
        catch (Exception e)
        {
            WorkerLog.StopAfterFailedStartFailed(logger, e.Message);
        }
        switch (why)
        {
            case OptionsValidationException invalid:
                return await InvalidAsync(invalid).ConfigureAwait(false);
            case OperationCanceledException when stopRequested:
                WorkerLog.StoppedWhileStarting(logger);
                return Stopped;
            default:
                WorkerLog.StartFailed(logger, why.Message);
                await Console.Error.WriteLineAsync($"nfsvolumeworker: could not start: {why.Message}").ConfigureAwait(false);
                return StartFailed;
        }
    }

    private static async Task<int> InvalidAsync(OptionsValidationException invalid)
    {
        await Console.Error.WriteLineAsync(
            $"nfsvolumeworker: invalid configuration:\n  {string.Join("\n  ", invalid.Failures)}\nRun with --help for every option.").ConfigureAwait(false);
        return InvalidConfiguration;
    }
}
