using System.Text.Json.Nodes;
using NfsVolumeWorker.Storage.Info;

namespace NfsVolumeWorker.Storage.Tests.Info;

/// <summary>Known answers from Python 3 for the cases most likely to regress.</summary>
public sealed class PythonJsonTests
{
    [Theory]
    [InlineData(1.0, "1.0")]
    [InlineData(-0.0, "-0.0")]
    [InlineData(0.0, "0.0")]
    [InlineData(0.1, "0.1")]
    [InlineData(1e-05, "1e-05")]
    [InlineData(0.0001, "0.0001")]
    [InlineData(0.00012, "0.00012")]
    [InlineData(1e16, "1e+16")]
    [InlineData(1.5e16, "1.5e+16")]
    [InlineData(1e15, "1000000000000000.0")]
    [InlineData(9999999999999998.0, "9999999999999998.0")]
    [InlineData(123.456, "123.456")]
    [InlineData(1e22, "1e+22")]
    [InlineData(1e100, "1e+100")]
    [InlineData(5e-324, "5e-324")]
    [InlineData(1.7976931348623157e308, "1.7976931348623157e+308")]
    [InlineData(double.NaN, "NaN")]
    [InlineData(double.PositiveInfinity, "Infinity")]
    [InlineData(double.NegativeInfinity, "-Infinity")]
    public void Floats_are_written_as_python_repr(double value, string expected)
    {
        Assert.Equal(expected, PythonJson.Serialize(JsonValue.Create(value)));
    }

    [Fact]
    public void Empty_containers_stay_on_one_line_and_nesting_indents_one_space_per_level()
    {
        var node = JsonNode.Parse("""{"b": [1, {}, []], "a": {"c": null, "d": true}}""");
        Assert.Equal("{\n \"a\": {\n  \"c\": null,\n  \"d\": true\n },\n \"b\": [\n  1,\n  {},\n  []\n ]\n}", PythonJson.Serialize(node));
    }

    [Fact]
    public void Keys_sort_by_code_point_so_astral_chars_follow_the_top_of_the_basic_plane()
    {
        // UTF-16 ordinal order would put "😀" (0xD83D 0xDE00) before "\uffff"; Python does not.
        var node = new JsonObject { ["😀"] = 1, ["\uffff"] = 2, ["\ue000"] = 3, ["a"] = 4, [""] = 5 };
        Assert.Equal("{\n \"\": 5,\n \"a\": 4,\n \"\\ue000\": 3,\n \"\\uffff\": 2,\n \"\\ud83d\\ude00\": 1\n}", PythonJson.Serialize(node));
    }

    [Fact]
    public void Strings_are_escaped_as_python_does_with_ensure_ascii()
    {
        var node = JsonValue.Create("\"\\/\n\r\t\b\f\u0000\u001f\u007f é€😀");
        Assert.Equal("\"\\\"\\\\/\\n\\r\\t\\b\\f\\u0000\\u001f\\u007f \\u00e9\\u20ac\\ud83d\\ude00\"", PythonJson.Serialize(node));
    }

    [Theory]
    [InlineData("-0", "0")]
    [InlineData("123456789012345678901234567890", "123456789012345678901234567890")]
    [InlineData("1E400", "Infinity")]
    [InlineData("2.50", "2.5")]
    [InlineData("1.0E+2", "100.0")]
    public void Parsed_number_tokens_become_python_ints_or_floats(string token, string expected)
    {
        Assert.Equal(expected, PythonJson.Serialize(JsonNode.Parse(token)));
    }

    [Fact]
    public void Top_level_scalars_and_null_have_no_trailing_newline()
    {
        Assert.Equal("null", PythonJson.Serialize(null));
        Assert.Equal("true", PythonJson.Serialize(JsonValue.Create(true)));
        Assert.Equal("42", PythonJson.Serialize(JsonValue.Create(42L)));
    }
}
