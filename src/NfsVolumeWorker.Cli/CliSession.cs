using System.CommandLine;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Console;
using Microsoft.Extensions.Options;
using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.QemuImg;
using NfsVolumeWorker.Storage.Recovery;
using NfsVolumeWorker.Storage.Shares;
using Spectre.Console;

namespace NfsVolumeWorker.Cli;

/// <summary>Where an invocation reads its environment and writes its output (the real console, or a test's writers).</summary>
/// <param name="Out">stdout.</param>
/// <param name="Error">stderr.</param>
/// <param name="GetEnvironmentVariable">Environment lookup.</param>
/// <param name="IsTerminal">stdout is an interactive terminal (progress bars and colours only then).</param>
public sealed record CliEnvironment(TextWriter Out, TextWriter Error, Func<string, string?> GetEnvironmentVariable, bool IsTerminal)
{
    public const string ShareVariable = "NFSVOL_SHARE";
}

/// <summary>The global options, shared by every command (recursive).</summary>
internal sealed class GlobalOptions
{
    public const int DefaultLockTimeoutSeconds = 60;

    public Option<string[]> Share { get; } = new("--share")
    {
        Description = "The share to work on: a Cinder share 'host:/export' (found at <mount-base>/<md5hex(share)>) or a local directory. "
            + "Repeat to name several (check visits each; other commands use the first). Default: environment variable NFSVOL_SHARE; "
            + "with --shares-config, the only share listed there. With no share at all nfsvol exits with code 2.",
        HelpName = "host:/export|dir",
        Recursive = true,
        Arity = ArgumentArity.ZeroOrMore,
        AllowMultipleArgumentsPerToken = false,
    };

    public Option<string?> MountBase { get; } = new("--mount-base")
    {
        Description = $"Where shares are mounted (Cinder's nfs_mount_point_base): share host:/export lives at <dir>/<md5hex(share)>. Default {new SharesOptions().MountPointBase}.",
        HelpName = "dir",
        Recursive = true,
    };

    public Option<string?> SharesConfig { get; } = new("--shares-config")
    {
        Description = "A Cinder nfs_shares_config file (one 'host:/export [mount options]' a line). With it, --share must name one of its shares.",
        HelpName = "file",
        Recursive = true,
    };

    public Option<bool> Json { get; } = new("--json")
    {
        Description = "Machine output: one JSON document on stdout (errors as {\"error\":{\"code\",\"message\"}}). No progress bars.",
        Recursive = true,
    };

    public Option<int?> LockTimeout { get; } = new("--lock-timeout")
    {
        Description = $"Seconds to wait for another operation on the same volume before giving up with exit code 4. Default {DefaultLockTimeoutSeconds}.",
        HelpName = "seconds",
        Recursive = true,
    };

    public Option<bool> Qcow2Volumes { get; } = new("--qcow2-volumes")
    {
        Description = "New volumes (create, clones) are qcow2 instead of raw when no --format is given (Cinder's nfs_qcow2_volumes).",
        Recursive = true,
    };

    public Option<string?> QemuImg { get; } = new("--qemu-img")
    {
        Description = "Path of the qemu-img binary. Default: qemu-img on PATH.",
        HelpName = "path",
        Recursive = true,
    };

    public Option<bool> Verbose { get; } = new("--verbose", "-v")
    {
        Description = "Log at Information level to stderr (default: warnings and errors only).",
        Recursive = true,
    };

    public void AddTo(RootCommand root)
    {
        root.Add(Share);
        root.Add(MountBase);
        root.Add(SharesConfig);
        root.Add(Json);
        root.Add(LockTimeout);
        root.Add(Qcow2Volumes);
        root.Add(QemuImg);
        root.Add(Verbose);
    }
}

/// <summary>One invocation's services: the share map, qemu-img runner, engine and check, built from the global options.</summary>
internal sealed class CliSession : IDisposable
{
    private readonly ServiceProvider _services;

    private CliSession(ServiceProvider services, CliEnvironment environment, bool json, string? targetShare, IReadOnlyList<string> checkShares)
    {
        _services = services;
        Environment = environment;
        Json = json;
        TargetShare = targetShare;
        CheckShares = checkShares;
        Console = CreateConsole(environment);
    }

    public CliEnvironment Environment { get; }

    public bool Json { get; }

    /// <summary>The share operations use (null: the only configured one).</summary>
    public string? TargetShare { get; }

    /// <summary>The shares check visits.</summary>
    public IReadOnlyList<string> CheckShares { get; }

    public IAnsiConsole Console { get; }

    public bool ShowProgress => !Json && Environment.IsTerminal;

    public VolumeEngine Engine => _services.GetRequiredService<VolumeEngine>();

    public ShareCheck Check => _services.GetRequiredService<ShareCheck>();

    public ShareMap Shares => _services.GetRequiredService<ShareMap>();

    public QemuImgRunner QemuImg => _services.GetRequiredService<QemuImgRunner>();

    public VolumeEngineOptions EngineOptions => _services.GetRequiredService<IOptions<VolumeEngineOptions>>().Value;

