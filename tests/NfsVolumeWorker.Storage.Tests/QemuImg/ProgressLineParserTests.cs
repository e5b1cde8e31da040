using NfsVolumeWorker.Storage.QemuImg;

namespace NfsVolumeWorker.Storage.Tests.QemuImg;

public sealed class ProgressLineParserTests
{
    private static List<double> Feed(params string[] chunks)
    {
        var parser = new ProgressLineParser();
        var reports = new List<double>();
        foreach (var chunk in chunks)
        {
            parser.Append(chunk, reports.Add);
        }
        parser.Complete(reports.Add);
        return reports;
    }

    [Theory]
    [InlineData("    (12.34/100%)", 0.1234)]
    [InlineData("(0.00/100%)", 0.0)]
    [InlineData("    (100.00/100%)  ", 1.0)]
    [InlineData("(7/100%)", 0.07)]
    public void A_progress_record_parses_into_a_fraction(string line, double expected)
    {
        Assert.True(ProgressLineParser.TryParseLine(line, out var fraction));
        Assert.Equal(expected, fraction, precision: 6);
    }

    [Theory]
    [InlineData("Image committed.")]
    [InlineData("")]
    [InlineData("(abc/100%)")]
    [InlineData("(12.34/0%)")]
    [InlineData("12.34/100%")]
    [InlineData("(-5.00/100%)")]
    public void Anything_that_is_not_a_progress_record_is_ignored(string line)
    {
        Assert.False(ProgressLineParser.TryParseLine(line, out _));
    }

    [Fact]
    public void I_get_each_fraction_once_from_carriage_return_separated_output()
    {
        var reports = Feed("    (0.00/100%)\r    (1.56/100%)\r    (1.56/100%)\r    (50.00/100%)\r    (100.00/100%)\r\nImage committed.\n");
        Assert.Equal([0.0, 0.0156, 0.5, 1.0], reports.Select(r => Math.Round(r, 4)));
    }

    [Fact]
    public void A_record_split_across_chunks_is_reassembled()
    {
        var reports = Feed("    (12.", "34/10", "0%)\r    (5", "0.00/100%)\r");
        Assert.Equal([0.1234, 0.5], reports.Select(r => Math.Round(r, 4)));
    }

    [Fact]
    public void Reports_never_go_backwards()
    {
        var reports = Feed("(40.00/100%)\r(30.00/100%)\r(40.00/100%)\r(60.00/100%)\n");
        Assert.Equal([0.4, 0.6], reports.Select(r => Math.Round(r, 4)));
    }

    [Fact]
    public void A_last_record_without_terminator_counts_at_end_of_stream()
    {
        var reports = Feed("(10.00/100%)\r(100.00/100%)");
        Assert.Equal(1.0, reports[^1]);
    }

    [Fact]
    public void An_endless_line_of_noise_does_not_grow_the_buffer_or_break_later_records()
    {
        var parser = new ProgressLineParser();
        var reports = new List<double>();
        for (var i = 0; i < 1000; i++)
        {
            parser.Append(new string('x', 1000), reports.Add);
        }
        parser.Append("\r(25.00/100%)\r", reports.Add);
        Assert.Equal([0.25], reports);
    }
}
