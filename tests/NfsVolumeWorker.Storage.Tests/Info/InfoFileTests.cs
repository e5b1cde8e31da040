using System.Collections.Immutable;
using System.Text;
using System.Text.Json.Nodes;
using NfsVolumeWorker.Storage.Durability;
using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Storage.Info;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Tests.Support;

namespace NfsVolumeWorker.Storage.Tests.Info;

public sealed class InfoFileTests : IDisposable
{
    private const UnixFileMode Mode0640 = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead;

    private static readonly Guid VolumeId = Guid.Parse("0f6a2e8c-5d1b-4c1e-9a57-2b9d2f6c1e10");

    private readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    private string InfoPath => _dir.File(VolumeFileNames.Info(VolumeId));

    /// <summary>An info as Cinder leaves it after <paramref name="snapshots"/> snapshots.</summary>
    private static VolumeInfo CinderShaped(int snapshots)
    {
        var info = VolumeInfo.ActiveOnly(VolumeFileNames.Base(VolumeId));
        for (var i = 0; i < snapshots; i++)
        {
            var snapshotId = Guid.CreateVersion7();
            info = info.WithSnapshot(snapshotId, VolumeFileNames.Overlay(VolumeId, snapshotId));
        }
        return info;
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(7)]
    public void Serialized_info_matches_python_json_dump_byte_for_byte(int snapshots)
    {
        var info = CinderShaped(snapshots);
        var dict = new JsonObject { ["active"] = info.Active };
        foreach (var (id, overlay) in info.Snapshots)
        {
            dict[id.ToString("D")] = overlay;
        }
        var pythonFile = _dir.File("python.info");

        // What Cinder's _write_info_file does, given the same dict.
        RequiredTool.RunChecked(RequiredTool.Python3, "-c",
            "import json, sys\nwith open(sys.argv[2], 'w') as f:\n    json.dump(json.loads(sys.argv[1]), f, indent=1, sort_keys=True)",
            dict.ToJsonString(), pythonFile);

        Assert.Equal(File.ReadAllBytes(pythonFile), Encoding.UTF8.GetBytes(InfoFile.Serialize(info)));
        InfoFile.Write(InfoPath, info, Mode0640);
        Assert.Equal(File.ReadAllBytes(pythonFile), File.ReadAllBytes(InfoPath));
        Assert.Equal(info, InfoFile.Read(pythonFile));
    }

    [Fact]
    public void Written_info_reads_back_equal()
    {
        var info = CinderShaped(3);

        InfoFile.Write(InfoPath, info, Mode0640);

        var read = InfoFile.Read(InfoPath);
        Assert.Equal(info, read);
        Assert.Equal(info.Active, read!.Active);
    }

    [Fact]
    public void Reading_a_missing_info_file_returns_null()
    {
        Assert.Null(InfoFile.Read(InfoPath));
        Assert.Null(InfoFile.Read(Path.Combine(_dir.Path, "no-such-dir", "volume-x.info")));
    }

    public static TheoryData<string, string> CorruptContents => new()
    {
        { "", "is empty" },
        { "  \n", "is empty" },
        { """{"active": "volume-0f6a2e8c-5d1b-4c1e-9a57-2b9d2f6c1e10", """, "not valid JSON" },
        { """{"active": "volume-0f6a2e8c""", "not valid JSON" },
        { "[]", "array" },
        { "null", "null" },
        { "\"volume-x\"", "string" },
        { """{"active": 1}""", "number for 'active'" },
        { """{"active": null}""", "null for 'active'" },
        { """{}""", "no 'active'" },
        { """{"active": "volume-x", "not-a-uuid": "volume-x.y"}""", "'not-a-uuid'" },
        { """{"active": "volume-x", "0F6A2E8C-5D1B-4C1E-9A57-2B9D2F6C1E10": "volume-x.y"}""", "'0F6A2E8C-5D1B-4C1E-9A57-2B9D2F6C1E10'" },
        { """{"active": "volume-x", "{0f6a2e8c-5d1b-4c1e-9a57-2b9d2f6c1e10}": "volume-x.y"}""", "'{0f6a2e8c" },
        { """{"active": "volume-x", "0f6a2e8c-5d1b-4c1e-9a57-2b9d2f6c1e10": 5}""", "number for '0f6a2e8c" },
        { """{"active": "volume-x", "active": "volume-y"}""", "more than once" },
    };

