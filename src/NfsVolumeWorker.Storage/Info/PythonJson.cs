using System.Globalization;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace NfsVolumeWorker.Storage.Info;

/// <summary>
/// Writes JSON exactly as Python 3's <c>json.dumps(obj, indent=1, sort_keys=True)</c> does (with the
/// default <c>ensure_ascii=True</c>), so files the engine writes are byte-identical to Cinder's.
/// </summary>
public static class PythonJson
{
    private const string HexDigits = "0123456789abcdef";

    /// <summary>
    /// The Python text of <paramref name="node"/>. Numbers follow Python's types: a JSON number token
    /// with a fraction or exponent (or a <see cref="double"/>/<see cref="float"/> value) is a float and
    /// is written as <c>repr(float)</c>; any other number is an int and is written in full.
    /// </summary>
    public static string Serialize(JsonNode? node)
    {
        var output = new StringBuilder();
        Write(output, node, 0);
        return output.ToString();
    }

    private static void Write(StringBuilder output, JsonNode? node, int depth)
    {
        // Deeply nested input must fail as an exception, not a process-killing stack overflow.
        RuntimeHelpers.EnsureSufficientExecutionStack();
        switch (node)
        {
            case null:
                output.Append("null");
                break;
            case JsonObject obj:
                WriteObject(output, obj, depth);
                break;
            case JsonArray array:
                WriteArray(output, array, depth);
                break;
            case JsonValue value:
                WriteValue(output, value, depth);
                break;
            default:
                throw new ArgumentException($"Unsupported JSON node type {node.GetType()}.", nameof(node));
        }
    }

    private static void WriteObject(StringBuilder output, JsonObject obj, int depth)
    {
        if (obj.Count == 0)
        {
            output.Append("{}");
            return;
        }
        var entries = obj.ToList();
        entries.Sort((a, b) => CompareCodePoints(a.Key, b.Key));
        output.Append('{');
        for (var i = 0; i < entries.Count; i++)
        {
            if (i > 0)
            {
                output.Append(',');
            }
            NewLine(output, depth + 1);
            WriteString(output, entries[i].Key);
            output.Append(": ");
            Write(output, entries[i].Value, depth + 1);
        }
        NewLine(output, depth);
        output.Append('}');
    }

    private static void WriteArray(StringBuilder output, JsonArray array, int depth)
    {
        if (array.Count == 0)
        {
            output.Append("[]");
            return;
        }
        output.Append('[');
        for (var i = 0; i < array.Count; i++)
        {
            if (i > 0)
            {
                output.Append(',');
            }
            NewLine(output, depth + 1);
            Write(output, array[i], depth + 1);
        }
        NewLine(output, depth);
        output.Append(']');
    }

    private static void NewLine(StringBuilder output, int depth) => output.Append('\n').Append(' ', depth);

    private static void WriteValue(StringBuilder output, JsonValue value, int depth)
    {
        if (value.TryGetValue<JsonElement>(out var element))
        {
            WriteElement(output, element, depth);
            return;
        }
        switch (value.GetValueKind())
        {
            case JsonValueKind.String:
                WriteString(output, value.TryGetValue<string>(out var s) ? s : StringOf(value));
                break;
            case JsonValueKind.True:
                output.Append("true");
                break;
            case JsonValueKind.False:
                output.Append("false");
                break;
            case JsonValueKind.Null:
                output.Append("null");
                break;
            case JsonValueKind.Number:
                if (value.TryGetValue<double>(out var d))
                {
                    output.Append(FloatRepr(d));
                }
                else if (value.TryGetValue<float>(out var f))
                {
                    // Python has only doubles; take the float's shortest text as the number it means
                    // (0.1f is 0.1, not 0.10000000149011612), as a JSON round trip through Python would.
                    output.Append(FloatRepr(float.IsFinite(f) ? double.Parse(f.ToString("R", CultureInfo.InvariantCulture), CultureInfo.InvariantCulture) : f));
                }
                else
                {
                    // Integers, decimal and anything else: use the number token System.Text.Json writes.
                    output.Append(NumberFromToken(value.ToJsonString()));
                }
                break;
            default:
                // A JsonValue holding an object or array (e.g. a boxed POCO): go through its JSON text.
                Write(output, JsonNode.Parse(value.ToJsonString()), depth);
                break;
        }
    }

    private static void WriteElement(StringBuilder output, JsonElement element, int depth)
    {
        switch (element.ValueKind)
        {
            case JsonValueKind.Object:
                WriteObject(output, JsonObject.Create(element)!, depth);
                break;
            case JsonValueKind.Array:
                WriteArray(output, JsonArray.Create(element)!, depth);
                break;
            case JsonValueKind.String:
                WriteString(output, element.GetString()!);
                break;
            case JsonValueKind.Number:
                output.Append(NumberFromToken(element.GetRawText()));
                break;
            case JsonValueKind.True:
                output.Append("true");
                break;
            case JsonValueKind.False:
                output.Append("false");
                break;
            case JsonValueKind.Null:
                output.Append("null");
                break;
            default:
                throw new ArgumentException($"Unsupported JSON element kind {element.ValueKind}.", nameof(element));
        }
    }

    private static string StringOf(JsonValue value)
    {
        using var document = JsonDocument.Parse(value.ToJsonString());
        return document.RootElement.GetString()!;
    }

