using NfsVolumeWorker.CrashHarness;

return await Harness.MainAsync(args);
