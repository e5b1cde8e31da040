using System.Text.Json.Nodes;
using NfsVolumeWorker.Contracts;
using NfsVolumeWorker.Messaging;
using NfsVolumeWorker.Oslo;
using NfsVolumeWorker.Oslo.Rpc;
using NfsVolumeWorker.Oslo.Wire;
using NfsVolumeWorker.Partitions;
using NfsVolumeWorker.Storage.Errors;
using NfsVolumeWorker.Storage.Info;
using NfsVolumeWorker.Storage.Layout;
using NfsVolumeWorker.Storage.Qcow2;

namespace NfsVolumeWorker.Fuzz;

/// <summary>The fuzz targets: every decoder that reads bytes the worker did not write itself.</summary>
public static class Targets
{
    public static IReadOnlyList<FuzzTarget> All { get; } =
    [
        new("envelope",
            "a partition/ingress queue body into CommandEnvelope.Decode (MassTransit envelope + command), then the acceptor's field check and the inbox round trip",
            Envelope, e => e is CommandDecodeException),
        new("oslo",
            "an oslo.messaging body into OsloEnvelope.Decode + OsloRequest.From (versioned objects), then CinderVolumeEndpoint.Plan and the replies/notifications it leads to",
            Oslo, e => e is OsloFormatException),
        new("qcow2",
            "an image file's bytes into ImageHeaderReader.Read (qcow2/LUKS/raw), checked against ParseQcow2 and the file-name rules",
            Qcow2, e => e is StorageException { Code: StorageErrorCode.ImageCorrupt or StorageErrorCode.UnsupportedFormat }),
        new("info",
            "a volume-<id>.info file's bytes into InfoFile.Read, then the Python json.dump writer and back",
            Info, e => e is StorageException { Code: StorageErrorCode.InfoFileCorrupt }),
    ];

    public static FuzzTarget? Find(string name) => All.FirstOrDefault(t => string.Equals(t.Name, name, StringComparison.Ordinal));

    // ---- envelope ---------------------------------------------------------------------------------

    private static void Envelope(ReadOnlySpan<byte> input)
    {
        var decoded = CommandEnvelope.Decode(input, headers: null);
        var command = decoded.Command;
        // What the acceptor asks of every command: never an exception, only a reason or null.
        _ = CommandValidation.FieldProblem(command);
        // What the acceptor writes to the inbox, the executor must read back as the same command.
        var back = InboxRecord.FromBytes(InboxRecord.For(command, 0, decoded.TraceParent).ToBytes()).ToCommand();
        if (!back.Equals(command))
        {
            throw new FuzzFindingException($"envelope: the inbox round trip changed the command: {command} became {back}");
        }
    }

    // ---- oslo -------------------------------------------------------------------------------------

    private const string FuzzShare = "fuzz-nfs:/export";

    /// <summary>Created on first use: under afl-fuzz, instrumented code (OsloOptions is) must not run before
    /// SharpFuzz has set up the coverage map, so nothing of the product may run in a static initializer of
    /// <see cref="Targets"/>.</summary>
    private static readonly Lazy<CinderVolumeEndpoint> Endpoint = new(() =>
        new(new OsloOptions { Host = "fuzzhost@nfs#nfs" }, new FakeLocator(), new FakeConnections(), TimeProvider.System));