    [Theory]
    [MemberData(nameof(CorruptContents))]
    public void Corrupt_info_files_are_refused_with_a_message_naming_the_file(string content, string problem)
    {
        File.WriteAllText(InfoPath, content);

        var error = Assert.Throws<StorageException>(() => InfoFile.Read(InfoPath));

        Assert.Equal(StorageErrorCode.InfoFileCorrupt, error.Code);
        Assert.Contains(InfoPath, error.Message, StringComparison.Ordinal);
        Assert.Contains(problem, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Invalid_utf8_is_corruption()
    {
        File.WriteAllBytes(InfoPath, [(byte)'{', (byte)'"', 0xC3, 0x28, (byte)'"', (byte)'}']);

        var error = Assert.Throws<StorageException>(() => InfoFile.Read(InfoPath));

        Assert.Equal(StorageErrorCode.InfoFileCorrupt, error.Code);
        Assert.Contains(InfoPath, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void An_info_file_over_one_mebibyte_is_refused_without_parsing()
    {
        // Valid JSON, so only the size can be the reason.
        var padding = new string(' ', InfoFile.MaxSizeBytes);
        File.WriteAllText(InfoPath, """{"active": "volume-x"}""" + padding);

        var error = Assert.Throws<StorageException>(() => InfoFile.Read(InfoPath));

        Assert.Equal(StorageErrorCode.InfoFileCorrupt, error.Code);
        Assert.Contains("larger than", error.Message, StringComparison.Ordinal);
        Assert.Contains(InfoPath, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_directory_at_the_info_path_is_corruption()
    {
        Directory.CreateDirectory(InfoPath);

        var error = Assert.Throws<StorageException>(() => InfoFile.Read(InfoPath));

        Assert.Equal(StorageErrorCode.InfoFileCorrupt, error.Code);
    }

    [Fact]
    public void A_symlink_at_the_info_path_is_refused_for_reading_and_writing_and_its_target_is_untouched()
    {
        var target = _dir.File("elsewhere.info");
        var original = InfoFile.Serialize(CinderShaped(1));
        File.WriteAllText(target, original);
        File.CreateSymbolicLink(InfoPath, target);

        var readError = Assert.Throws<StorageException>(() => InfoFile.Read(InfoPath));
        var writeError = Assert.Throws<StorageException>(() => InfoFile.Write(InfoPath, CinderShaped(2), Mode0640));

        Assert.Equal(StorageErrorCode.UnsafePath, readError.Code);
        Assert.Equal(StorageErrorCode.UnsafePath, writeError.Code);
        Assert.Equal(original, File.ReadAllText(target));
        Assert.Equal(target, new FileInfo(InfoPath).LinkTarget);
    }

    [Fact]
    public void A_dangling_symlink_at_the_info_path_is_refused_rather_than_read_as_missing()
    {
        File.CreateSymbolicLink(InfoPath, _dir.File("nowhere"));

        var error = Assert.Throws<StorageException>(() => InfoFile.Read(InfoPath));

        Assert.Equal(StorageErrorCode.UnsafePath, error.Code);
    }

    [Theory]
    [InlineData(UnixFileMode.UserRead | UnixFileMode.UserWrite)]
    [InlineData(Mode0640)]
    [InlineData(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.OtherRead)]
    public void Write_leaves_no_temp_file_behind_and_sets_the_given_mode(UnixFileMode mode)
    {
        InfoFile.Write(InfoPath, CinderShaped(2), mode);

        Assert.Equal([Path.GetFileName(InfoPath)], Directory.GetFiles(_dir.Path).Select(Path.GetFileName));
        Assert.DoesNotContain(Directory.GetFileSystemEntries(_dir.Path), p => DurableFile.IsTempName(Path.GetFileName(p)));
        Assert.Equal(mode, File.GetUnixFileMode(InfoPath));
    }

    [Fact]
    public void Write_over_an_existing_file_replaces_it_entirely()
    {
        var before = CinderShaped(5);
        InfoFile.Write(InfoPath, before, Mode0640);
        var after = VolumeInfo.ActiveOnly(VolumeFileNames.Base(VolumeId));

        InfoFile.Write(InfoPath, after, Mode0640);

        // Shorter content than before: any leftover bytes would show here.
        Assert.Equal(InfoFile.Serialize(after), File.ReadAllText(InfoPath));
        Assert.Equal(after, InfoFile.Read(InfoPath));
        Assert.Single(Directory.GetFileSystemEntries(_dir.Path));
    }

    /// <summary>Every writer of a .info holds the volume lock, so its temp file has one name: a write killed before its
    /// rename (found by the chaos test: kill -9 inside a delete's .info write) leaves a temp the next write replaces.</summary>
    [Fact]
    public void A_temp_file_left_by_a_killed_write_is_replaced_by_the_next_write_not_left_beside_it()
    {
        var temp = _dir.File(DurableFile.SoleWriterTempName(Path.GetFileName(InfoPath)));
        File.WriteAllText(temp, "{\n \"active\": \"volu"); // torn, as a kill leaves it
        var info = CinderShaped(2);

        InfoFile.Write(InfoPath, info, Mode0640);

        Assert.Equal(info, InfoFile.Read(InfoPath));
        Assert.Equal([Path.GetFileName(InfoPath)], Directory.GetFileSystemEntries(_dir.Path).Select(Path.GetFileName));
    }

    [Fact]
    public void A_symbolic_link_planted_at_the_temp_name_is_removed_not_followed()
    {
        using var outside = new TempDirectory();
        var victim = outside.File("victim");
        File.WriteAllText(victim, "untouched");
        File.CreateSymbolicLink(_dir.File(DurableFile.SoleWriterTempName(Path.GetFileName(InfoPath))), victim);

        InfoFile.Write(InfoPath, CinderShaped(1), Mode0640);

        Assert.Equal("untouched", File.ReadAllText(victim));
        Assert.Equal([Path.GetFileName(InfoPath)], Directory.GetFileSystemEntries(_dir.Path).Select(Path.GetFileName));
        Assert.Null(new FileInfo(InfoPath).LinkTarget);
    }

    [Fact]
    public void Written_file_is_utf8_without_byte_order_mark_and_without_trailing_newline()
    {
        InfoFile.Write(InfoPath, VolumeInfo.ActiveOnly("volume-é"), Mode0640);

        var bytes = File.ReadAllBytes(InfoPath);
        Assert.Equal((byte)'{', bytes[0]);
        Assert.Equal((byte)'}', bytes[^1]);
        Assert.Equal("{\n \"active\": \"volume-\\u00e9\"\n}", Encoding.ASCII.GetString(bytes));
    }

    [Fact]
    public void Parse_accepts_what_cinder_writes_and_keys_snapshots_by_id()
    {
        var snapshotId = Guid.Parse("a1b2c3d4-0000-4000-8000-000000000001");
        var overlay = VolumeFileNames.Overlay(VolumeId, snapshotId);
        var text = $"{{\n \"{snapshotId:D}\": \"{overlay}\",\n \"active\": \"{overlay}\"\n}}";

        var info = InfoFile.Parse(text, "test.info");

        Assert.Equal(overlay, info.Active);
        Assert.Equal(ImmutableDictionary<Guid, string>.Empty.Add(snapshotId, overlay), info.Snapshots);
    }
}
