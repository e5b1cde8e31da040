using System.Text;

namespace NfsVolumeWorker.Storage.QemuImg;

/// <summary>How a qemu-img call is run.</summary>
internal enum QemuImgCallKind
{
    /// <summary>Short call on an image we wrote or created (create, rebase -u, version).</summary>
    Short,
    /// <summary>Reads an image a guest could have written: under prlimit, short timeout.</summary>
    Inspect,
    /// <summary>Copies data (commit, convert, resize): long timeout, optional progress.</summary>
    Long,
}

/// <summary>One qemu-img call: the verb, its argument vector (after <c>qemu-img</c>) and the tags to trace it by.</summary>
internal sealed record QemuImgCommand(
    string Verb,
    QemuImgCallKind Kind,
    IReadOnlyList<string> Arguments,
    IReadOnlyList<KeyValuePair<string, object?>> Tags)
{
    /// <summary>Joins an argument vector for logs and error messages, quoting like a POSIX shell
    /// would so the line can be pasted; never executed.</summary>
    public static string Display(string fileName, IEnumerable<string> arguments)
    {
        var sb = new StringBuilder(Quote(fileName));
        foreach (var argument in arguments)
        {
            sb.Append(' ').Append(Quote(argument));
        }
        return sb.ToString();
    }

    private static string Quote(string argument)
    {
        if (argument.Length > 0 && argument.All(IsPlain))
        {
            return argument;
        }
        return "'" + argument.Replace("'", "'\\''", StringComparison.Ordinal) + "'";
    }

    private static bool IsPlain(char c) =>
        char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.' or '/' or '=' or ':' or ',' or '+' or '%' or '@';

    /// <summary>
    /// A positional image path as qemu-img must see it. qemu-img reads <c>proto:...</c> as a protocol
    /// (nbd:, json:...) and a leading <c>-</c> as an option; a relative path gets <c>./</c> in front so
    /// neither can happen. Absolute paths are left alone (a <c>/</c> before any <c>:</c> means a file).
    /// </summary>
    public static string ImagePath(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (path.StartsWith('/'))
        {
            return path;
        }
        var colon = path.IndexOf(':', StringComparison.Ordinal);
        var slash = path.IndexOf('/', StringComparison.Ordinal);
        var looksLikeProtocol = colon >= 0 && (slash < 0 || colon < slash);
        return path.StartsWith('-') || looksLikeProtocol ? "./" + path : path;
    }
}
