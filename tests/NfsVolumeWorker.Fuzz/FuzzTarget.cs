namespace NfsVolumeWorker.Fuzz;

/// <summary>One decoder under test. <see cref="Run"/> feeds it one input: a failure of a documented type
/// (<see cref="IsExpected"/>) is the decoder doing its job and is swallowed; anything else escapes, and AFL
/// records the input as a crash.</summary>
/// <param name="Name">The <c>--target</c> name (also the corpus folder name).</param>
/// <param name="Description">What is fed where, for <c>--list</c> and the docs.</param>
/// <param name="Decode">Feeds the input to the decoder and checks what it returns; throws for bad input.</param>
/// <param name="IsExpected">True for the exception types the decoder documents for bad input.</param>
public sealed record FuzzTarget(string Name, string Description, Action<ReadOnlySpan<byte>> Decode, Func<Exception, bool> IsExpected)
{
    /// <summary>Allocation allowed per input, on top of <see cref="AllocationPerInputByte"/> per input byte:
    /// room for first-use caches (JSON metadata, regexes), not for a buffer sized by a length field.</summary>
    public const long AllocationAllowance = 8L << 20;

    /// <summary>Allocation allowed per byte of input: parsed trees, strings and copies are a few times the
    /// input; a decoder that believes a length field from the input is not.</summary>
    public const long AllocationPerInputByte = 64;

    /// <summary>Runs one input. Throws <see cref="FuzzFindingException"/> when the decoder allocates far more
    /// than the input justifies, and lets an undocumented exception through unchanged.</summary>
    public void Run(ReadOnlySpan<byte> input)
    {
        var before = GC.GetAllocatedBytesForCurrentThread();
        try
        {
            Decode(input);
        }
        catch (Exception e) when (e is not FuzzFindingException && IsExpected(e))
        {
            // the documented way to refuse the input
        }
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        var allowed = AllocationAllowance + (AllocationPerInputByte * input.Length);
        if (allocated > allowed)
        {
            throw new FuzzFindingException($"{Name}: {allocated} bytes allocated for a {input.Length}-byte input (allowed {allowed}).");
        }
    }

    /// <summary>What <see cref="Run"/> made of an input, for replays: null when it passed, else the finding.</summary>
    public Exception? Check(ReadOnlySpan<byte> input)
    {
        try
        {
            Run(input);
            return null;
        }
        catch (Exception e)
        {
            return e;
        }
    }
}

/// <summary>A decoder broke a promise other than "throws only its documented exception": it allocated without
/// bound, or returned something it must never return.</summary>
public sealed class FuzzFindingException : Exception
{
    public FuzzFindingException() { }
    public FuzzFindingException(string message) : base(message) { }
    public FuzzFindingException(string message, Exception inner) : base(message, inner) { }
}
