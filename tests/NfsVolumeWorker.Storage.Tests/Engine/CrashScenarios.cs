using System.Globalization;
using NfsVolumeWorker.CrashHarness;
using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Tests.Support;
using static NfsVolumeWorker.Storage.Engine.OperationSteps;
using static NfsVolumeWorker.Storage.Tests.Support.EngineTestBed;

namespace NfsVolumeWorker.Storage.Tests.Engine;

/// <summary>The volumes every crash scenario starts from. The ids are fixed, so two beds set up the same way
/// hold byte-identical .info files and the same file names (an interrupted run is compared with an uninterrupted one).</summary>
public sealed class CrashState
{
    public static readonly Guid V = Guid.Parse("0f6a2e8c-5d1b-4c1e-9a57-2b9d2f6c1e10");
    public static readonly Guid U = Guid.Parse("1a2b3c4d-0000-4000-8000-00000000000a");
    public static readonly Guid W = Guid.Parse("2b3c4d5e-0000-4000-8000-00000000000b");
    public static readonly Guid A = Guid.Parse("aaaaaaaa-0000-4000-8000-000000000001");
    public static readonly Guid B = Guid.Parse("bbbbbbbb-0000-4000-8000-000000000002");
    public static readonly Guid C = Guid.Parse("cccccccc-0000-4000-8000-000000000003");
    public static readonly Guid D = Guid.Parse("dddddddd-0000-4000-8000-000000000004");
    public static readonly Guid E = Guid.Parse("eeeeeeee-0000-4000-8000-000000000005");
    public static readonly Guid F = Guid.Parse("ffffffff-0000-4000-8000-000000000006");

    /// <summary>Snapshot id to a flat raw copy of what the volume showed when it was taken.</summary>
    public Dictionary<Guid, string> SnapshotReferences { get; } = [];

    /// <summary>What volume V shows now (before the operation).</summary>
    public string VNow { get; set; } = "";

    /// <summary>What volume U shows now.</summary>
    public string UNow { get; set; } = "";

    /// <summary>Builds V (64 MiB raw, snapshots A, B, C with data written between them) and U (32 MiB raw, no snapshots).</summary>
    public static async Task<CrashState> SetUpAsync(EngineTestBed bed)
    {
        var state = new CrashState();
        var engine = bed.Engine;
        await engine.CreateVolumeAsync(new CreateVolumeRequest(Export, V, 64 * MiB, ImageFormat.Raw));
        await engine.CreateVolumeAsync(new CreateVolumeRequest(Export, U, 32 * MiB, ImageFormat.Raw));
        bed.GuestWrite(U, MiB, 2 * MiB, 0x55);
        state.UNow = bed.SaveReference(U, "u-now");
        byte pattern = 0x11;
        var offset = 0L;
        foreach (var snapshot in new[] { A, B, C })
        {
            bed.GuestWrite(V, offset, 3 * MiB, pattern);
            state.SnapshotReferences[snapshot] = bed.SaveReference(V, "snap-" + snapshot);
            await engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, V, snapshot));
            offset += 2 * MiB;
            pattern += 0x11;
        }
        bed.GuestWrite(V, offset, 3 * MiB, pattern);
        state.VNow = bed.SaveReference(V, "v-now");
        return state;
    }
}

