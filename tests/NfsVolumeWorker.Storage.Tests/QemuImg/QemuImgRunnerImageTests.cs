using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.QemuImg;
using NfsVolumeWorker.Storage.Tests.Support;
using static NfsVolumeWorker.Storage.Tests.QemuImg.QemuImgFixture;
using NfsVolumeWorker.Testing;

namespace NfsVolumeWorker.Storage.Tests.QemuImg;

/// <summary>The runner against the real qemu-img on real files.</summary>
public sealed class QemuImgRunnerImageTests : IDisposable
{
    private readonly TempDirectory _dir = new("qemuimg-");
    private readonly QemuImgRunner _runner = Runner();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public async Task I_can_create_a_raw_image_and_info_reports_its_format_and_size()
    {
        var path = _dir.File("volume.raw");
        await _runner.CreateAsync(new CreateImageRequest(path, ImageFormat.Raw, 8 * MiB));

        var info = await _runner.InfoAsync(path, ImageFormat.Raw);

        Assert.Equal("raw", info.Format);
        Assert.Equal(8 * MiB, info.VirtualSize);
        Assert.Equal(path, info.Filename);
        Assert.Null(info.BackingFilename);
        Assert.Null(info.ClusterSize);
        Assert.Null(info.Corrupt);
    }

    [Fact]
    public async Task I_can_create_a_qcow2_image_and_info_reports_its_qcow2_fields()
    {
        var path = _dir.File("volume.qcow2");
        await _runner.CreateAsync(new CreateImageRequest(path, ImageFormat.Qcow2, 64 * MiB));

        var info = await _runner.InfoAsync(path, ImageFormat.Qcow2);

        Assert.Equal("qcow2", info.Format);
        Assert.Equal(64 * MiB, info.VirtualSize);
        Assert.Equal(65536, info.ClusterSize);
        Assert.False(info.DirtyFlag);
        Assert.False(info.Corrupt);
        Assert.True(info.ActualSize > 0);
    }

    [Fact]
    public async Task I_can_create_a_preallocated_raw_image()
    {
        var path = _dir.File("volume.raw");
        await _runner.CreateAsync(new CreateImageRequest(path, ImageFormat.Raw, 4 * MiB, Preallocation: "full"));

        var info = await _runner.InfoAsync(path, ImageFormat.Raw);

        Assert.True(info.ActualSize >= 4 * MiB, $"actual size {info.ActualSize}");
    }

    [Fact]
    public async Task I_can_create_an_overlay_with_a_relative_backing_reference_and_info_reports_it()
    {
        var basePath = _dir.File("volume-base");
        var top = _dir.File("volume-base.snap1");
        await _runner.CreateAsync(new CreateImageRequest(basePath, ImageFormat.Raw, 16 * MiB));
        // The reference is relative to the overlay's directory, not to this process's working directory.
        await _runner.CreateAsync(new CreateImageRequest(top, ImageFormat.Qcow2, 16 * MiB, "volume-base", ImageFormat.Raw));

        var info = await _runner.InfoAsync(top, ImageFormat.Qcow2);

        Assert.Equal("volume-base", info.BackingFilename);
        Assert.Equal("raw", info.BackingFormat);
        Assert.Equal(basePath, info.FullBackingFilename);
    }

    [Fact]
    public async Task Creating_an_overlay_does_not_open_its_backing_file()
    {
        var top = _dir.File("overlay.qcow2");

        await _runner.CreateAsync(new CreateImageRequest(top, ImageFormat.Qcow2, 16 * MiB, "not-there-yet.qcow2", ImageFormat.Qcow2));

        Assert.True(File.Exists(top));
    }

    [Fact]
    public async Task InfoChain_lists_the_image_then_each_backing_file()
    {
        await _runner.CreateAsync(new CreateImageRequest(_dir.File("base.qcow2"), ImageFormat.Qcow2, 32 * MiB));
        await _runner.CreateAsync(new CreateImageRequest(_dir.File("mid.qcow2"), ImageFormat.Qcow2, 32 * MiB, "base.qcow2", ImageFormat.Qcow2));
        await _runner.CreateAsync(new CreateImageRequest(_dir.File("top.qcow2"), ImageFormat.Qcow2, 32 * MiB, "mid.qcow2", ImageFormat.Qcow2));

        var chain = await _runner.InfoChainAsync(_dir.File("top.qcow2"), ImageFormat.Qcow2);

        Assert.Equal(3, chain.Count);
        Assert.Equal(["top.qcow2", "mid.qcow2", "base.qcow2"], chain.Select(i => Path.GetFileName(i.Filename)));
        Assert.Equal(["mid.qcow2", "base.qcow2", null], chain.Select(i => i.BackingFilename));
        Assert.All(chain, i => Assert.Equal("qcow2", i.Format));
    }

