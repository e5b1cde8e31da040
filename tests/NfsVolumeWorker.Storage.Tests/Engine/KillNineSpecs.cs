using System.Diagnostics;
using NfsVolumeWorker.CrashHarness;
using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Storage.Locking;
using NfsVolumeWorker.Storage.Tests.Support;
using static NfsVolumeWorker.Storage.Tests.Engine.CrashAssertions;
using static NfsVolumeWorker.Storage.Tests.Support.EngineTestBed;

namespace NfsVolumeWorker.Storage.Tests.Engine;

/// <summary>
/// The ground truth for crash safety: the operation runs in another process (the crash harness), which is
/// stopped at a step (or in the middle of a long qemu-img call) and killed with SIGKILL, so no catch block,
/// finally or dispose runs. Then the same assertions as the injected matrix, and a re-run finishes the job.
/// </summary>
public sealed class KillNineSpecs : IDisposable
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);

    private readonly EngineTestBed _bed = new();
    private readonly EngineTestBed _uninterrupted = new();

    public void Dispose()
    {
        _bed.Dispose();
        _uninterrupted.Dispose();
    }

    public static IEnumerable<object[]> Cases => CrashScenario.Matrix(
        "create-snapshot", "delete-snapshot-middle", "delete-snapshot-middle-pull-up", "create-volume-from-snapshot", "clone-volume-with-snapshots", "delete-volume",
        "delete-snapshot-newest-empty", "delete-snapshot-middle-empty", "delete-snapshot-newest-pull-up-empty-lower")
        .Append(["delete-snapshot-newest", OperationSteps.DeleteSnapshotCommitted])
        .Append(["delete-snapshot-newest-pull-up", OperationSteps.DeleteSnapshotPulledUp])
        .Append(["delete-snapshot-newest-pull-up", OperationSteps.DeleteSnapshotLowerReplaced]);

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task Killing_the_process_after_a_step_leaves_a_healthy_share_and_running_the_operation_again_finishes_it(string operation, string step)
    {
        var scenario = CrashScenario.Named(operation);
        var state = await scenario.SetUpAsync(_bed);
        await scenario.SetUpAsync(_uninterrupted);
        await scenario.RunAsync(_uninterrupted.Engine);

        using (var harness = Harness.Start(_bed, ["--pause-at", step, .. scenario.Operation]))
        {
            await harness.WaitForLineAsync("PAUSED ");
            harness.KillNine();
        }

        AssertSafeAfterCrash(_bed, scenario, state, step + " (kill -9)");
        var again = await scenario.RunAsync(_bed.NewEngine());
        Assert.Contains(again.Outcome, new[] { OperationOutcome.Completed, OperationOutcome.AlreadyDone });
        AssertSameFinalState(_uninterrupted, _bed, step + " (kill -9)");
    }

    [Fact]
    public async Task After_a_kill_the_harness_run_again_without_a_pause_finishes_the_job()
    {
        var scenario = CrashScenario.Named("delete-snapshot-middle");
        await scenario.SetUpAsync(_bed);
        await scenario.SetUpAsync(_uninterrupted);
        await scenario.RunAsync(_uninterrupted.Engine);
        using (var harness = Harness.Start(_bed, ["--pause-at", OperationSteps.DeleteSnapshotRebased, .. scenario.Operation]))
        {
            await harness.WaitForLineAsync("PAUSED ");
            harness.KillNine();
        }

        using var rerun = Harness.Start(_bed, scenario.Operation);
        var last = await rerun.WaitForExitAsync();

        Assert.Equal(0, rerun.ExitCode);
        Assert.StartsWith("OK Completed", last, StringComparison.Ordinal);
        AssertSameFinalState(_uninterrupted, _bed, "rebased (kill -9, harness re-run)");
    }

    [Theory]
    [InlineData("delete-snapshot-newest")]
    [InlineData("create-volume-from-snapshot")]
    public async Task Killing_qemu_img_and_the_process_in_the_middle_of_a_long_merge_or_copy_leaves_a_healthy_share_and_a_rerun_finishes(string operation)
    {
        var scenario = CrashScenario.Named(operation);
        var state = await scenario.SetUpAsync(_bed);
        // ~200 MiB for qemu-img to merge or copy, so the kill lands while it works.
        await _bed.Engine.ExtendVolumeAsync(new ExtendVolumeRequest(Export, CrashState.V, 256 * MiB));
        _bed.GuestWrite(CrashState.V, 32 * MiB, 200 * MiB, 0x7e);
        state.VNow = _bed.SaveReference(CrashState.V, "v-now-big");

        // The 200 MiB are in C's overlay: by cost the delete would pull B's 3 MiB up instead. This is about a long commit;
        // the re-run below plans nothing and commits on, as journaled (the long pull-up has its own test).
        using (var harness = Harness.Start(_bed, ["--pause-on-progress", "--merge-planning", nameof(MergePlanning.AlwaysCommitDown), .. scenario.Operation]))
        {
            var line = await harness.WaitForLineAsync("PROGRESS ", "OK ");
            Assert.StartsWith("PROGRESS", line, StringComparison.Ordinal);
            harness.KillNine();
        }

        Assert.NotEmpty(JournalEntries(_bed.Share)); // killed before the end: the operation is still pending
        // SIGKILL took qemu-img with it; a process in uninterruptible I/O dies when that I/O returns, so wait for
        // it to be gone before looking at the share (it must not write after the checks start).
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (QemuImgProcessesOn(_bed.Share.LocalPath).Count > 0 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }
        Assert.Empty(QemuImgProcessesOn(_bed.Share.LocalPath));
        AssertSafeAfterCrash(_bed, scenario, state, "in the middle of qemu-img (kill -9)");
        var again = await scenario.RunAsync(_bed.NewEngine());
        Assert.Equal(OperationOutcome.Completed, again.Outcome);
        Assert.Empty(JournalEntries(_bed.Share));
        Assert.Empty(_bed.ShareProblems());
        Assert.DoesNotContain(_bed.Listing(), n => n.Contains(".tmp-", StringComparison.Ordinal));
        if (operation == "delete-snapshot-newest")
        {
            Assert.False(File.Exists(_bed.PathOf($"volume-{CrashState.V}.{CrashState.C}")));
            var chain = _bed.Engine.ReadChain(Export, CrashState.V);
            Assert.True(_bed.SameContents(_bed.PathOf(chain.Active.FileName), chain.Active.Format, state.VNow));
            Assert.True(_bed.SnapshotShows(CrashState.V, CrashState.A, state.SnapshotReferences[CrashState.A]));
            Assert.True(_bed.SnapshotShows(CrashState.V, CrashState.B, state.SnapshotReferences[CrashState.B]));
        }
        else
        {
            Assert.True(_bed.SameContents(_bed.PathOf($"volume-{CrashState.W}"), Storage.Layout.ImageFormat.Raw, state.SnapshotReferences[CrashState.B]));
        }
    }

    /// <summary>The pull-up's long step, killed half way: C's overlay holds ~100 MiB and D's (the newest) ~150 MiB, so
    /// deleting D pulls C up into D (a safe rebase of D onto B's overlay), and the kill lands while qemu-img copies.</summary>
    [Fact]
    public async Task Killing_qemu_img_and_the_process_in_the_middle_of_a_long_pull_up_leaves_a_healthy_share_and_a_rerun_finishes()
    {
        var scenario = CrashScenario.Named("delete-snapshot-newest");
        var state = await scenario.SetUpAsync(_bed);
        await _bed.Engine.ExtendVolumeAsync(new ExtendVolumeRequest(Export, CrashState.V, 256 * MiB));
        _bed.GuestWrite(CrashState.V, 32 * MiB, 100 * MiB, 0x5a);
        await _bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, CrashState.V, CrashState.D));
        _bed.GuestWrite(CrashState.V, 100 * MiB, 150 * MiB, 0x6b);
        state.VNow = _bed.SaveReference(CrashState.V, "v-now-big");
        string[] deleteD = ["delete-snapshot", CrashState.V.ToString(), CrashState.D.ToString()];

        using (var harness = Harness.Start(_bed, ["--pause-on-progress", .. deleteD]))
        {
            var line = await harness.WaitForLineAsync("PROGRESS ", "OK ");
            Assert.StartsWith("PROGRESS", line, StringComparison.Ordinal);
            harness.KillNine();
        }

        var journal = OperationJournal.Read(_bed.Share, CrashState.V);
        Assert.Equal(MergeDirection.PullUp, journal?.Merge?.Direction);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (QemuImgProcessesOn(_bed.Share.LocalPath).Count > 0 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }
        Assert.Empty(QemuImgProcessesOn(_bed.Share.LocalPath));
        AssertSafeAfterCrash(_bed, scenario, state, "in the middle of a pull-up (kill -9)");
        Assert.True(_bed.SnapshotFileShows(CrashState.V, CrashState.C, state.SnapshotReferences[CrashState.C]));

        var again = await Operations.RunAsync(_bed.NewEngine(), Export, deleteD[0], deleteD[1..]);

        Assert.Equal(OperationOutcome.Completed, again.Outcome);
        Assert.Contains("pull-up", again.Message, StringComparison.Ordinal);
        Assert.Empty(JournalEntries(_bed.Share));
        Assert.Empty(_bed.ShareProblems());
        Assert.DoesNotContain(_bed.Listing(), n => n.Contains(".tmp-", StringComparison.Ordinal));
        Assert.False(File.Exists(_bed.PathOf($"volume-{CrashState.V}.{CrashState.D}")));
        var chain = _bed.Engine.ReadChain(Export, CrashState.V);
        Assert.Equal($"volume-{CrashState.V}.{CrashState.C}", chain.Active.FileName);
        Assert.True(_bed.SameContents(_bed.PathOf(chain.Active.FileName), chain.Active.Format, state.VNow));
        foreach (var s in new[] { CrashState.A, CrashState.B, CrashState.C })
        {
            Assert.True(_bed.SnapshotShows(CrashState.V, s, state.SnapshotReferences[s]));
        }
    }

    /// <summary>A real crash kills the worker, not its children: without care, qemu-img would go on merging as an
    /// orphan while the volume lock is already free. The runner starts qemu-img under setpriv --pdeathsig KILL,
    /// so it dies with the worker, and a re-run straight away finishes the job.</summary>
    [Fact]
    public async Task Killing_only_the_worker_in_the_middle_of_a_merge_takes_its_qemu_img_with_it_and_a_rerun_finishes()
    {
        var scenario = CrashScenario.Named("delete-snapshot-newest");
        var state = await scenario.SetUpAsync(_bed);
        await _bed.Engine.ExtendVolumeAsync(new ExtendVolumeRequest(Export, CrashState.V, 256 * MiB));
        _bed.GuestWrite(CrashState.V, 32 * MiB, 200 * MiB, 0x6d);
        state.VNow = _bed.SaveReference(CrashState.V, "v-now-big");

        using (var harness = Harness.Start(_bed, ["--pause-on-progress", "--merge-planning", nameof(MergePlanning.AlwaysCommitDown), .. scenario.Operation]))
        {
            await harness.WaitForLineAsync("PROGRESS ");
            Assert.NotEmpty(QemuImgProcessesOn(_bed.Share.LocalPath));
            harness.KillOnlyTheProcess();
        }

        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(5);
        while (QemuImgProcessesOn(_bed.Share.LocalPath).Count > 0 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(20);
        }
        Assert.Empty(QemuImgProcessesOn(_bed.Share.LocalPath));
        await scenario.RunAsync(_bed.NewEngine());

        Assert.Empty(JournalEntries(_bed.Share));
        Assert.Empty(_bed.ShareProblems());
        var chain = _bed.Engine.ReadChain(Export, CrashState.V);
        Assert.True(_bed.SameContents(_bed.PathOf(chain.Active.FileName), chain.Active.Format, state.VNow));
        Assert.True(_bed.SnapshotShows(CrashState.V, CrashState.A, state.SnapshotReferences[CrashState.A]));
        Assert.True(_bed.SnapshotShows(CrashState.V, CrashState.B, state.SnapshotReferences[CrashState.B]));
        Assert.False(File.Exists(_bed.PathOf($"volume-{CrashState.V}.{CrashState.C}")));
    }

    [Fact]
    public async Task A_second_process_gets_VolumeBusy_while_the_first_holds_the_lock_and_succeeds_once_the_first_is_killed()
    {
        var scenario = CrashScenario.Named("delete-snapshot-middle");
        await scenario.SetUpAsync(_bed);
        using var holder = Harness.Start(_bed, ["--pause-at", OperationSteps.DeleteSnapshotCommitted, .. scenario.Operation]);
        await holder.WaitForLineAsync("PAUSED ");
        Assert.True(VolumeLock.IsHeld(_bed.Share, CrashState.V));
        var before = Snapshot(_bed.Share.LocalPath);

        // Another process...
        using (var other = Harness.Start(_bed, ["--lock-timeout-ms", "1000", "create-snapshot", CrashState.V.ToString(), CrashState.D.ToString()]))
        {
            var last = await other.WaitForExitAsync();
            Assert.Equal(CrashHarness.Harness.ExitFailed, other.ExitCode);
            Assert.StartsWith("ERROR VolumeBusy", last, StringComparison.Ordinal);
        }
        // ...and an engine in this process.
        var options = new VolumeEngineOptions { LockTimeout = TimeSpan.FromSeconds(1) };
        var engine = new VolumeEngine(new Storage.Shares.ShareMap([_bed.Share]), _bed.Qemu,
            Microsoft.Extensions.Options.Options.Create(options), Microsoft.Extensions.Logging.Abstractions.NullLogger<VolumeEngine>.Instance);
        var busy = await Assert.ThrowsAsync<StorageException>(() => engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, CrashState.V, CrashState.D)));
        Assert.Equal(StorageErrorCode.VolumeBusy, busy.Code);
        Assert.True(busy.IsTransient);
        Assert.Equal(before, Snapshot(_bed.Share.LocalPath));

        holder.KillNine();

        var retry = await engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, CrashState.V, CrashState.D));
        Assert.Equal(OperationOutcome.Completed, retry.Outcome);
        Assert.Single(retry.FinishedInterrupted); // the killed delete was finished first
        Assert.DoesNotContain(CrashState.B, _bed.Info(CrashState.V)!.Snapshots.Keys);
        Assert.Empty(_bed.ShareProblems());
    }

    /// <summary>qemu-img processes (of any parent) working on files of <paramref name="shareDirectory"/>.</summary>
    private static List<int> QemuImgProcessesOn(string shareDirectory)
    {
        var found = new List<int>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out var pid))
            {
                continue;
            }
            try
            {
                var argv = File.ReadAllText(Path.Combine(dir, "cmdline")).Split('\0');
                if (argv.Any(a => Path.GetFileName(a) == "qemu-img") && argv.Any(a => a.Contains(shareDirectory, StringComparison.Ordinal)))
                {
                    found.Add(pid);
                }
            }
            catch (IOException)
            {
            }
            catch (UnauthorizedAccessException)
            {
            }
        }
        return found;
    }

    /// <summary>The crash harness as a child process: <c>dotnet NfsVolumeWorker.CrashHarness.dll</c> next to this assembly.</summary>
    private sealed class Harness : IDisposable
    {
        private readonly Process _process;
        private readonly List<string> _lines = [];
        private readonly SemaphoreSlim _lineAdded = new(0);

        private Harness(Process process)
        {
            _process = process;
            _process.OutputDataReceived += (_, e) =>
            {
                if (e.Data is not null)
                {
                    lock (_lines)
                    {
                        _lines.Add(e.Data);
                    }
                    _lineAdded.Release();
                }
            };
            _process.BeginOutputReadLine();
            _process.BeginErrorReadLine();
        }

        public int ExitCode => _process.ExitCode;

        public static Harness Start(EngineTestBed bed, string[] args)
        {
            var dll = Path.Combine(AppContext.BaseDirectory, "NfsVolumeWorker.CrashHarness.dll");
            Assert.True(File.Exists(dll), $"{dll} is missing: the test project references the harness project");
            var psi = new ProcessStartInfo(DotnetHost()) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (var a in new[] { dll, bed.MountBase, Export }.Concat(args))
            {
                psi.ArgumentList.Add(a);
            }
            return new Harness(Process.Start(psi) ?? throw new InvalidOperationException("could not start the crash harness"));
        }

        /// <summary>Waits for a stdout line starting with one of <paramref name="prefixes"/>; fails on exit or after a minute.</summary>
        public async Task<string> WaitForLineAsync(params string[] prefixes)
        {
            var deadline = DateTime.UtcNow + Patience;
            var seen = 0;
            while (DateTime.UtcNow < deadline)
            {
                lock (_lines)
                {
                    for (; seen < _lines.Count; seen++)
                    {
                        if (prefixes.Any(p => _lines[seen].StartsWith(p, StringComparison.Ordinal)))
                        {
                            return _lines[seen];
                        }
                    }
                }
                if (_process.HasExited && !await _lineAdded.WaitAsync(200))
                {
                    Assert.Fail($"the harness exited ({_process.ExitCode}) before printing {string.Join(" or ", prefixes)}: {string.Join(" | ", _lines)}");
                }
                await _lineAdded.WaitAsync(TimeSpan.FromMilliseconds(100));
            }
            Assert.Fail($"no {string.Join(" or ", prefixes)} from the harness within {Patience}: {string.Join(" | ", _lines)}");
            return "";
        }

        public async Task<string> WaitForExitAsync()
        {
            using var cts = new CancellationTokenSource(Patience);
            await _process.WaitForExitAsync(cts.Token);
            _process.WaitForExit(); // drains the output
            lock (_lines)
            {
                return _lines.LastOrDefault() ?? "";
            }
        }

        /// <summary>SIGKILL to the harness alone, as after a real crash (its qemu-img child is not signalled by us).</summary>
        public void KillOnlyTheProcess()
        {
            _process.Kill(entireProcessTree: false);
            _process.WaitForExit();
        }

        /// <summary>SIGKILL to the harness and every process it started (qemu-img), then waits until they are gone.</summary>
        public void KillNine()
        {
            _process.Kill(entireProcessTree: true);
            _process.WaitForExit();
        }

        public void Dispose()
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
                _process.WaitForExit();
            }
            _process.Dispose();
            _lineAdded.Dispose();
        }

        private static string DotnetHost() =>
            Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host && File.Exists(host)
                ? host
                : Environment.ProcessPath is { } self && Path.GetFileNameWithoutExtension(self) == "dotnet" ? self : RequiredTool.Find("dotnet", "dotnet-sdk-10.0");
    }
}
