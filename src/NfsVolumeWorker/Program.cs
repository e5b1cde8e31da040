using NfsVolumeWorker.Configuration;
using NfsVolumeWorker.Hosting;

if (CommandLineHelp.IsRequested(args))
{
    CommandLineHelp.Write(Console.Out);
    return 0;
}

var builder = WebApplication.CreateBuilder(args);
builder.AddNfsVolumeWorker();
return await WorkerRun.RunAsync(builder);