    [Fact]
    public async Task Commit_merges_the_overlay_data_into_its_backing_file()
    {
        var basePath = _dir.File("base.qcow2");
        var top = _dir.File("top.qcow2");
        await _runner.CreateAsync(new CreateImageRequest(basePath, ImageFormat.Qcow2, 16 * MiB));
        await _runner.CreateAsync(new CreateImageRequest(top, ImageFormat.Qcow2, 16 * MiB, "base.qcow2", ImageFormat.Qcow2));
        Write(top, "qcow2", 0xab, 0, MiB);
        Assert.False(await _runner.CompareAsync(basePath, ImageFormat.Qcow2, top, ImageFormat.Qcow2));

        var progress = new RecordingProgress();
        await _runner.CommitAsync(new CommitRequest(top), progress);

        Assert.True(Reads(basePath, "qcow2", 0xab, 0, MiB));
        Assert.True(await _runner.CompareAsync(basePath, ImageFormat.Qcow2, top, ImageFormat.Qcow2));
        Assert.Equal(1.0, progress.Reports[^1]);
    }

    [Fact]
    public async Task Commit_without_progress_works_too()
    {
        var basePath = _dir.File("base.qcow2");
        var top = _dir.File("top.qcow2");
        await _runner.CreateAsync(new CreateImageRequest(basePath, ImageFormat.Raw, 4 * MiB));
        await _runner.CreateAsync(new CreateImageRequest(top, ImageFormat.Qcow2, 4 * MiB, "base.qcow2", ImageFormat.Raw));
        Write(top, "qcow2", 0x5a, MiB, MiB);

        await _runner.CommitAsync(new CommitRequest(top));

        Assert.True(Reads(basePath, "raw", 0x5a, MiB, MiB));
    }

    [Fact]
    public async Task Rebase_unsafe_rewrites_only_the_backing_reference()
    {
        var top = _dir.File("top.qcow2");
        await _runner.CreateAsync(new CreateImageRequest(_dir.File("old.qcow2"), ImageFormat.Qcow2, 16 * MiB));
        await _runner.CreateAsync(new CreateImageRequest(_dir.File("new.raw"), ImageFormat.Raw, 16 * MiB));
        await _runner.CreateAsync(new CreateImageRequest(top, ImageFormat.Qcow2, 16 * MiB, "old.qcow2", ImageFormat.Qcow2));
        Write(top, "qcow2", 0x11, 0, MiB);

        await _runner.RebaseUnsafeAsync(top, "new.raw", ImageFormat.Raw);

        var info = await _runner.InfoAsync(top, ImageFormat.Qcow2);
        Assert.Equal("new.raw", info.BackingFilename);
        Assert.Equal("raw", info.BackingFormat);
        Assert.True(Reads(top, "qcow2", 0x11, 0, MiB));
    }

    [Theory]
    [InlineData(ImageFormat.Raw)]
    [InlineData(ImageFormat.Qcow2)]
    public async Task Convert_flattens_a_qcow2_chain_into_an_equal_standalone_image(ImageFormat targetFormat)
    {
        var basePath = _dir.File("base.qcow2");
        var top = _dir.File("top.qcow2");
        var target = _dir.File("flat." + targetFormat.ToQemuName());
        await _runner.CreateAsync(new CreateImageRequest(basePath, ImageFormat.Qcow2, 16 * MiB));
        Write(basePath, "qcow2", 0xab, 0, 2 * MiB);
        await _runner.CreateAsync(new CreateImageRequest(top, ImageFormat.Qcow2, 16 * MiB, "base.qcow2", ImageFormat.Qcow2));
        Write(top, "qcow2", 0xcd, MiB, 2 * MiB);

        await _runner.ConvertAsync(new ConvertRequest(top, ImageFormat.Qcow2, target, targetFormat, Coroutines: 2));

        var info = await _runner.InfoAsync(target, targetFormat);
        Assert.Null(info.BackingFilename);
        Assert.Equal(16 * MiB, info.VirtualSize);
        Assert.True(await _runner.CompareAsync(top, ImageFormat.Qcow2, target, targetFormat));
        Assert.True(Reads(target, targetFormat.ToQemuName(), 0xab, 0, MiB));
        Assert.True(Reads(target, targetFormat.ToQemuName(), 0xcd, MiB, 2 * MiB));
    }