    /// <summary>What Python's json.loads makes of a number token, written back as json.dumps would.</summary>
    private static string NumberFromToken(string token)
    {
        if (token.AsSpan().IndexOfAny(".eE") >= 0)
        {
            // Out-of-range tokens overflow to ±Infinity in both Python and .NET.
            return FloatRepr(double.Parse(token, NumberStyles.Float, CultureInfo.InvariantCulture));
        }
        // Python ints are arbitrary precision; parsing also normalises "-0" to "0" as Python does.
        return BigInteger.Parse(token, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture).ToString(CultureInfo.InvariantCulture);
    }

    /// <summary>
    /// Python's <c>float.__repr__</c> as json writes it: the shortest round-trip digits, in scientific
    /// notation when the value is below 1e-4 or at least 1e16 (<c>1e-05</c>, <c>1.5e+16</c>), otherwise
    /// positional with at least one fractional digit (<c>1.0</c>); non-finite values as JavaScript names.
    /// </summary>
    internal static string FloatRepr(double value)
    {
        if (double.IsNaN(value))
        {
            return "NaN";
        }
        if (double.IsInfinity(value))
        {
            return value > 0 ? "Infinity" : "-Infinity";
        }
        if (value == 0)
        {
            return double.IsNegative(value) ? "-0.0" : "0.0";
        }

        // "R" gives the shortest round-trip digits (as Python's repr does); only its layout differs.
        var r = value.ToString("R", CultureInfo.InvariantCulture);
        var negative = r[0] == '-';
        var body = negative ? r.AsSpan(1) : r.AsSpan();
        var exponent = 0;
        var e = body.IndexOfAny('E', 'e');
        if (e >= 0)
        {
            exponent = int.Parse(body[(e + 1)..], NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture);
            body = body[..e];
        }
        var dot = body.IndexOf('.');
        var integerPart = dot >= 0 ? body[..dot] : body;
        var fractionPart = dot >= 0 ? body[(dot + 1)..] : [];
        var digits = string.Concat(integerPart, fractionPart);
        // The value is 0.<digits> x 10^decimalPoint once leading zeros are dropped.
        var decimalPoint = integerPart.Length + exponent;
        var trimmed = digits.TrimStart('0');
        decimalPoint -= digits.Length - trimmed.Length;
        digits = trimmed.TrimEnd('0');

        var text = new StringBuilder(32);
        if (negative)
        {
            text.Append('-');
        }
        if (decimalPoint is > -4 and <= 16)
        {
            if (decimalPoint <= 0)
            {
                text.Append("0.").Append('0', -decimalPoint).Append(digits);
            }
            else if (decimalPoint < digits.Length)
            {
                text.Append(digits.AsSpan(0, decimalPoint)).Append('.').Append(digits.AsSpan(decimalPoint));
            }
            else
            {
                text.Append(digits).Append('0', decimalPoint - digits.Length).Append(".0");
            }
        }
        else
        {
            text.Append(digits[0]);
            if (digits.Length > 1)
            {
                text.Append('.').Append(digits.AsSpan(1));
            }
            var power = decimalPoint - 1;
            text.Append(power < 0 ? "e-" : "e+").Append(Math.Abs(power).ToString("00", CultureInfo.InvariantCulture));
        }
        return text.ToString();
    }

    /// <summary>Python's json string escaping with ensure_ascii=True.</summary>
    private static void WriteString(StringBuilder output, string value)
    {
        output.Append('"');
        foreach (var c in value)
        {
            switch (c)
            {
                case '"': output.Append("\\\""); break;
                case '\\': output.Append("\\\\"); break;
                case '\n': output.Append("\\n"); break;
                case '\r': output.Append("\\r"); break;
                case '\t': output.Append("\\t"); break;
                case '\b': output.Append("\\b"); break;
                case '\f': output.Append("\\f"); break;
                case >= ' ' and <= '~': output.Append(c); break;
                default:
                    // UTF-16 code units are exactly what Python emits: astral chars become surrogate pairs.
                    output.Append("\\u")
                        .Append(HexDigits[(c >> 12) & 0xF])
                        .Append(HexDigits[(c >> 8) & 0xF])
                        .Append(HexDigits[(c >> 4) & 0xF])
                        .Append(HexDigits[c & 0xF]);
                    break;
            }
        }
        output.Append('"');
    }

    /// <summary>
    /// Orders strings as Python compares str: by code point. UTF-16 ordinal order differs when an astral
    /// char (a surrogate pair, 0xD800..0xDBFF first) meets a char in 0xE000..0xFFFF.
    /// </summary>
    internal static int CompareCodePoints(string a, string b)
    {
        int i = 0, j = 0;
        while (i < a.Length && j < b.Length)
        {
            var x = CodePointAt(a, ref i);
            var y = CodePointAt(b, ref j);
            if (x != y)
            {
                return x.CompareTo(y);
            }
        }
        return (a.Length - i).CompareTo(b.Length - j);
    }

    // A lone surrogate counts as its own code point, as it does in a Python str.
    private static int CodePointAt(string s, ref int index)
    {
        var c = s[index++];
        if (char.IsHighSurrogate(c) && index < s.Length && char.IsLowSurrogate(s[index]))
        {
            return char.ConvertToUtf32(c, s[index++]);
        }
        return c;
    }
}