    private static void Oslo(ReadOnlySpan<byte> input)
    {
        // What OsloRpcServer does with a delivery: decode (OsloFormatException → logged and acked) ...
        var request = OsloRequest.From(OsloEnvelope.Decode(input));
        _ = request.Describe();
        _ = Secrets.ToLogString(request.Args);
        // ... then plan; the endpoint turns every bad request into a FailPlan, so nothing may escape here.
        var plan = Endpoint.Value.Plan(request);
        switch (plan)
        {
            case SubmitPlan submit:
                _ = CommandValidation.FieldProblem(submit.Command);
                CheckSizes(request, submit.Command);
                Notify(submit.Notification.PayloadWith(submit.Notification.StartStatus), submit.Notification.Context);
                Notify(submit.Notification.PayloadWith(submit.Notification.EndStatus, submit.Notification.EndExtra), submit.Notification.Context);
                Reply(request, null, null);
                break;
            case ReplyPlan reply:
                Reply(request, reply.Result, null);
                break;
            case FailPlan fail:
                Reply(request, null, fail.Failure);
                Notify(fail.Payload, request.PackedContext());
                break;
            case NothingToDoPlan nothing:
                Notify(nothing.Notification.PayloadWith(nothing.Notification.EndStatus), nothing.Notification.Context);
                Reply(request, null, null);
                break;
            case PublishCapabilitiesPlan caps:
                _ = OsloEnvelope.Encode(OsloMessages.CapabilitiesUpdate("fuzzhost@nfs", caps.Capabilities, request.PackedContext(), DateTimeOffset.UnixEpoch));
                break;
        }
    }

    /// <summary>What the endpoint plans for an oslo body (for tests: the target itself checks the plan).</summary>
    public static Plan OsloPlan(ReadOnlySpan<byte> input) => Endpoint.Value.Plan(OsloRequest.From(OsloEnvelope.Decode(input)));

    /// <summary>Sizes arrive in GiB and leave in bytes: the bytes must be exactly GiB times what was sent.</summary>
    private static void CheckSizes(OsloRequest request, VolumeCommand command)
    {
        long? Sent(string arg) => arg switch
        {
            "new_size" => request.Args["new_size"] is JsonValue n && n.TryGetValue<long>(out var gb) ? gb : null,
            "snapshot" => CinderSnapshot.From(request.Args["snapshot"]) is var s ? s.Volume?.SizeGb ?? s.VolumeSizeGb : null,
            _ => CinderVolume.From(request.Args[arg]).SizeGb,
        };
        var (bytes, gib) = command switch
        {
            CreateVolume c => (c.SizeBytes, Sent("volume")),
            CreateVolumeFromSnapshot c => (c.NewSizeBytes ?? 0, Sent("volume")),
            CloneVolume c => (c.NewSizeBytes ?? 0, Sent("volume")),
            ExtendVolume c => (c.NewSizeBytes, Sent("new_size")),
            CreateSnapshot c => (c.VolumeSizeBytes ?? 0, Sent("snapshot")),
            _ => (0L, (long?)null),
        };
        if (gib is > 0 and var g && (Int128)bytes != (Int128)g * CinderVolumeEndpoint.GiB)
        {
            throw new FuzzFindingException($"oslo: {request.Method} asked for {g} GiB and the command says {bytes} bytes.");
        }
    }

    /// <summary>The reply a call gets, as the adapter builds and encodes it.</summary>
    private static void Reply(OsloRequest request, JsonNode? result, RemoteFailure? failure)
    {
        if (request.IsCall)
        {
            _ = OsloEnvelope.Encode(OsloMessages.Reply(request, result, failure));
        }
    }

    /// <summary>A notification's body, as the adapter builds and encodes it.</summary>
    private static void Notify(JsonObject payload, JsonObject context) =>
        _ = OsloEnvelope.Encode(OsloMessages.Notification("volume.fuzzhost", "volume.fuzz.start", "INFO", payload, context, DateTimeOffset.UnixEpoch));

    /// <summary>A share that holds volumes and snapshots whose id starts with an even byte.</summary>
    private sealed class FakeLocator : IVolumeLocator
    {
        public IReadOnlyList<string> Shares { get; } = [FuzzShare];
        public string? ShareOfVolume(Guid volumeId) => Held(volumeId) ? FuzzShare : null;
        public (Guid VolumeId, string Share)? VolumeOfSnapshot(Guid snapshotId) => Held(snapshotId) ? (snapshotId, FuzzShare) : null;
        public void RememberVolume(Guid volumeId, string share) { }
        public void RememberSnapshot(Guid snapshotId, Guid volumeId, string share) { }
        public string ChooseShareForNewVolume(long sizeBytes) => FuzzShare;
        private static bool Held(Guid id) => (id.ToByteArray()[0] & 1) == 0;
    }