    [Fact]
    public async Task Convert_reports_monotonic_progress_that_ends_at_one()
    {
        var source = _dir.File("source.qcow2");
        var target = _dir.File("target.raw");
        await _runner.CreateAsync(new CreateImageRequest(source, ImageFormat.Qcow2, 256 * MiB));
        Write(source, "qcow2", 0x77, 0, 256 * MiB);
        var progress = new RecordingProgress();

        await _runner.ConvertAsync(new ConvertRequest(source, ImageFormat.Qcow2, target, ImageFormat.Raw), progress);

        var reports = progress.Reports;
        Assert.True(reports.Count >= 2, $"{reports.Count} reports");
        Assert.Equal(1.0, reports[^1]);
        Assert.All(reports, r => Assert.InRange(r, 0.0, 1.0));
        Assert.All(reports.Zip(reports.Skip(1)), pair => Assert.True(pair.Second > pair.First, $"{pair.First} then {pair.Second}"));
    }

    [Fact]
    public async Task Resize_grows_an_image()
    {
        var path = _dir.File("volume.qcow2");
        await _runner.CreateAsync(new CreateImageRequest(path, ImageFormat.Qcow2, 16 * MiB));

        await _runner.ResizeAsync(path, ImageFormat.Qcow2, 48 * MiB);

        Assert.Equal(48 * MiB, (await _runner.InfoAsync(path, ImageFormat.Qcow2)).VirtualSize);
    }

    [Fact]
    public async Task Resize_never_shrinks_even_when_asked_to()
    {
        var path = _dir.File("volume.raw");
        await _runner.CreateAsync(new CreateImageRequest(path, ImageFormat.Raw, 16 * MiB));

        var ex = await Assert.ThrowsAsync<QemuImgException>(() => _runner.ResizeAsync(path, ImageFormat.Raw, 8 * MiB));

        Assert.Equal(StorageErrorCode.QemuImgFailed, ex.Code);
        Assert.Contains("--shrink", ex.StandardError, StringComparison.Ordinal);
        Assert.Equal(16 * MiB, (await _runner.InfoAsync(path, ImageFormat.Raw)).VirtualSize);
    }

    [Fact]
    public async Task Check_of_a_clean_qcow2_is_consistent()
    {
        var path = _dir.File("volume.qcow2");
        await _runner.CreateAsync(new CreateImageRequest(path, ImageFormat.Qcow2, 16 * MiB));
        Write(path, "qcow2", 0x42, 0, MiB);

        var result = await _runner.CheckAsync(path, ImageFormat.Qcow2);

        Assert.Equal(new CheckResult(0, 0, 0, 0), result);
        Assert.True(result.IsConsistent);
    }

    [Fact]
    public async Task Check_of_a_raw_image_says_the_format_has_no_check()
    {
        var path = _dir.File("volume.raw");
        await _runner.CreateAsync(new CreateImageRequest(path, ImageFormat.Raw, MiB));

        var result = await _runner.CheckAsync(path, ImageFormat.Raw);

        Assert.Equal(63, result.ExitCode);
        Assert.True(result.IsConsistent);
    }

    [Fact]
    public async Task Check_of_a_qcow2_with_a_zeroed_refcount_block_finds_corruptions()
    {
        var path = _dir.File("volume.qcow2");
        await _runner.CreateAsync(new CreateImageRequest(path, ImageFormat.Qcow2, 16 * MiB));
        Write(path, "qcow2", 0x42, 0, MiB);
        ZeroFirstRefcounts(path);

        CheckResult? result = null;
        QemuImgException? failure = null;
        try
        {
            result = await _runner.CheckAsync(path, ImageFormat.Qcow2);
        }
        catch (QemuImgException ex)
        {
            failure = ex;
        }

        Assert.True(failure is not null || result is { IsConsistent: false }, $"check said {result}");
        if (result is not null)
        {
            Assert.Equal(2, result.ExitCode);
            Assert.True(result.Corruptions > 0);
        }
    }

