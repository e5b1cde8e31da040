using System.Text;
using NfsVolumeWorker.Storage.QemuImg;

namespace NfsVolumeWorker.Storage.Tests.QemuImg;

public sealed class OutputCaptureTests
{
    [Fact]
    public async Task Output_past_the_cap_is_drained_but_not_kept()
    {
        var text = new string('e', 200_000);
        using var reader = new StreamReader(new MemoryStream(Encoding.UTF8.GetBytes(text)));

        var capture = OutputCapture.Start(reader, limit: 64 * 1024);
        await capture.Completion;

        Assert.True(capture.Truncated);
        Assert.Equal(64 * 1024, capture.Text.Length);
        Assert.Equal(-1, reader.Peek());
    }

    [Fact]
    public async Task Progress_is_parsed_from_the_same_stream_that_is_captured()
    {
        using var reader = new StreamReader(new MemoryStream(Encoding.UTF8.GetBytes("    (0.00/100%)\r    (50.00/100%)\r    (100.00/100%)\r\nImage committed.\n")));
        var reports = new List<double>();

        var capture = OutputCapture.Start(reader, limit: 1024, new ProgressLineParser(), reports.Add);
        await capture.Completion;

        Assert.Equal([0.0, 0.5, 1.0], reports);
        Assert.False(capture.Truncated);
        Assert.EndsWith("Image committed.\n", capture.Text, StringComparison.Ordinal);
    }
}