    private sealed class FakeConnections : IConnectionInfoProvider
    {
        public OsloConnectionInfo Connect(string share, Guid volumeId, long expectedSizeBytes, VolumeFormat? baseFormat) =>
            (volumeId.ToByteArray()[0] & 1) == 0
                ? new OsloConnectionInfo(share, VolumeFileNames.Base(volumeId), "raw", null, "/mnt")
                : throw new OsloServiceException(ErrorCodes.VolumeNotFound, $"volume {volumeId} is not on {share}");

        public (double TotalGb, double FreeGb) Capacity() => (100, 50);
    }

    // ---- qcow2 ------------------------------------------------------------------------------------

    private static void Qcow2(ReadOnlySpan<byte> input)
    {
        var path = Scratch.Write(input);
        ImageHeader header;
        try
        {
            header = ImageHeaderReader.Read(path);
        }
        catch (StorageException e) when (e.Code == StorageErrorCode.ImageCorrupt)
        {
            // The span parser must refuse what the file reader refused.
            var parsed = TryParseQcow2(input);
            if (parsed is not null)
            {
                throw new FuzzFindingException($"qcow2: Read refused the file ({e.Message}) but ParseQcow2 read {parsed}.");
            }
            throw;
        }
        if (header.FileLength != input.Length)
        {
            throw new FuzzFindingException($"qcow2: file length {header.FileLength}, input {input.Length} bytes.");
        }
        var fromSpan = TryParseQcow2(input);
        if (header.Kind != ImageKind.Qcow2)
        {
            if (header.Qcow2 is not null || fromSpan is not null)
            {
                throw new FuzzFindingException($"qcow2: a {header.Kind} file with a qcow2 header ({header.Qcow2 ?? fromSpan}).");
            }
            return;
        }
        var q = header.Qcow2 ?? throw new FuzzFindingException("qcow2: kind Qcow2 without a header.");
        if (!q.Equals(fromSpan))
        {
            throw new FuzzFindingException($"qcow2: Read gave {q}, ParseQcow2 gave {fromSpan?.ToString() ?? "a refusal"}.");
        }
        if (q.BackingFile is { } backing)
        {
            if (backing.Length == 0 || backing.Contains('\0', StringComparison.Ordinal) || System.Text.Encoding.UTF8.GetByteCount(backing) > 1023)
            {
                throw new FuzzFindingException($"qcow2: a backing file name qemu would not follow: '{backing}'.");
            }
            // What the chain reader does with it: only a file of the same volume passes.
            _ = VolumeFileNames.IsImageOf(Guid.Empty, backing);
            _ = VolumeFileNames.TryParse(backing, out _, out _);
        }
        _ = ImageFormatNames.TryParse(q.BackingFormat, out _);
    }

    private static Qcow2Header? TryParseQcow2(ReadOnlySpan<byte> input)
    {
        try
        {
            return ImageHeaderReader.ParseQcow2(input);
        }
        catch (InvalidDataException)
        {
            return null;
        }
    }

    // ---- info -------------------------------------------------------------------------------------

    private static void Info(ReadOnlySpan<byte> input)
    {
        var path = Scratch.Write(input);
        var info = InfoFile.Read(path) ?? throw new FuzzFindingException("info: Read returned null for a file that exists.");
        // The engine rewrites what it read with the Python-compatible writer; that text must read back the same.
        var text = InfoFile.Serialize(info);
        var again = InfoFile.Parse(text, "the rewritten info");
        if (!again.Equals(info))
        {
            throw new FuzzFindingException($"info: rewriting changed the info: {text}");
        }
        _ = VolumeFileNames.TryParse(info.Active, out _, out _);
        foreach (var overlay in info.Snapshots.Values)
        {
            _ = VolumeFileNames.TryParse(overlay, out _, out _);
        }
    }
}