    public static CliSession Create(ParseResult parse, GlobalOptions options, CliEnvironment environment)
    {
        var shares = (parse.GetValue(options.Share) ?? []).Where(s => !string.IsNullOrWhiteSpace(s)).Select(NormalizeShare).ToList();
        if (shares.Count == 0 && environment.GetEnvironmentVariable(CliEnvironment.ShareVariable) is { Length: > 0 } fromEnvironment)
        {
            shares.Add(NormalizeShare(fromEnvironment));
        }
        var sharesConfig = parse.GetValue(options.SharesConfig);
        if (shares.Count == 0 && string.IsNullOrWhiteSpace(sharesConfig))
        {
            throw new CliUsageException(
                "No share given. Name one with --share <host:/export|/local/dir>, list shares in a Cinder nfs_shares_config file with --shares-config <file>, or set NFSVOL_SHARE.");
        }
        if (!string.IsNullOrWhiteSpace(sharesConfig) && !File.Exists(sharesConfig))
        {
            throw new CliUsageException($"The shares config file {sharesConfig} does not exist.");
        }
        var lockTimeout = parse.GetValue(options.LockTimeout) ?? GlobalOptions.DefaultLockTimeoutSeconds;
        if (lockTimeout < 0)
        {
            throw new CliUsageException($"--lock-timeout must be 0 or more seconds; got {lockTimeout}.");
        }
        var mountBase = parse.GetValue(options.MountBase);
        var qemuImg = parse.GetValue(options.QemuImg);
        var verbose = parse.GetValue(options.Verbose);
        var qcow2 = parse.GetValue(options.Qcow2Volumes);
        var json = parse.GetValue(options.Json);

        IStepObserver observer = NoStepObserver.Instance;
        if (environment.GetEnvironmentVariable(PauseAtStepObserver.EnvironmentVariable) is { Length: > 0 } step)
        {
            observer = new PauseAtStepObserver(step, environment.Error);
        }

        var services = new ServiceCollection();
        services.AddLogging(logging =>
        {
            logging.ClearProviders();
            logging.AddSimpleConsole(o =>
            {
                o.SingleLine = true;
                o.IncludeScopes = false;
            });
            logging.Services.Configure<ConsoleLoggerOptions>(o => o.LogToStandardErrorThreshold = LogLevel.Trace);
            logging.SetMinimumLevel(verbose ? LogLevel.Information : LogLevel.Warning);
        });
        services.Configure<SharesOptions>(o =>
        {
            o.RequireMountedShares = false; // the operator names the directory; `check` says what is wrong with it
            if (!string.IsNullOrWhiteSpace(mountBase))
            {
                o.MountPointBase = mountBase;
            }
            if (!string.IsNullOrWhiteSpace(sharesConfig))
            {
                o.SharesConfigFile = sharesConfig;
            }
            else
            {
                foreach (var share in shares)
                {
                    o.Items.Add(new ShareDefinition { Export = share });
                }
            }
        });
        services.Configure<QemuImgOptions>(o =>
        {
            if (!string.IsNullOrWhiteSpace(qemuImg))
            {
                o.Executable = qemuImg;
            }
        });
        services.Configure<VolumeEngineOptions>(o =>
        {
            o.Qcow2Volumes = qcow2;
            o.LockTimeout = TimeSpan.FromSeconds(lockTimeout);
        });
        services.AddSingleton(sp => new ShareMap(sp.GetRequiredService<IOptions<SharesOptions>>()));
        services.AddSingleton<QemuImgRunner>();
        services.AddSingleton(observer);
        services.AddSingleton(sp => new VolumeEngine(
            sp.GetRequiredService<ShareMap>(), sp.GetRequiredService<QemuImgRunner>(), sp.GetRequiredService<IOptions<VolumeEngineOptions>>(),
            sp.GetRequiredService<ILogger<VolumeEngine>>(), sp.GetRequiredService<IStepObserver>()));
        services.AddSingleton<ShareCheck>();
        var provider = services.BuildServiceProvider();

        try
        {
            // Every share named must resolve now (with --shares-config, an unlisted one is a usage error).
            var map = provider.GetRequiredService<ShareMap>();
            foreach (var share in shares)
            {
                map.Resolve(share);
            }
            var checkShares = shares.Count > 0 ? shares : [.. map.All.Select(s => s.Export)];
            if (checkShares.Count == 0)
            {
                throw new CliUsageException($"The shares config file {sharesConfig} lists no share.");
            }
            return new CliSession(provider, environment, json, shares.FirstOrDefault(), checkShares);
        }
        catch
        {
            provider.Dispose();
            throw;
        }
    }

    /// <summary>A share given as a relative or absolute directory becomes an absolute path; <c>host:/export</c> stays.</summary>
    internal static string NormalizeShare(string value)
    {
        var v = value.Trim();
        return v.StartsWith('/') || !v.Contains(':', StringComparison.Ordinal) ? Path.GetFullPath(v).TrimEnd('/') is { Length: > 0 } p ? p : "/" : v;
    }

    private static IAnsiConsole CreateConsole(CliEnvironment environment)
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(environment.Out),
            Ansi = environment.IsTerminal ? AnsiSupport.Detect : AnsiSupport.No,
            ColorSystem = environment.IsTerminal ? ColorSystemSupport.Detect : ColorSystemSupport.NoColors,
            Interactive = environment.IsTerminal ? InteractionSupport.Yes : InteractionSupport.No,
        });
        if (!environment.IsTerminal)
        {
            console.Profile.Width = 200;
        }
        return console;
    }

    public void Dispose() => _services.Dispose();
}
