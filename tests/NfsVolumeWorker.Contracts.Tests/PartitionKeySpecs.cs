using System.Diagnostics;
using System.Text.Json;

namespace NfsVolumeWorker.Contracts.Tests;

public sealed class PartitionKeySpecs
{
    [Fact]
    public void The_partition_function_is_exactly_the_documented_one_as_python_computes_it()
    {
        // An independent implementation of the definition in PartitionKey's docs, so producers in other
        // languages can route directly and land where the worker would.
        const string script = """
            import sys, json
            ids = json.load(sys.stdin)
            def part(u, n):
                h = 14695981039346656037
                for b in u.lower().encode('ascii'):
                    h ^= b
                    h = (h * 1099511628211) % (1 << 64)
                return h % n
            print(json.dumps([[part(u, n) for n in (1, 7, 16, 64)] for u in ids]))
            """;
        var ids = Enumerable.Range(0, 500).Select(_ => Guid.NewGuid()).ToArray();
        var python = RunPython(script, JsonSerializer.Serialize(ids.Select(i => i.ToString().ToUpperInvariant())));
        var expected = JsonSerializer.Deserialize<int[][]>(python)!;

        for (var i = 0; i < ids.Length; i++)
        {
            Assert.Equal(expected[i], new[] { 1, 7, 16, 64 }.Select(n => PartitionKey.PartitionOf(ids[i], n)).ToArray());
        }
    }

    [Fact]
    public void Volumes_spread_evenly_over_the_partitions()
    {
        var counts = new int[16];
        for (var i = 0; i < 32_000; i++)
        {
            counts[PartitionKey.PartitionOf(Guid.NewGuid(), 16)]++;
        }

        Assert.All(counts, c => Assert.InRange(c, 1_700, 2_300));
    }

    [Fact]
    public void A_volume_always_maps_to_the_same_partition_and_queue()
    {
        var id = Guid.Parse("0f6a2e8c-5d1b-4c1e-9a57-2b9d2f6c1e10");

        Assert.Equal(PartitionKey.PartitionOf(id, 16), PartitionKey.PartitionOf(Guid.Parse(id.ToString()), 16));
        Assert.Equal("nfsvol.partition.07", PartitionKey.QueueName(7));
        Assert.Throws<ArgumentOutOfRangeException>(() => PartitionKey.PartitionOf(id, 0));
    }

    private static string RunPython(string script, string stdin)
    {
        var python = File.Exists("/usr/bin/python3") ? "/usr/bin/python3" : throw new InvalidOperationException("/usr/bin/python3 is missing: apt-get install -y python3");
        var psi = new ProcessStartInfo(python) { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add(script);
        using var p = Process.Start(psi)!;
        p.StandardInput.Write(stdin);
        p.StandardInput.Close();
        var output = p.StandardOutput.ReadToEnd();
        var error = p.StandardError.ReadToEnd();
        p.WaitForExit();
        return p.ExitCode == 0 ? output : throw new InvalidOperationException($"python failed: {error}");
    }
}

public sealed class EventIdSpecs
{
    [Fact]
    public void A_commands_terminal_event_id_is_stable_and_distinct_from_other_commands()
    {
        var a = Guid.NewGuid();
        var b = Guid.NewGuid();

        Assert.Equal(EventIds.TerminalEventId(a), EventIds.TerminalEventId(a));
        Assert.NotEqual(EventIds.TerminalEventId(a), EventIds.TerminalEventId(b));
        Assert.NotEqual(a, EventIds.TerminalEventId(a));
        Assert.Equal(5, EventIds.TerminalEventId(a).Version);
    }

    [Fact]
    public void Commands_and_events_round_trip_through_json_with_their_required_fields()
    {
        var options = new JsonSerializerOptions(JsonSerializerDefaults.Web) { Converters = { new System.Text.Json.Serialization.JsonStringEnumConverter() } };
        var command = new CreateVolumeFromSnapshot
        {
            CommandId = Guid.NewGuid(), VolumeId = Guid.NewGuid(), SnapshotId = Guid.NewGuid(), NewVolumeId = Guid.NewGuid(),
            TargetFormat = VolumeFormat.Qcow2, Share = "192.0.2.10:/export",
        };

        var json = JsonSerializer.Serialize(command, options);
        var back = JsonSerializer.Deserialize<CreateVolumeFromSnapshot>(json, options);

        Assert.Equal(command, back);
        Assert.Contains("\"targetFormat\":\"Qcow2\"", json, StringComparison.Ordinal);
        Assert.Throws<JsonException>(() => JsonSerializer.Deserialize<CreateSnapshot>("""{"commandId":"0f6a2e8c-5d1b-4c1e-9a57-2b9d2f6c1e10"}""", options));
    }
}
