using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using NfsVolumeWorker.Storage.Info;
using NfsVolumeWorker.Storage.Tests.Support;

namespace NfsVolumeWorker.Storage.Tests.Info;

/// <summary>
/// PythonJson against the real thing: many generated values go through one python3 process, and
/// each of our outputs must equal json.dumps(v, indent=1, sort_keys=True) exactly.
/// </summary>
public sealed class PythonJsonMatchesPythonTests
{
    private const int Count = 500;

    // Reads one compact JSON value per line; writes each dump as a JSON string literal on its own line,
    // so the dump's own newlines cannot be confused with the separator.
    private const string DumpScript = """
        import json, sys
        with open(sys.argv[1], encoding="ascii") as source, open(sys.argv[2], "w", encoding="ascii") as target:
            for line in source:
                value = json.loads(line)
                target.write(json.dumps(json.dumps(value, indent=1, sort_keys=True)) + "\n")
        """;

    [Theory]
    [InlineData(20240601)]
    [InlineData(7)]
    public void Serialized_values_match_python_json_dumps_byte_for_byte(int seed)
    {
        // Built directly as nodes: CLR doubles, floats, ints, decimals, NaN and infinities, lone surrogates.
        var generator = new JsonModelGenerator(seed, textOnlyValues: false, loneSurrogates: true);
        var models = Enumerable.Range(0, Count).Select(_ => generator.Next()).ToList();
        AssertMatchesPython(seed, models, m => m.ToNode());
    }

    [Theory]
    [InlineData(424242)]
    [InlineData(99)]
    public void Parsed_values_match_python_json_dumps_byte_for_byte(int seed)
    {
        // Parsed from text: numbers keep their tokens, so big ints and int-vs-float follow the token as in Python.
        var generator = new JsonModelGenerator(seed, textOnlyValues: true, loneSurrogates: false);
        var models = Enumerable.Range(0, Count).Select(_ => generator.Next()).ToList();
        AssertMatchesPython(seed, models, m => JsonNode.Parse(m.ToText()));
    }

    private static void AssertMatchesPython(int seed, List<JsonModel> models, Func<JsonModel, JsonNode?> toNode)
    {
        var python = RequiredTool.Python3;
        using var dir = new TempDirectory();
        var inputs = models.Select(m => m.ToText()).ToList();
        File.WriteAllLines(dir.File("in.jsonl"), inputs, Encoding.ASCII);
        File.WriteAllText(dir.File("dump.py"), DumpScript);

        RequiredTool.RunChecked(python, dir.File("dump.py"), dir.File("in.jsonl"), dir.File("out.jsonl"));
        var expected = File.ReadAllLines(dir.File("out.jsonl"), Encoding.ASCII)
            .Select(line => JsonSerializer.Deserialize<string>(line)!)
            .ToList();
        Assert.Equal(models.Count, expected.Count);

        var failures = new List<string>();
        for (var i = 0; i < models.Count; i++)
        {
            var actual = PythonJson.Serialize(toNode(models[i]));
            if (actual != expected[i])
            {
                failures.Add(string.Create(CultureInfo.InvariantCulture,
                    $"seed {seed}, value #{i}\n input:    {inputs[i]}\n python:   {JsonModelGenerator.Describe(expected[i])}\n ours:     {JsonModelGenerator.Describe(actual)}"));
            }
        }
        Assert.True(failures.Count == 0,
            $"{failures.Count} of {models.Count} values differ from python3's json.dumps; first ones:\n" + string.Join("\n\n", failures.Take(5)));
    }
}
