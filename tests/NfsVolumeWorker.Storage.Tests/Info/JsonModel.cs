using System.Globalization;
using System.Numerics;
using System.Text;
using System.Text.Json.Nodes;

namespace NfsVolumeWorker.Storage.Tests.Info;

/// <summary>
/// A JSON value as the tests generate it. It renders to a <see cref="JsonNode"/> (what the code under
/// test serializes) and, independently of that code, to the JSON text handed to Python.
/// </summary>
internal abstract record JsonModel
{
    public abstract JsonNode? ToNode();

    /// <summary>Compact JSON that Python's json.loads reads back to the same value. Every string char
    /// is escaped as \uXXXX so nothing here resembles the Python-style output being tested.</summary>
    public abstract void WriteText(StringBuilder text);

    public string ToText()
    {
        var text = new StringBuilder();
        WriteText(text);
        return text.ToString();
    }

    public sealed record Null : JsonModel
    {
        public override JsonNode? ToNode() => null;
        public override void WriteText(StringBuilder text) => text.Append("null");
    }

    public sealed record Bool(bool Value) : JsonModel
    {
        public override JsonNode? ToNode() => JsonValue.Create(Value);
        public override void WriteText(StringBuilder text) => text.Append(Value ? "true" : "false");
    }

    /// <summary>A number held as an integer CLR type or decimal; its JSON token decides int or float, as for Python.</summary>
    public sealed record ClrNumber(object Value) : JsonModel
    {
        public override JsonNode? ToNode() => Value switch
        {
            int v => JsonValue.Create(v),
            long v => JsonValue.Create(v),
            ulong v => JsonValue.Create(v),
            uint v => JsonValue.Create(v),
            short v => JsonValue.Create(v),
            byte v => JsonValue.Create(v),
            decimal v => JsonValue.Create(v),
            _ => throw new InvalidOperationException($"no JsonValue for {Value.GetType()}"),
        };

        public override void WriteText(StringBuilder text) => text.Append(Convert.ToString(Value, CultureInfo.InvariantCulture));
    }

    public sealed record Float(double Value) : JsonModel
    {
        public override JsonNode? ToNode() => JsonValue.Create(Value);

        public override void WriteText(StringBuilder text) => text.Append(DoubleToken(Value));
    }

    /// <summary>A single-precision value; it means the number its shortest text names.</summary>
    public sealed record Single(float Value) : JsonModel
    {
        public override JsonNode? ToNode() => JsonValue.Create(Value);

        public override void WriteText(StringBuilder text) => text.Append(
            float.IsFinite(Value) ? ForceFloat(Value.ToString("R", CultureInfo.InvariantCulture)) : DoubleToken(Value));
    }

    /// <summary>A raw number token: only usable where the node is parsed from text.</summary>
    public sealed record NumberToken(string Token) : JsonModel
    {
        public override JsonNode? ToNode() => JsonNode.Parse(Token);
        public override void WriteText(StringBuilder text) => text.Append(Token);
    }

    public sealed record Str(string Value) : JsonModel
    {
        public override JsonNode? ToNode() => JsonValue.Create(Value);
        public override void WriteText(StringBuilder text) => WriteEscaped(text, Value);
    }

    public sealed record Arr(IReadOnlyList<JsonModel> Items) : JsonModel
    {
        public override JsonNode? ToNode() => new JsonArray([.. Items.Select(i => i.ToNode())]);

        public override void WriteText(StringBuilder text)
        {
            text.Append('[');
            for (var i = 0; i < Items.Count; i++)
            {
                text.Append(i > 0 ? "," : "");
                Items[i].WriteText(text);
            }
            text.Append(']');
        }
    }

    public sealed record Obj(IReadOnlyList<KeyValuePair<string, JsonModel>> Entries) : JsonModel
    {
        public override JsonNode? ToNode()
        {
            var obj = new JsonObject();
            foreach (var (key, value) in Entries)
            {
                obj.Add(key, value.ToNode());
            }
            return obj;
        }

        public override void WriteText(StringBuilder text)
        {
            text.Append('{');
            for (var i = 0; i < Entries.Count; i++)
            {
                text.Append(i > 0 ? "," : "");
                WriteEscaped(text, Entries[i].Key);
                text.Append(':');
                Entries[i].Value.WriteText(text);
            }
            text.Append('}');
        }
    }

    private static string DoubleToken(double value) =>
        double.IsNaN(value) ? "NaN"
        : double.IsPositiveInfinity(value) ? "Infinity"
        : double.IsNegativeInfinity(value) ? "-Infinity"
        : ForceFloat(value.ToString("R", CultureInfo.InvariantCulture));

    // "R" writes 1.0 as "1", which Python would read as an int.
    private static string ForceFloat(string token) =>
        token.Contains('.', StringComparison.Ordinal) || token.Contains('E', StringComparison.Ordinal) ? token : token + ".0";

    private static void WriteEscaped(StringBuilder text, string value)
    {
        text.Append('"');
        foreach (var c in value)
        {
            text.Append("\\u").Append(((int)c).ToString("X4", CultureInfo.InvariantCulture));
        }
        text.Append('"');
    }

    public static BigInteger Big(string digits) => BigInteger.Parse(digits, CultureInfo.InvariantCulture);
}
