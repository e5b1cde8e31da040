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
return await WorkerRun.RunAsync(app);
