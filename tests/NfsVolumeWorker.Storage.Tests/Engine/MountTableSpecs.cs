using NfsVolumeWorker.Storage.Shares;

namespace NfsVolumeWorker.Storage.Tests.Engine;

/// <summary>The share's mount decides whether a working copy_file_range is a server-side copy: NFS before 4.2
/// accepts it but moves the data over the wire.</summary>
public sealed class MountTableSpecs
{
    private const string Mountinfo = """
        22 27 0:21 / /proc rw,relatime - proc proc rw
        27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
        40 27 0:50 / /var/lib/nfsvolumeworker/mnt/a1 rw,relatime - nfs4 192.0.2.10:/export rw,vers=4.2,rsize=1048576,wsize=1048576,proto=tcp
        41 27 0:51 / /var/lib/nfsvolumeworker/mnt/b2 rw,relatime - nfs 192.0.2.11:/export rw,vers=3,rsize=1048576,proto=tcp
        42 27 0:52 / /var/lib/nfsvolumeworker/mnt/c3 rw,relatime - nfs4 192.0.2.12:/export rw,vers=4.1,proto=tcp
        43 27 0:53 / /srv/with\040space rw,relatime shared:7 - xfs /dev/vdb rw,attr2
        """;

    [Theory]
    [InlineData("/var/lib/nfsvolumeworker/mnt/a1", "nfs4", false)]
    [InlineData("/var/lib/nfsvolumeworker/mnt/b2/sub", "nfs", true)]
    [InlineData("/var/lib/nfsvolumeworker/mnt/c3", "nfs4", true)]
    [InlineData("/var/lib/nfsvolumeworker/mnt/a10", "ext4", false)] // a sibling whose name starts alike is not inside a1
    [InlineData("/srv/with space/x", "xfs", false)]
    [InlineData("/tmp/share", "ext4", false)]
    public void The_deepest_mount_holding_the_path_says_its_type_and_whether_it_is_NFS_without_COPY(string path, string type, bool withoutCopy)
    {
        var mount = MountTable.Find(path, Mountinfo);

        Assert.NotNull(mount);
        Assert.Equal(type, mount.FileSystemType);
        Assert.Equal(withoutCopy, mount.IsNfsWithoutServerSideCopy);
        Assert.Equal(type.StartsWith("nfs", StringComparison.Ordinal), mount.IsNetworkFileSystem);
    }

    [Fact]
    public void The_test_machines_own_mount_table_is_read()
    {
        var mount = MountTable.Find(Path.GetTempPath());

        Assert.NotNull(mount);
        Assert.False(string.IsNullOrEmpty(mount.FileSystemType));
    }
}