    [Fact]
    public async Task A_check_that_floods_stderr_with_more_than_a_pipe_holds_still_completes()
    {
        // 1024 data clusters whose refcounts are zeroed: qemu-img writes ~100 KiB of ERROR lines to
        // stderr, more than a pipe buffers, so this hangs unless stderr is drained while it runs.
        var path = _dir.File("volume.qcow2");
        await _runner.CreateAsync(new CreateImageRequest(path, ImageFormat.Qcow2, 64 * MiB));
        Write(path, "qcow2", 0x42, 0, 64 * MiB);
        ZeroFirstRefcounts(path, count: 2048);

        var result = await _runner.CheckAsync(path, ImageFormat.Qcow2).WaitAsync(TimeSpan.FromSeconds(60));

        Assert.Equal(2, result.ExitCode);
        Assert.True(result.Corruptions >= 1024, $"{result.Corruptions} corruptions");
    }

    [Fact]
    public async Task Compare_tells_differing_images_apart()
    {
        var a = _dir.File("a.qcow2");
        var b = _dir.File("b.raw");
        await _runner.CreateAsync(new CreateImageRequest(a, ImageFormat.Qcow2, 4 * MiB));
        await _runner.CreateAsync(new CreateImageRequest(b, ImageFormat.Raw, 4 * MiB));
        Assert.True(await _runner.CompareAsync(a, ImageFormat.Qcow2, b, ImageFormat.Raw));

        Write(b, "raw", 0x01, 3 * MiB, 4096);

        Assert.False(await _runner.CompareAsync(a, ImageFormat.Qcow2, b, ImageFormat.Raw));
    }

    [Fact]
    public async Task Version_reports_the_installed_qemu_img_version()
    {
        var banner = RequiredTool.RunChecked(RequiredTool.QemuImg, "--version");

        var version = await _runner.VersionAsync();

        Assert.Matches(@"^\d+\.\d+(\.\d+)?$", version);
        Assert.StartsWith($"qemu-img version {version} ", banner, StringComparison.Ordinal);
    }

    /// <summary>Zeroes the first refcounts of the first refcount block: in-use clusters then count as free.</summary>
    private static void ZeroFirstRefcounts(string path, int count = 8)
    {
        using var file = new FileStream(path, FileMode.Open, FileAccess.ReadWrite);
        Span<byte> word = stackalloc byte[8];
        file.Position = 48; // refcount_table_offset in the qcow2 header
        file.ReadExactly(word);
        var tableOffset = System.Buffers.Binary.BinaryPrimitives.ReadInt64BigEndian(word);
        file.Position = tableOffset;
        file.ReadExactly(word);
        var blockOffset = System.Buffers.Binary.BinaryPrimitives.ReadInt64BigEndian(word);
        Assert.True(blockOffset > 0, "the image has no refcount block to corrupt");
        file.Position = blockOffset;
        file.Write(new byte[count * 2]); // 16-bit refcounts, the default
    }

    /// <summary>A long copy runs in the idle I/O class, so the disk serves other volumes' short commands first; short
    /// calls keep the worker's class. The executable is a wrapper that notes its own class (`ionice -p $$`, which
    /// ionice's exec leaves to qemu-img and its threads) and execs the real qemu-img.</summary>
    [Theory]
    [InlineData(true, "idle")]
    [InlineData(false, "none")]
    public async Task Long_calls_run_in_the_idle_io_class_and_short_ones_in_the_workers(bool idle, string longClass)
    {
        var noted = _dir.File("classes");
        var wrapper = _dir.File("qemu-img-noting-its-io-class");
        ShellScript.Write(wrapper, $"ionice -p $$ >> {noted}\nexec {RequiredTool.QemuImg} \"$@\"\n");
        var runner = Runner(o => { o.Executable = wrapper; o.LongCallsAtIdleIoPriority = idle; });
        var source = _dir.File("source.raw");
        await runner.CreateAsync(new CreateImageRequest(source, ImageFormat.Raw, 4 * MiB));

        await runner.ConvertAsync(new ConvertRequest(source, ImageFormat.Raw, _dir.File("copy.raw"), ImageFormat.Raw));

        var classes = File.ReadAllLines(noted);
        Assert.Equal(2, classes.Length);
        Assert.StartsWith("none", classes[0], StringComparison.Ordinal); // create: short
        Assert.StartsWith(longClass, classes[1], StringComparison.Ordinal); // convert: long
    }
}
