using NfsVolumeWorker.Storage.Engine;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Shares;
using NfsVolumeWorker.Storage.Tests.Support;
using static NfsVolumeWorker.Storage.Tests.Support.EngineTestBed;

namespace NfsVolumeWorker.Storage.Tests.Engine;

/// <summary>What must hold on a share after a crash, and after the job was finished.</summary>
public static class CrashAssertions
{
    /// <summary>The share is healthy, every snapshot that is not going reads back its data, the volume still shows
    /// what it showed, and a clone target either does not exist or is complete (never a half-written volume).</summary>
    public static void AssertSafeAfterCrash(EngineTestBed bed, CrashScenario scenario, CrashState state, string where)
    {
        var problems = bed.ShareProblems();
        Assert.True(problems.Count == 0, $"after a crash at {where}: {string.Join("; ", problems)}");
        if (scenario.Name == "delete-volume")
        {
            return; // every snapshot and the volume itself are going
        }
        foreach (var (snapshot, reference) in state.SnapshotReferences)
        {
            if (!scenario.Going.Contains(snapshot))
            {
                Assert.True(bed.SnapshotFileShows(CrashState.V, snapshot, reference), $"after a crash at {where}: snapshot {snapshot} no longer shows its data");
            }
        }
        if (scenario.KeepsVData)
        {
            var chain = bed.Engine.ReadChain(Export, CrashState.V);
            Assert.True(bed.SameContents(bed.PathOf(chain.Active.FileName), chain.Active.Format, state.VNow), $"after a crash at {where}: volume V no longer shows its data");
        }
        var target = bed.PathOf(VolumeFileNames.Base(CrashState.W));
        if (scenario.Target is not null && File.Exists(target))
        {
            Assert.True(bed.SameContents(target, FormatOf(target), scenario.Target(state)), $"after a crash at {where}: {target} exists but is not a complete copy");
        }
    }

    /// <summary>The share holds exactly what an uninterrupted run left: same names, same .info bytes, same
    /// chains and contents; no temp file, no journal entry.</summary>
    public static void AssertSameFinalState(EngineTestBed expected, EngineTestBed actual, string where)
    {
        Assert.Equal(expected.Listing(), actual.Listing());
        Assert.DoesNotContain(actual.Listing(), n => n.Contains(".tmp-", StringComparison.Ordinal));
        Assert.Empty(JournalEntries(actual.Share));
        Assert.Empty(actual.ShareProblems());
        foreach (var name in expected.Listing())
        {
            if (!VolumeFileNames.TryParse(name, out var volumeId, out var kind))
            {
                continue;
            }
            if (kind == VolumeFileKind.Info)
            {
                Assert.True(File.ReadAllBytes(expected.PathOf(name)).AsSpan().SequenceEqual(File.ReadAllBytes(actual.PathOf(name))),
                    $"{name} differs from the uninterrupted run's after a crash at {where}");
            }
            else if (kind == VolumeFileKind.Base)
            {
                AssertSameVolume(expected, actual, volumeId, where);
            }
        }
    }

    public static void AssertSameVolume(EngineTestBed expected, EngineTestBed actual, Guid volumeId, string where)
    {
        var e = expected.Engine.ReadChain(Export, volumeId);
        var a = actual.Engine.ReadChain(Export, volumeId);
        Assert.Equal(e.Images.Select(i => (i.FileName, i.Format, i.VirtualSize, i.BackingFile, i.BackingFormat)),
            a.Images.Select(i => (i.FileName, i.Format, i.VirtualSize, i.BackingFile, i.BackingFormat)));
        Assert.True(SameImages(expected.PathOf(e.Active.FileName), e.Active.Format, actual.PathOf(a.Active.FileName), a.Active.Format),
            $"volume {volumeId} shows other data than after the uninterrupted run (crash at {where})");
        foreach (var snapshot in e.Info.Snapshots.Keys)
        {
            var (ed, ad) = (e.SnapshotData(snapshot), a.SnapshotData(snapshot));
            Assert.True(SameImages(expected.PathOf(ed.FileName), ed.Format, actual.PathOf(ad.FileName), ad.Format),
                $"snapshot {snapshot} of {volumeId} shows other data than after the uninterrupted run (crash at {where})");
        }
    }

    public static bool SameImages(string first, ImageFormat firstFormat, string second, ImageFormat secondFormat)
    {
        var (code, _, stderr) = RequiredTool.Run(RequiredTool.QemuImg, "compare", "-f", firstFormat.ToQemuName(), "-F", secondFormat.ToQemuName(), first, second);
        return code switch
        {
            0 => true,
            1 => false,
            _ => throw new InvalidOperationException($"qemu-img compare failed: {stderr}"),
        };
    }

    public static ImageFormat FormatOf(string path) => IsQcow2(path) ? ImageFormat.Qcow2 : ImageFormat.Raw;

    public static List<string> JournalEntries(Share share)
    {
        var dir = Path.Combine(share.WorkerDirectory, "journal");
        return Directory.Exists(dir) ? Directory.EnumerateFileSystemEntries(dir).Select(p => Path.GetFileName(p)).ToList() : [];
    }

    /// <summary>Name, size, mtime and a hash of every entry of the share (recursively, so the worker's directory too).</summary>
    public static List<string> Snapshot(string root) =>
        Directory.EnumerateFileSystemEntries(root, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal).Select(path =>
        {
            var info = new FileInfo(path);
            if (info.LinkTarget is not null)
            {
                return $"{path} -> {info.LinkTarget}";
            }
            if (Directory.Exists(path))
            {
                return $"{path}/ {Directory.GetLastWriteTimeUtc(path):O}";
            }
            using var stream = File.OpenRead(path);
            var hash = Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(stream));
            return $"{path} {info.Length} {info.LastWriteTimeUtc:O} {hash}";
        }).ToList();
}
