namespace NfsVolumeWorker.Storage.QemuImg;

/// <summary>How qemu-img is run. Bound from configuration section <c>QemuImg</c>.</summary>
public sealed class QemuImgOptions
{
    public const string SectionName = "QemuImg";

    /// <summary>Path or name of the qemu-img binary. Default <c>qemu-img</c> (looked up on PATH).</summary>
    public string Executable { get; set; } = "qemu-img";

    /// <summary>Path of util-linux <c>prlimit</c>, used to cap address space and CPU time when reading
    /// images a guest could have written. Default <c>prlimit</c>.</summary>
    public string PrlimitExecutable { get; set; } = "prlimit";

    /// <summary>Address-space cap for inspecting untrusted images (Cinder uses 1 GiB).</summary>
    public long InspectAddressSpaceBytes { get; set; } = 1L << 30;

    /// <summary>CPU-time cap in seconds for inspecting untrusted images (Cinder 21.3.1 allows 60 s; stricter here: inspecting a header needs far less).</summary>
    public int InspectCpuSeconds { get; set; } = 30;

    /// <summary>Wall-clock limit for short calls (info, create, rebase -u, check, compare, --version).</summary>
    public TimeSpan ShortCallTimeout { get; set; } = TimeSpan.FromMinutes(2);

    /// <summary>Wall-clock limit for long calls (convert, commit, resize). Default 6 hours.</summary>
    public TimeSpan LongCallTimeout { get; set; } = TimeSpan.FromHours(6);

    /// <summary>How long to wait for a killed qemu-img to exit before giving up on it.</summary>
    public TimeSpan KillGracePeriod { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Run qemu-img under <c>setpriv --pdeathsig KILL</c> (util-linux) so that it dies with the worker
    /// instead of copying on alone after a kill -9. Default true; ignored when setpriv is not installed.</summary>
    public bool KillWithWorker { get; set; } = true;

    /// <summary>Run long calls (convert, commit, rebase, resize) under <c>ionice -c 3</c> (util-linux; the idle I/O
    /// class), so that the disk's scheduler (mq-deadline since Linux 5.14, BFQ) serves the short commands of other
    /// volumes first instead of queueing them behind gigabytes of copy; mq-deadline ages waiting requests, so a copy is
    /// slowed under sustained load, never stopped. Only local block devices honour it (an NFS server does not see
    /// the client's priority). Default true; ignored when ionice is not installed.</summary>
    public bool LongCallsAtIdleIoPriority { get; set; } = true;
}
