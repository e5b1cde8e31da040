using System.Globalization;
using NfsVolumeWorker.Fuzz;

// nfsvolumeworker-fuzz --list
// nfsvolumeworker-fuzz --target NAME                  under afl-fuzz: the persistent fuzzing loop (SharpFuzz)
// nfsvolumeworker-fuzz --target NAME --replay PATH... each file (or every file of a folder) once, in-process;
//                                                     exit 1 when any input is a finding
if (args is ["--list"])
{
    foreach (var t in Targets.All)
    {
        Console.WriteLine($"{t.Name,-10} {t.Description}");
    }
    return 0;
}
if (args.Length < 2 || args[0] != "--target" || (args.Length > 2 && args[2] != "--replay"))
{
    Console.Error.WriteLine("usage: NfsVolumeWorker.Fuzz --list | --target NAME [--replay FILE|DIR...]");
    return 2;
}
var target = Targets.Find(args[1]);
if (target is null)
{
    Console.Error.WriteLine($"unknown target '{args[1]}'; targets: {string.Join(", ", Targets.All.Select(t => t.Name))}");
    return 2;
}

if (args.Length > 2)
{
    var findings = 0;
    var files = args.Skip(3).SelectMany(p => Directory.Exists(p) ? Directory.EnumerateFiles(p, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal) : (IEnumerable<string>)[p]);
    foreach (var file in files)
    {
        var finding = target.Check(File.ReadAllBytes(file));
        if (finding is null)
        {
            Console.WriteLine($"ok       {file}");
            continue;
        }
        findings++;
        Console.WriteLine($"FINDING  {file}\n{finding}");
    }
    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{findings} finding(s)"));
    return findings == 0 ? 0 : 1;
}

var buffer = new byte[1 << 20];
SharpFuzz.Fuzzer.Run(stream =>
{
    var length = 0;
    int read;
    while (length < buffer.Length && (read = stream.Read(buffer, length, buffer.Length - length)) > 0)
    {
        length += read;
    }
    target.Run(buffer.AsSpan(0, length));
});
return 0;