/// <summary>One operation of the crash matrix: how to set it up and run it, every step it passes through in
/// order, and what must hold after a crash at any of them.</summary>
/// <param name="Name">Shows up in test names.</param>
/// <param name="Operation">Harness operation name and arguments (see <see cref="Operations"/>).</param>
/// <param name="Steps">The steps an uninterrupted run passes through, in order (checked by the tests).</param>
/// <param name="Source">The volume whose lock and journal the operation uses.</param>
/// <param name="Going">Snapshots of V the operation removes (their data is not checked after a crash).</param>
/// <param name="KeepsVData">False when the operation changes what V shows (revert, delete).</param>
/// <param name="Target">The new volume of a clone, with the reference it must show.</param>
/// <param name="PreparedBy">Extra set-up after <see cref="CrashState.SetUpAsync"/>.</param>
/// <param name="DifferentNext">A different operation on the same volume to run after the crash.</param>
public sealed record CrashScenario(
    string Name,
    string[] Operation,
    string[] Steps,
    Guid Source,
    Guid[] Going,
    bool KeepsVData,
    Func<CrashState, string>? Target = null,
    Func<EngineTestBed, Task>? PreparedBy = null,
    string[]? DifferentNext = null)
{
    private static string Id(Guid g) => g.ToString();

    private static string Bytes(long b) => b.ToString(CultureInfo.InvariantCulture);

    private static readonly string[] DeleteSnapshotSteps = [DeleteSnapshotJournaled, DeleteSnapshotCommitted, DeleteSnapshotRebased, DeleteSnapshotInfoWritten, DeleteSnapshotOverlayDeleted];

    private static readonly string[] DeleteNewestSteps = [DeleteSnapshotJournaled, DeleteSnapshotCommitted, DeleteSnapshotInfoWritten, DeleteSnapshotOverlayDeleted];

    private static readonly string[] PullUpMiddleSteps = [DeleteSnapshotJournaled, DeleteSnapshotPulledUp, DeleteSnapshotLowerReplaced, DeleteSnapshotRebased, DeleteSnapshotInfoWritten, DeleteSnapshotOverlayDeleted];

    private static readonly string[] PullUpNewestSteps = [DeleteSnapshotJournaled, DeleteSnapshotPulledUp, DeleteSnapshotLowerReplaced, DeleteSnapshotInfoWritten, DeleteSnapshotOverlayDeleted];

    /// <summary>24 MiB more in C's overlay (the active image) than in B's: deleting C then pulls B's overlay up into C's.</summary>
    private static void GrowC(EngineTestBed bed) => bed.GuestWrite(CrashState.V, 16 * MiB, 24 * MiB, 0x77);

    private static string[] SnapshotE(Guid volume) => ["create-snapshot", Id(volume), Id(CrashState.E)];

    /// <summary>Snapshot D taken right after C with nothing written since: D's overlay is the active image and maps no data.</summary>
    private static Task<OperationResult> SnapshotDOnTop(EngineTestBed bed) => bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, CrashState.V, CrashState.D));

    /// <summary>Snapshot D with nothing written before snapshot E is taken on it, then a write: D's overlay is a middle
    /// image that maps no data, under E's overlay (the active image) that does.</summary>
    private static async Task EmptyDUnderE(EngineTestBed bed)
    {
        await SnapshotDOnTop(bed);
        await bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, CrashState.V, CrashState.E));
        bed.GuestWrite(CrashState.V, 40 * MiB, MiB, 0x66);
    }

    public static readonly CrashScenario[] All =
    [
        new("create-volume", ["create-volume", Id(CrashState.W), Bytes(32 * MiB), "raw"],
            [CreateVolumeTempWritten, CreateVolumeRenamed], CrashState.W, [], true,
            DifferentNext: ["delete-volume", Id(CrashState.W)]),
        new("delete-volume", ["delete-volume", Id(CrashState.V)],
            [DeleteVolumeJournaled, DeleteVolumeInfoDeleted, DeleteVolumeFileDeleted, DeleteVolumeFileDeleted, DeleteVolumeFileDeleted, DeleteVolumeFileDeleted],
            CrashState.V, [CrashState.A, CrashState.B, CrashState.C], false,
            DifferentNext: ["create-volume", Id(CrashState.V), Bytes(64 * MiB), "raw"]),
        new("create-snapshot", ["create-snapshot", Id(CrashState.V), Id(CrashState.D)],
            [CreateSnapshotOverlayCreated, CreateSnapshotInfoWritten], CrashState.V, [], true,
            DifferentNext: SnapshotE(CrashState.V)),
        new("create-snapshot-by-qemu-img", ["create-snapshot", Id(CrashState.V), Id(CrashState.D)],
            [CreateSnapshotOverlayCreated, CreateSnapshotOverlayRenamed, CreateSnapshotInfoWritten], CrashState.V, [], true,
            PreparedBy: bed =>
            {
                // Every engine made on this bed from here on (the crashing one, the re-run) writes overlays with qemu-img.
                bed.Options_.NativeOverlayHeaders = false;
                return Task.CompletedTask;
            },
            DifferentNext: SnapshotE(CrashState.V)),
        new("delete-snapshot-newest", ["delete-snapshot", Id(CrashState.V), Id(CrashState.C)],
            DeleteNewestSteps, CrashState.V, [CrashState.C], true, DifferentNext: SnapshotE(CrashState.V)),
        new("delete-snapshot-middle", ["delete-snapshot", Id(CrashState.V), Id(CrashState.B)],
            DeleteSnapshotSteps, CrashState.V, [CrashState.B], true, DifferentNext: SnapshotE(CrashState.V)),
        new("delete-snapshot-oldest", ["delete-snapshot", Id(CrashState.V), Id(CrashState.A)],
            DeleteSnapshotSteps, CrashState.V, [CrashState.A], true, DifferentNext: SnapshotE(CrashState.V)),
        new("delete-snapshot-newest-empty", ["delete-snapshot", Id(CrashState.V), Id(CrashState.D)],
            [DeleteSnapshotInfoWritten, DeleteSnapshotOverlayDeleted], CrashState.V, [CrashState.D], true,
            PreparedBy: SnapshotDOnTop, DifferentNext: SnapshotE(CrashState.V)),
        new("delete-snapshot-middle-empty", ["delete-snapshot", Id(CrashState.V), Id(CrashState.D)],
            [DeleteSnapshotJournaled, DeleteSnapshotRebased, DeleteSnapshotInfoWritten, DeleteSnapshotOverlayDeleted], CrashState.V, [CrashState.D], true,
            PreparedBy: EmptyDUnderE, DifferentNext: ["create-snapshot", Id(CrashState.V), Id(CrashState.F)]),
        new("delete-snapshot-newest-pull-up-empty-lower", ["delete-snapshot", Id(CrashState.V), Id(CrashState.E)],
            PullUpNewestSteps, CrashState.V, [CrashState.E], true,
            PreparedBy: async bed =>
            {
                // D's overlay maps nothing (E taken right after D), E's holds 24 MiB: deleting E pulls D's overlay up,
                // which has nothing to move (a metadata-only rebase of E's overlay onto C's).
                await SnapshotDOnTop(bed);
                await bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, CrashState.V, CrashState.E));
                bed.GuestWrite(CrashState.V, 16 * MiB, 24 * MiB, 0x78);
            },
            DifferentNext: ["create-snapshot", Id(CrashState.V), Id(CrashState.F)]),
        new("delete-snapshot-newest-after-extend", ["delete-snapshot", Id(CrashState.V), Id(CrashState.C)],
            [DeleteSnapshotJournaled, DeleteSnapshotBaseGrown, DeleteSnapshotCommitted, DeleteSnapshotInfoWritten, DeleteSnapshotOverlayDeleted],
            CrashState.V, [CrashState.C], true,
            PreparedBy: bed => bed.Engine.ExtendVolumeAsync(new ExtendVolumeRequest(Export, CrashState.V, 96 * MiB)),
            DifferentNext: SnapshotE(CrashState.V)),
        new("delete-snapshot-newest-pull-up", ["delete-snapshot", Id(CrashState.V), Id(CrashState.C)],
            PullUpNewestSteps, CrashState.V, [CrashState.C], true,
            PreparedBy: bed =>
            {
                GrowC(bed);
                return Task.CompletedTask;
            },
            DifferentNext: SnapshotE(CrashState.V)),
        new("delete-snapshot-middle-pull-up", ["delete-snapshot", Id(CrashState.V), Id(CrashState.C)],
            PullUpMiddleSteps, CrashState.V, [CrashState.C], true,
            PreparedBy: bed =>
            {
                GrowC(bed);
                return bed.Engine.CreateSnapshotAsync(new CreateSnapshotRequest(Export, CrashState.V, CrashState.D));
            },
            DifferentNext: SnapshotE(CrashState.V)),
        new("create-volume-from-snapshot", ["create-volume-from-snapshot", Id(CrashState.V), Id(CrashState.B), Id(CrashState.W), "raw", Bytes(96 * MiB)],
            [CloneJournaled, CloneCopied, CloneResized, CloneRenamed], CrashState.V, [], true,
            Target: s => s.SnapshotReferences[CrashState.B], DifferentNext: SnapshotE(CrashState.V)),
        new("clone-volume-with-snapshots", ["clone-volume", Id(CrashState.V), Id(CrashState.W), "raw", Bytes(96 * MiB)],
            [CloneJournaled, CreateSnapshotOverlayCreated, CreateSnapshotInfoWritten, CloneCopied, CloneResized, CloneRenamed,
             DeleteSnapshotInfoWritten, DeleteSnapshotOverlayDeleted],
            CrashState.V, [], true, Target: s => s.VNow, DifferentNext: SnapshotE(CrashState.V)),
        new("clone-volume-without-snapshots", ["clone-volume", Id(CrashState.U), Id(CrashState.W), "qcow2"],
            [CloneJournaled, CloneCopied, CloneRenamed], CrashState.U, [], true, Target: s => s.UNow, DifferentNext: SnapshotE(CrashState.U)),
        new("revert", ["revert", Id(CrashState.V), Id(CrashState.C)],
            [RevertOverlayCreated, RevertRenamed], CrashState.V, [], false, DifferentNext: SnapshotE(CrashState.V)),
        new("extend", ["extend", Id(CrashState.V), Bytes(96 * MiB)],
            [ExtendResized], CrashState.V, [], true, DifferentNext: SnapshotE(CrashState.V)),
    ];

    public static CrashScenario Named(string name) => All.Single(s => s.Name == name);

    /// <summary>Every (scenario, step[#n]) pair: the n-th time the operation passes a step it passes more than once.</summary>
    public static IEnumerable<object[]> Matrix(params string[] only) =>
        All.Where(s => only.Length == 0 || only.Contains(s.Name)).SelectMany(s => s.StepLabels().Select(step => new object[] { s.Name, step }));

    public IEnumerable<string> StepLabels()
    {
        var seen = new Dictionary<string, int>();
        foreach (var step in Steps)
        {
            var n = seen[step] = seen.GetValueOrDefault(step) + 1;
            yield return n == 1 ? step : $"{step}#{n}";
        }
    }

    public static (string Step, int Occurrence) ParseLabel(string label)
    {
        var hash = label.LastIndexOf('#');
        return hash < 0 ? (label, 1) : (label[..hash], int.Parse(label[(hash + 1)..], CultureInfo.InvariantCulture));
    }

    public async Task<CrashState> SetUpAsync(EngineTestBed bed)
    {
        var state = await CrashState.SetUpAsync(bed);
        if (PreparedBy is not null)
        {
            await PreparedBy(bed);
            state.VNow = bed.SaveReference(CrashState.V, "v-now-prepared");
        }
        return state;
    }

    public Task<OperationResult> RunAsync(VolumeEngine engine, IProgress<OperationProgress>? progress = null) =>
        Operations.RunAsync(engine, Export, Operation[0], Operation[1..], progress);

    public Task<OperationResult> RunDifferentNextAsync(VolumeEngine engine) =>
        Operations.RunAsync(engine, Export, DifferentNext![0], DifferentNext[1..]);

    public override string ToString() => Name;
}

