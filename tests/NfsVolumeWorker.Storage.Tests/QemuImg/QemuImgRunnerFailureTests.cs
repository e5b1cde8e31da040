using System.Diagnostics;
using Microsoft.Extensions.Logging;
using NfsVolumeWorker.Storage.Diagnostics;
using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.QemuImg;
using NfsVolumeWorker.Storage.Tests.Support;
using static NfsVolumeWorker.Storage.Tests.QemuImg.QemuImgFixture;
using NfsVolumeWorker.Testing;

namespace NfsVolumeWorker.Storage.Tests.QemuImg;

/// <summary>How the runner fails, times out, is cancelled and is confined.</summary>
public sealed class QemuImgRunnerFailureTests : IDisposable
{
    private readonly TempDirectory _dir = new("qemuimg-fail-");

    public void Dispose() => _dir.Dispose();

    [Fact]
    public async Task Info_on_a_missing_file_fails_with_the_command_line_exit_code_and_stderr()
    {
        var missing = _dir.File("missing.qcow2");

        var ex = await Assert.ThrowsAsync<QemuImgException>(() => Runner().InfoAsync(missing, ImageFormat.Qcow2));

        Assert.Equal(StorageErrorCode.QemuImgFailed, ex.Code);
        Assert.False(ex.IsTransient);
        Assert.Equal(1, ex.ExitCode);
        Assert.Contains("info -U -f qcow2 --output=json " + missing, ex.CommandLine, StringComparison.Ordinal);
        Assert.Contains("No such file or directory", ex.StandardError, StringComparison.Ordinal);
        Assert.Contains(ex.CommandLine, ex.Message, StringComparison.Ordinal);
        Assert.Contains("exit code 1", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_bogus_qemu_img_path_is_reported_as_missing_with_the_package_to_install()
    {
        var runner = Runner(o => o.Executable = _dir.File("no-such-qemu-img"));

        var direct = await Assert.ThrowsAsync<QemuImgException>(() => runner.VersionAsync());
        var viaPrlimit = await Assert.ThrowsAsync<QemuImgException>(() => runner.InfoAsync(_dir.File("x.qcow2"), ImageFormat.Qcow2));

        Assert.Equal(StorageErrorCode.QemuImgMissing, direct.Code);
        Assert.Null(direct.ExitCode);
        Assert.Contains("apt-get install -y qemu-utils", direct.Message, StringComparison.Ordinal);
        Assert.Equal(StorageErrorCode.QemuImgMissing, viaPrlimit.Code);
        Assert.Contains("apt-get install -y qemu-utils", viaPrlimit.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Info_runs_under_prlimit_so_a_missing_prlimit_fails_the_call()
    {
        var runner = Runner(o => o.PrlimitExecutable = _dir.File("no-such-prlimit"));

        var ex = await Assert.ThrowsAsync<QemuImgException>(() => runner.InfoAsync(_dir.File("x.qcow2"), ImageFormat.Qcow2));

        Assert.Equal(StorageErrorCode.QemuImgMissing, ex.Code);
        Assert.Contains("prlimit", ex.Message, StringComparison.Ordinal);
        Assert.Contains("util-linux", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_tiny_address_space_cap_makes_info_fail()
    {
        var path = _dir.File("volume.qcow2");
        await Runner().CreateAsync(new CreateImageRequest(path, ImageFormat.Qcow2, MiB));
        var runner = Runner(o => o.InspectAddressSpaceBytes = MiB);

        var ex = await Assert.ThrowsAsync<QemuImgException>(() => runner.InfoAsync(path, ImageFormat.Qcow2));

        Assert.Equal(StorageErrorCode.QemuImgFailed, ex.Code);
        Assert.NotEqual(0, ex.ExitCode);
        Assert.StartsWith($"{RequiredTool.Find("prlimit", "util-linux")} --as=1048576 --cpu=30 -- ", ex.CommandLine, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Inspection_calls_run_qemu_img_with_one_malloc_arena_so_the_cap_does_not_grow_with_its_threads()
    {
        // Under load qemu-img starts more I/O threads, and glibc gives each an arena of 64 MiB of address space: a CI
        // run hit the 1 GiB cap in `qemu-img map` that way ("failed to allocate memory for stack"). A wrapper records
        // the environment the real prlimit (and the real qemu-img after it) runs in.
        var path = _dir.File("volume.qcow2");
        await Runner().CreateAsync(new CreateImageRequest(path, ImageFormat.Qcow2, MiB));
        var recorded = _dir.File("prlimit-environment");
        var wrapper = _dir.File("prlimit");
        ShellScript.Write(wrapper, $"env > '{recorded}'\nexec '{RequiredTool.Find("prlimit", "util-linux")}' \"$@\"\n");

        var info = await Runner(o => o.PrlimitExecutable = wrapper).InfoAsync(path, ImageFormat.Qcow2);

        Assert.Equal(MiB, info.VirtualSize);
        Assert.Contains("MALLOC_ARENA_MAX=1", File.ReadAllLines(recorded));
    }

    [Fact]
    public async Task Inspection_calls_go_through_prlimit_with_force_share_and_json_while_writes_do_not()
    {
        var path = _dir.File("volume.qcow2");
        var logger = new RecordingLogger<QemuImgRunner>();
        var runner = Runner(logger: logger);

        await runner.CreateAsync(new CreateImageRequest(path, ImageFormat.Qcow2, MiB));
        await runner.InfoAsync(path, ImageFormat.Qcow2);
        await runner.CheckAsync(path, ImageFormat.Qcow2);
        await runner.CompareAsync(path, ImageFormat.Qcow2, path, ImageFormat.Qcow2);

        var started = logger.Entries.Where(e => e.EventId.Id == 2000).Select(e => e.Message).ToArray();
        Assert.Equal(4, started.Length);
        // Programs run by absolute path, looked up once: setpriv and prlimit would otherwise try every PATH directory.
        var (qemuImg, prlimit) = (RequiredTool.QemuImg, RequiredTool.Find("prlimit", "util-linux"));
        Assert.StartsWith("/", qemuImg, StringComparison.Ordinal);
        Assert.Equal($"Running {qemuImg} create -q -f qcow2 {path} 1048576", started[0]);
        Assert.Equal($"Running {prlimit} --as=1073741824 --cpu=30 -- {qemuImg} info -U -f qcow2 --output=json {path}", started[1]);
        Assert.Equal($"Running {prlimit} --as=1073741824 --cpu=30 -- {qemuImg} check -U -f qcow2 --output=json {path}", started[2]);
        Assert.Equal($"Running {prlimit} --as=1073741824 --cpu=30 -- {qemuImg} compare -U -q -f qcow2 -F qcow2 {path} {path}", started[3]);
        Assert.Equal(4, logger.Entries.Count(e => e.EventId.Id == 2001 && e.Level == LogLevel.Debug));
    }

    [Fact]
    public async Task A_failure_is_logged_as_a_warning_with_the_command_line()
    {
        var logger = new RecordingLogger<QemuImgRunner>();
        var missing = _dir.File("missing.qcow2");

        await Assert.ThrowsAsync<QemuImgException>(() => Runner(logger: logger).InfoAsync(missing, ImageFormat.Qcow2));

        var warning = Assert.Single(logger.Entries, e => e.Level == LogLevel.Warning);
        Assert.Equal(2002, warning.EventId.Id);
        Assert.Contains(missing, warning.Message, StringComparison.Ordinal);
        Assert.Contains("QemuImgFailed", warning.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Each_call_is_traced_as_an_activity_with_its_verb_exit_code_and_path()
    {
        var path = _dir.File("traced.qcow2");
        var stopped = new List<Activity>();
        using var listener = new ActivityListener
        {
            ShouldListenTo = source => source.Name == StorageTelemetry.SourceName,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = activity =>
            {
                lock (stopped)
                {
                    stopped.Add(activity);
                }
            },
        };
        ActivitySource.AddActivityListener(listener);
        var runner = Runner();

        await runner.CreateAsync(new CreateImageRequest(path, ImageFormat.Qcow2, MiB));
        await Assert.ThrowsAsync<QemuImgException>(() => runner.InfoAsync(path + ".missing", ImageFormat.Qcow2));

        Activity[] mine;
        lock (stopped)
        {
            mine = stopped.Where(a => ((string?)a.GetTagItem("qemu_img.path"))?.StartsWith(path, StringComparison.Ordinal) == true).ToArray();
        }
        Assert.Equal(["qemu-img create", "qemu-img info"], mine.Select(a => a.DisplayName));
        Assert.Equal("create", mine[0].GetTagItem("qemu_img.verb"));
        Assert.Equal(0, mine[0].GetTagItem("qemu_img.exit_code"));
        Assert.Equal(ActivityStatusCode.Unset, mine[0].Status);
        Assert.Equal(1, mine[1].GetTagItem("qemu_img.exit_code"));
        Assert.Equal(ActivityStatusCode.Error, mine[1].Status);
    }

    [Fact]
    public async Task A_call_that_outlives_its_timeout_is_killed_and_reported_as_a_timeout()
    {
        // Opening a FIFO for reading blocks until a writer comes: a qemu-img that hangs for sure.
        var fifo = _dir.File("hangs.raw");
        RequiredTool.RunChecked(RequiredTool.Find("mkfifo", "coreutils"), fifo);
        var runner = Runner(o => o.ShortCallTimeout = TimeSpan.FromMilliseconds(1));

        var ex = await Assert.ThrowsAsync<QemuImgException>(() => runner.InfoAsync(fifo, ImageFormat.Raw));

        Assert.Equal(StorageErrorCode.QemuImgTimeout, ex.Code);
        Assert.True(ex.IsTransient);
        Assert.Null(ex.ExitCode);
        Assert.Contains(fifo, ex.CommandLine, StringComparison.Ordinal);
        Assert.Contains("did not finish within", ex.Message, StringComparison.Ordinal);
        Assert.Empty(ProcessesMentioning(fifo));
    }

    [Fact]
    public async Task A_long_call_is_bounded_by_the_long_timeout()
    {
        var fifo = _dir.File("hangs-too.raw");
        RequiredTool.RunChecked(RequiredTool.Find("mkfifo", "coreutils"), fifo);
        var runner = Runner(o => o.LongCallTimeout = TimeSpan.FromMilliseconds(200));

        var ex = await Assert.ThrowsAsync<QemuImgException>(() =>
            runner.ConvertAsync(new ConvertRequest(fifo, ImageFormat.Raw, _dir.File("never.raw"), ImageFormat.Raw)));

        Assert.Equal(StorageErrorCode.QemuImgTimeout, ex.Code);
        Assert.Empty(ProcessesMentioning(fifo));
    }

    [Fact]
    public async Task I_can_cancel_a_running_convert_and_the_process_is_gone()
    {
        var runner = Runner();
        var source = _dir.File("source.qcow2");
        var target = _dir.File("target-being-cancelled.raw");
        await runner.CreateAsync(new CreateImageRequest(source, ImageFormat.Qcow2, 256 * MiB));
        Write(source, "qcow2", 0x99, 0, 256 * MiB);
        using var cts = new CancellationTokenSource();
        // Cancel from inside the first report, on the runner's own reader thread: no hop, no race with
        // a copy that takes well under a second here, and a handler that cancels must not deadlock it.
        var progress = new RecordingProgress(_ => cts.Cancel());

        var convert = runner.ConvertAsync(new ConvertRequest(source, ImageFormat.Qcow2, target, ImageFormat.Raw), progress, cts.Token);

        var ex = await Assert.ThrowsAsync<OperationCanceledException>(() => convert);
        Assert.Equal(cts.Token, ex.CancellationToken);
        Assert.Empty(ProcessesMentioning(target));
        Assert.True(progress.Reports[^1] < 1.0, "the convert finished before it could be cancelled");
    }

    [Fact]
    public async Task A_token_cancelled_before_the_call_starts_nothing()
    {
        var logger = new RecordingLogger<QemuImgRunner>();
        using var cts = new CancellationTokenSource();
        await cts.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => Runner(logger: logger).VersionAsync(cts.Token));

        Assert.Empty(logger.Entries);
    }

    [Fact]
    public async Task A_write_lock_held_by_another_process_is_a_transient_failure()
    {
        var path = _dir.File("busy.qcow2");
        var runner = Runner();
        await runner.CreateAsync(new CreateImageRequest(path, ImageFormat.Qcow2, MiB));

        QemuImgException ex;
        using (new ImageLockHolder(path))
        {
            ex = await Assert.ThrowsAsync<QemuImgException>(() => runner.ResizeAsync(path, ImageFormat.Qcow2, 2 * MiB));
        }

        Assert.Equal(StorageErrorCode.TransientIo, ex.Code);
        Assert.True(ex.IsTransient);
        Assert.Contains("lock", ex.StandardError, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Check_of_a_missing_file_is_a_failure_not_a_result()
    {
        var ex = await Assert.ThrowsAsync<QemuImgException>(() => Runner().CheckAsync(_dir.File("missing.qcow2"), ImageFormat.Qcow2));

        Assert.Equal(StorageErrorCode.QemuImgFailed, ex.Code);
        Assert.Equal(1, ex.ExitCode);
    }

    [Fact]
    public async Task Compare_with_a_missing_image_is_a_failure_not_a_difference()
    {
        var path = _dir.File("a.raw");
        var runner = Runner();
        await runner.CreateAsync(new CreateImageRequest(path, ImageFormat.Raw, MiB));

        var ex = await Assert.ThrowsAsync<QemuImgException>(() =>
            runner.CompareAsync(path, ImageFormat.Raw, _dir.File("missing.raw"), ImageFormat.Raw));

        Assert.Equal(StorageErrorCode.QemuImgFailed, ex.Code);
        Assert.NotEqual(1, ex.ExitCode);
    }
}
