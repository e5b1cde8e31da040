using NfsVolumeWorker.Configuration;
using NfsVolumeWorker.Hosting;

if (CommandLineHelp.IsRequested(args))
{
    CommandLineHelp.Write(Console.Out);
    return 0;
}

var builder = WebApplication.CreateBuilder(args);
builder.AddNfsVolumeWorker();
var app = builder.Build();
app.MapWorkerEndpoints();
try
{
    await app.RunAsync();
    return 0;
}
catch (Microsoft.Extensions.Options.OptionsValidationException e)
{
    await Console.Error.WriteLineAsync($"nfsvolumeworker: invalid configuration:\n  {string.Join("\n  ", e.Failures)}\nRun with --help for every option.");
    return 2;
}