/// <summary>Counts steps and throws <see cref="InjectedCrash"/> at the chosen one; records the steps it saw.</summary>
public sealed class CrashAtStep(string step, int occurrence) : IStepObserver
{
    private int _seen;

    public List<string> Seen { get; } = [];

    public bool Crashed { get; private set; }

    public void OnStep(string stepName, Guid volumeId)
    {
        Seen.Add(stepName);
        if (stepName == step && ++_seen == occurrence)
        {
            Crashed = true;
            throw new InjectedCrash(stepName);
        }
    }
}

/// <summary>Records every step.</summary>
public sealed class StepRecorder : IStepObserver
{
    public List<string> Seen { get; } = [];

    public void OnStep(string stepName, Guid volumeId) => Seen.Add(stepName);
}

/// <summary>
/// Stands for the process dying right after a step. It derives from <see cref="OperationCanceledException"/>
/// because the engine's failure handlers (the clone's roll-back) deliberately leave cancellations alone: a real
/// crash runs no handler at all. The in-process matrix is therefore slightly kinder than a crash (a
/// <c>catch { delete temp; throw; }</c> still runs); the kill -9 matrix is the ground truth for that.
/// </summary>
public sealed class InjectedCrash(string step) : OperationCanceledException($"injected crash after step {step}")
{
    public string Step { get; } = step;
}
