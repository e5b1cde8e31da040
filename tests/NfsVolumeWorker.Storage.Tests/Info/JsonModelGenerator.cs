using System.Globalization;
using System.Text;

namespace NfsVolumeWorker.Storage.Tests.Info;

/// <summary>
/// Seeded random JSON values that stress the places where Python's json output is particular:
/// escapes, non-ASCII and astral chars, key order by code point, float repr boundaries, big ints.
/// </summary>
internal sealed class JsonModelGenerator(int seed, bool textOnlyValues, bool loneSurrogates)
{
    private readonly Random _random = new(seed);

    // Chars chosen to sit on every branch of the escaping and ordering rules.
    private static readonly string[] Pieces =
    [
        "a", "Z", "0", " ", "~", "\"", "\\", "/", "\n", "\r", "\t", "\b", "\f", "\0", "\u0001", "\u001f", "\u007f",
        "\u0080", "é", "ÿ", "\u00a0", "Ω", "€", "中", "\u2028", "\ud7ff", "\ue000", "\uf8ff", "\ufeff", "\ufffd", "\uffff",
        "😀", "\U00010000", "\U0010ffff", "𝄞", "volume-", ".info", "active",
    ];

    private static readonly string[] LoneSurrogates = ["\ud800", "\udbff", "\udc00", "\udfff"];

    // Float values at repr's switch points and at the edges of the double range.
    private static readonly double[] SpecialDoubles =
    [
        0.0, -0.0, 1.0, -1.0, 0.1, 0.5, 1.5, 2.5, 1e-4, 1e-5, 0.00012345, 9.999e-5, 1e15, 1e16, 1e17, 9999999999999998.0,
        1.5e16, 123456789012345.6, 1e22, 1e23, 1e-7, 5e-324, 2.2250738585072014e-308, double.MaxValue, double.MinValue,
        double.Epsilon, 0.30000000000000004, 1.0 / 3, Math.PI, -Math.E, 100.0, 12345678.0, 4.35, 9007199254740993.0,
    ];

    private static readonly string[] SpecialTokens =
    [
        "-0", "0", "123456789012345678901234567890", "-98765432109876543210987654321", "1E400", "-1e400", "1e-400",
        "1.0E+2", "0.000", "-0.0", "2.50", "1E-5", "10e15", "18446744073709551616",
    ];

    public JsonModel Next() => Value(depth: 0);

    private JsonModel Value(int depth)
    {
        var roll = _random.Next(depth >= 4 ? 70 : 100);
        return roll switch
        {
            < 5 => new JsonModel.Null(),
            < 10 => new JsonModel.Bool(_random.Next(2) == 0),
            < 25 => Integer(),
            < 45 => Float(),
            < 70 => new JsonModel.Str(String()),
            < 85 => new JsonModel.Arr([.. Enumerable.Range(0, Size()).Select(_ => Value(depth + 1))]),
            _ => Object(depth),
        };
    }

    private int Size() => _random.Next(4) == 0 ? 0 : _random.Next(1, 6);

    private JsonModel.Obj Object(int depth)
    {
        var entries = new List<KeyValuePair<string, JsonModel>>();
        var keys = new HashSet<string>(StringComparer.Ordinal);
        var size = Size();
        while (entries.Count < size)
        {
            var key = String();
            if (keys.Add(key))
            {
                entries.Add(new(key, Value(depth + 1)));
            }
        }
        return new JsonModel.Obj(entries);
    }

    private JsonModel Integer()
    {
        if (textOnlyValues && _random.Next(5) == 0)
        {
            return new JsonModel.NumberToken(SpecialTokens[_random.Next(SpecialTokens.Length)]);
        }
        return _random.Next(8) switch
        {
            0 => new JsonModel.ClrNumber(_random.Next(-10, 11)),
            1 => new JsonModel.ClrNumber(_random.NextInt64(long.MinValue, long.MaxValue)),
            2 => new JsonModel.ClrNumber(_random.Next(2) == 0 ? long.MinValue : long.MaxValue),
            3 => new JsonModel.ClrNumber(ulong.MaxValue - (ulong)_random.Next(1000)),
            4 => new JsonModel.ClrNumber((byte)_random.Next(256)),
            5 => new JsonModel.ClrNumber((short)_random.Next(short.MinValue, short.MaxValue)),
            6 => new JsonModel.ClrNumber((decimal)_random.NextInt64(-1_000_000_000_000, 1_000_000_000_000)),
            _ => new JsonModel.ClrNumber(_random.Next()),
        };
    }

    private JsonModel Float()
    {
        switch (_random.Next(10))
        {
            case 0:
                return new JsonModel.Float(SpecialDoubles[_random.Next(SpecialDoubles.Length)] * (_random.Next(2) == 0 ? 1 : -1));
            case 1:
                // Any bit pattern: subnormals, huge and tiny exponents, and now and then NaN or infinity.
                var bits = BitConverter.Int64BitsToDouble(_random.NextInt64(long.MinValue, long.MaxValue));
                return !double.IsFinite(bits) && textOnlyValues ? new JsonModel.Float(_random.NextDouble()) : new JsonModel.Float(bits);
            case 2:
                return textOnlyValues
                    ? new JsonModel.Float(_random.NextDouble() * 1e300)
                    : new JsonModel.Float(_random.Next(3) switch { 0 => double.NaN, 1 => double.PositiveInfinity, _ => double.NegativeInfinity });
            case 3:
                return new JsonModel.Single((float)(_random.NextDouble() * Math.Pow(10, _random.Next(-8, 20))));
            case 4:
                // Decimal-looking values: few digits, exponent anywhere from 1e-9 to 1e20.
                return new JsonModel.Float(_random.Next(1, 100_000) * Math.Pow(10, _random.Next(-14, 20)));
            case 5:
                return new JsonModel.ClrNumber(_random.Next(-1_000_000, 1_000_000) / 100m); // decimal: System.Text.Json writes "12.30"
            default:
                return new JsonModel.Float((_random.NextDouble() - 0.5) * Math.Pow(10, _random.Next(-20, 25)));
        }
    }

    private string String()
    {
        var length = _random.Next(4) == 0 ? 0 : _random.Next(1, 8);
        var text = new StringBuilder();
        for (var i = 0; i < length; i++)
        {
            if (loneSurrogates && _random.Next(15) == 0)
            {
                text.Append(LoneSurrogates[_random.Next(LoneSurrogates.Length)]);
            }
            else if (_random.Next(4) == 0)
            {
                text.Append(char.ConvertFromUtf32(RandomCodePoint()));
            }
            else
            {
                text.Append(Pieces[_random.Next(Pieces.Length)]);
            }
        }
        return text.ToString();
    }

    private int RandomCodePoint()
    {
        while (true)
        {
            var cp = _random.Next(4) switch
            {
                0 => _random.Next(0, 0x80),
                1 => _random.Next(0x80, 0x800),
                2 => _random.Next(0x800, 0x10000),
                _ => _random.Next(0x10000, 0x110000),
            };
            if (cp is < 0xD800 or > 0xDFFF)
            {
                return cp;
            }
        }
    }

    public static string Describe(string value) =>
        string.Concat(value.Select(c => c is >= ' ' and <= '~' ? c.ToString() : "\\u" + ((int)c).ToString("x4", CultureInfo.InvariantCulture)));
}
