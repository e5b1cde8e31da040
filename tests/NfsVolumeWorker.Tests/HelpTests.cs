using System.Reflection;
using NfsVolumeWorker.Testing;
using NfsVolumeWorker.Tests.Support;

namespace NfsVolumeWorker.Tests;

public sealed class HelpTests
{
    /// <summary>Every options class the worker binds (a class with a <c>SectionName</c> constant) in the host,
    /// storage and oslo assemblies.</summary>
    public static TheoryData<string> Sections()
    {
        var data = new TheoryData<string>();
        foreach (var option in OptionClasses())
        {
            data.Add(option.FullName!);
        }
        return data;
    }

    private static IEnumerable<Type> OptionClasses() =>
        new[] { typeof(Hosting.WorkerHostExtensions).Assembly, typeof(Storage.Engine.VolumeEngine).Assembly, typeof(Oslo.OsloOptions).Assembly }
            .SelectMany(a => a.GetExportedTypes())
            .Where(t => t.IsClass && t.GetField("SectionName", BindingFlags.Public | BindingFlags.Static) is { IsLiteral: true });

    [Theory]
    [MemberData(nameof(Sections))]
    public async Task The_workers_help_lists_every_option_of_every_section(string typeName)
    {
        var type = OptionClasses().Single(t => t.FullName == typeName);
        var section = (string)type.GetField("SectionName")!.GetRawConstantValue()!;
        var (code, help, stderr) = await Tools.RunAsync("dotnet", WorkerCommandLine.DllPath(), "--help");
        Assert.True(code == 0, stderr);
        var options = type.GetProperties(BindingFlags.Public | BindingFlags.Instance)
            .Where(p => p.CanWrite && (p.PropertyType.IsValueType || p.PropertyType == typeof(string) || Nullable.GetUnderlyingType(p.PropertyType) is not null))
            .Select(p => $"--{section}:{p.Name}").ToList();
        Assert.NotEmpty(options);
        var missing = options.Where(o => !help.Contains(o, StringComparison.Ordinal)).ToList();
        Assert.True(missing.Count == 0, $"--help does not list: {string.Join(", ", missing)}");
    }
}
