using NfsVolumeWorker.Cli.Tests.Support;

namespace NfsVolumeWorker.Cli.Tests;

public sealed class UsageTests
{
    [Fact]
    public async Task A_volume_id_that_is_not_a_uuid_is_a_usage_error_with_exit_code_2()
    {
        using var share = new TestShare();
        var run = await Nfsvol.RunAsync(share.Args("chain", "not-a-uuid"));
        Assert.Equal(2, run.ExitCode);
        Assert.Contains("InvalidRequest", run.Stderr);
        Assert.Contains("must be a UUID", run.Stderr);
    }

    [Fact]
    public async Task Without_any_share_nfsvol_exits_with_2_and_lists_the_ways_to_give_one()
    {
        var run = await Nfsvol.RunAsync("chain", TestShare.Id());
        Assert.Equal(2, run.ExitCode);
        Assert.Contains("--share", run.Stderr);
        Assert.Contains("--shares-config", run.Stderr);
        Assert.Contains("NFSVOL_SHARE", run.Stderr);
    }

    [Fact]
    public async Task The_share_can_come_from_NFSVOL_SHARE()
    {
        using var share = new TestShare();
        var volume = TestShare.Id();
        var env = new Dictionary<string, string> { ["NFSVOL_SHARE"] = share.Path };
        var run = await Nfsvol.RunAsync(env, "volume", "create", volume, "--size", "1M", "--json");
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.True(File.Exists(share.File(TestShare.Base(volume))));
    }

    [Fact]
    public async Task A_share_not_listed_in_the_shares_config_is_a_usage_error_with_exit_code_2()
    {
        using var dir = new TempDirectory();
        var config = dir.File("nfs_shares");
        await File.WriteAllTextAsync(config, "# shares\n192.0.2.10:/export vers=4.1\n");
        var run = await Nfsvol.RunAsync("--shares-config", config, "--mount-base", dir.Path, "--share", "192.0.2.99:/other", "chain", TestShare.Id());
        Assert.Equal(2, run.ExitCode);
        Assert.Contains("ShareNotConfigured", run.Stderr);
    }

    [Fact]
    public async Task A_listed_share_resolves_to_its_md5_mount_point_under_the_mount_base()
    {
        using var dir = new TempDirectory();
        var config = dir.File("nfs_shares");
        await File.WriteAllTextAsync(config, "192.0.2.10:/export vers=4.1\n");
        var mountPoint = Path.Combine(dir.Path, Storage.Shares.MountPoint.HashOf("192.0.2.10:/export"));
        Directory.CreateDirectory(mountPoint);
        var volume = TestShare.Id();
        var run = await Nfsvol.RunAsync("--shares-config", config, "--mount-base", dir.Path, "volume", "create", volume, "--size", "1M");
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.True(File.Exists(Path.Combine(mountPoint, TestShare.Base(volume))));
    }

    [Fact]
    public async Task An_unknown_option_is_a_usage_error_with_exit_code_2()
    {
        var run = await Nfsvol.RunAsync("chain", TestShare.Id(), "--no-such-option");
        Assert.Equal(2, run.ExitCode);
    }

    [Fact]
    public async Task A_bad_size_is_a_usage_error_with_exit_code_2()
    {
        using var share = new TestShare();
        var run = await Nfsvol.RunAsync(share.Args("volume", "create", TestShare.Id(), "--size", "ten gigs"));
        Assert.Equal(2, run.ExitCode);
        Assert.Contains("size", run.Stderr);
    }

    [Fact]
    public async Task Help_documents_the_exit_codes_and_the_test_hook()
    {
        var run = await Nfsvol.RunAsync("--help");
        Assert.Equal(0, run.ExitCode);
        Assert.Contains("Exit codes", run.Stdout);
        Assert.Contains("4 volume busy", run.Stdout);
        Assert.Contains("NFSVOL_PAUSE_AT_STEP", run.Stdout);
    }

    [Fact]
    public async Task An_unknown_pause_step_is_a_usage_error_with_exit_code_2()
    {
        using var share = new TestShare();
        var env = new Dictionary<string, string> { ["NFSVOL_PAUSE_AT_STEP"] = "no-such-step" };
        var run = await Nfsvol.RunAsync(env, share.Args("volume", "create", TestShare.Id(), "--size", "1M"));
        Assert.Equal(2, run.ExitCode);
        Assert.Contains("create-volume:renamed", run.Stderr);
    }

    [Theory]
    [InlineData("1", 1L)]
    [InlineData("4096", 4096L)]
    [InlineData("1K", 1024L)]
    [InlineData("16M", 16L << 20)]
    [InlineData("10G", 10L << 30)]
    [InlineData("10GiB", 10L << 30)]
    [InlineData("2t", 2L << 40)]
    public void Sizes_take_bytes_or_binary_units(string text, long bytes) => Assert.Equal(bytes, SizeParser.Parse(text, "size"));

    [Theory]
    [InlineData("")]
    [InlineData("0")]
    [InlineData("-1G")]
    [InlineData("1.5G")]
    [InlineData("10X")]
    [InlineData("99999999999T")]
    public void Sizes_that_are_not_positive_whole_amounts_are_refused(string text) =>
        Assert.Throws<CliUsageException>(() => SizeParser.Parse(text, "size"));
}
