using System.Text.RegularExpressions;
using NfsVolumeWorker.Testing;
using Xunit.Abstractions;

namespace NfsVolumeWorker.Host.Tests;

/// <summary>The operator's files checked by the tools that understand them: the alert rules by promtool (syntax
/// and their unit tests), the dashboard's PromQL by promtool, the systemd unit by systemd-analyze, the compose file
/// by docker-compose, the Dockerfile by two npm linters (hadolint is in neither Debian nor npm). A missing tool fails
/// the test with what to install; none of these start a service or a container.</summary>
public sealed partial class OpsFilesSpecs(ITestOutputHelper output)
{
    private static readonly string Root = RepositoryRoot.Find();

    private static string Promtool => RequiredTool.Find("promtool", "prometheus");

    private static string OpsPath(params string[] parts) => Path.Combine([Root, "ops", .. parts]);

    private (int ExitCode, string Output) Run(string tool, params string[] args)
    {
        var (code, stdout, stderr) = RequiredTool.Run(tool, args);
        output.WriteLine($"$ {Path.GetFileName(tool)} {string.Join(' ', args)}  -> {code}\n{stdout}{stderr}");
        return (code, stdout + stderr);
    }

    [Fact]
    public void The_alert_rules_pass_promtool_check_and_their_unit_tests()
    {
        var check = Run(Promtool, "check", "rules", OpsPath("prometheus", "alerts.yml"));
        Assert.True(check.ExitCode == 0, check.Output);
        Assert.Contains("SUCCESS: 8 rules found", check.Output, StringComparison.Ordinal);

        var test = Run(Promtool, "test", "rules", OpsPath("prometheus", "alerts.test.yml"));
        Assert.True(test.ExitCode == 0, test.Output);
        Assert.Contains("SUCCESS", test.Output, StringComparison.Ordinal);
    }

    [Fact]
    public void Every_alert_has_a_unit_test_that_fires_and_one_that_does_not()
    {
        var alerts = AlertNames().Matches(File.ReadAllText(OpsPath("prometheus", "alerts.yml"))).Select(m => m.Groups[1].Value).ToList();
        var tests = File.ReadAllText(OpsPath("prometheus", "alerts.test.yml"));
        Assert.Equal(8, alerts.Count);
        foreach (var alert in alerts)
        {
            // alert_rule_test entries: "alertname: X" followed by "exp_alerts: []" (quiet) or by a list (firing).
            var cases = Regex.Matches(tests, @"alertname: " + Regex.Escape(alert) + @"\s*\n\s*exp_alerts:(.*)").Select(m => m.Groups[1].Value.Trim()).ToList();
            Assert.True(cases.Contains("[]"), $"{alert}: no test where it stays quiet");
            Assert.True(cases.Contains(""), $"{alert}: no test where it fires");
        }
    }

    [Fact]
    public void Every_alert_links_a_runbook_that_exists()
    {
        var alerts = File.ReadAllText(OpsPath("prometheus", "alerts.yml"));
        var names = AlertNames().Count(alerts);
        var links = RunbookUrls().Matches(alerts).Select(m => m.Groups[1].Value).ToList();
        Assert.Equal(names, links.Count);
        Assert.All(links, l => Assert.True(File.Exists(Path.Combine(Root, l)), $"runbook {l} does not exist"));
        var index = File.ReadAllText(OpsPath("runbooks", "README.md"));
        Assert.All(links.Distinct(), l => Assert.Contains($"({Path.GetFileName(l)})", index, StringComparison.Ordinal));
    }

    [Fact]
    public void Every_dashboard_query_is_valid_PromQL()
    {
        var expressions = PromQl.DashboardExpressions(PromQl.DashboardPath);
        Assert.True(expressions.Count >= 15, $"only {expressions.Count} queries found in the dashboard");
        // promtool has no offline query check, but it parses a recording rule's expr: one rule per panel target,
        // with Grafana's $__rate_interval given a value.
        using var dir = new TempDirectory();
        var rules = Path.Combine(dir.Path, "dashboard-queries.yml");
        File.WriteAllLines(rules, new[] { "groups:", "  - name: dashboard", "    rules:" }.Concat(expressions.SelectMany((e, i) => new[]
        {
            $"      - record: dashboard:query_{i}",
            "        expr: '" + e.Expr.Replace("$__rate_interval", "5m", StringComparison.Ordinal).Replace("'", "''", StringComparison.Ordinal) + "'",
        })));
        var check = Run(Promtool, "check", "rules", rules);
        Assert.True(check.ExitCode == 0, check.Output);
        Assert.Contains($"SUCCESS: {expressions.Count} rules found", check.Output, StringComparison.Ordinal);
    }

    [Fact]
    public void The_example_prometheus_config_is_valid_and_loads_the_alerts()
    {
        var check = Run(Promtool, "check", "config", OpsPath("prometheus", "prometheus.yml"));
        Assert.True(check.ExitCode == 0, check.Output);
        Assert.Contains("SUCCESS: 1 rule files found", check.Output, StringComparison.Ordinal);
    }

    [Fact]
    public void The_systemd_unit_passes_systemd_analyze_verify_and_its_security_review()
    {
        var analyze = RequiredTool.Find("systemd-analyze", "systemd");
        var unit = File.ReadAllText(OpsPath("systemd", "nfsvolumeworker.service"));
        // verify refuses an ExecStart binary that does not exist: the copy names this machine's dotnet instead of
        // /usr/bin/dotnet (a symlink into the .NET install on Debian's packages, absent where .NET lives elsewhere).
        var dotnet = new FileInfo(RequiredTool.Find("dotnet", "dotnet-sdk-10.0")).ResolveLinkTarget(returnFinalTarget: true)?.FullName
            ?? RequiredTool.Find("dotnet", "dotnet-sdk-10.0");
        Assert.Contains("ExecStart=/usr/bin/dotnet ", unit, StringComparison.Ordinal);
        using var dir = new TempDirectory();
        var copy = Path.Combine(dir.Path, "nfsvolumeworker.service");
        File.WriteAllText(copy, unit.Replace("ExecStart=/usr/bin/dotnet ", $"ExecStart={dotnet} ", StringComparison.Ordinal));

        var verify = Run(analyze, "verify", copy);
        Assert.True(verify.ExitCode == 0, verify.Output);
        Assert.True(verify.Output.Trim().Length == 0, "systemd-analyze verify warned:\n" + verify.Output); // unknown keys are only warnings

        // Exposure score (0 safest .. 10): 4.3 "OK" when written; above 5.0 the hardening has been weakened.
        var security = Run(analyze, "security", "--offline=true", "--threshold=50", "--no-pager", copy);
        Assert.True(security.ExitCode == 0, "exposure above 5.0:\n" + security.Output);

        foreach (var directive in new[]
        {
            "ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateTmp=yes", "ProtectHome=yes", "Restart=on-failure", "RestartSec=",
            "RestartPreventExitStatus=2", "KillMode=mixed", "TimeoutStopSec=6min", "ReadWritePaths=-/var/lib/nfsvolumeworker ",
        })
        {
            Assert.Contains("\n" + directive, unit, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void The_compose_file_is_valid()
    {
        var compose = RequiredTool.Find("docker-compose", "docker-compose");
        var ok = Run(compose, "--project-directory", Root, "-f", Path.Combine(Root, "docker-compose.yml"), "config", "-q");
        Assert.True(ok.ExitCode == 0, ok.Output);

        // The validator is live: a service with a misspelt key is refused.
        using var dir = new TempDirectory();
        var bad = Path.Combine(dir.Path, "docker-compose.yml");
        File.WriteAllText(bad, "services:\n  worker:\n    image: x\n    restart_policy: on-failure\n");
        Assert.NotEqual(0, Run(compose, "-f", bad, "config", "-q").ExitCode);
    }

    [Fact]
    public void The_Dockerfile_passes_dockerfilelint_and_dockerfile_utils()
    {
        var bin = OpsPath("dev", "node-tools", "node_modules", ".bin");
        var dockerfilelint = Path.Combine(bin, "dockerfilelint");
        var dockerfileUtils = Path.Combine(bin, "dockerfile-utils");
        Assert.True(File.Exists(dockerfilelint) && File.Exists(dockerfileUtils), $"the Dockerfile linters are not installed in {bin}: run ops/dev/node-tools/install");
        var dockerfile = OpsPath("docker", "Dockerfile");

        var lint = Run(dockerfilelint, dockerfile);
        Assert.True(lint.ExitCode == 0, lint.Output);
        var utils = Run(dockerfileUtils, "lint", dockerfile);
        Assert.True(utils.ExitCode == 0 && utils.Output.Trim().Length == 0, utils.Output);

        // Both are live: a Dockerfile with an apt-get that waits for input and two CMDs is refused.
        using var dir = new TempDirectory();
        var bad = Path.Combine(dir.Path, "Dockerfile");
        File.WriteAllText(bad, "FROM debian:12\nRUN apt-get update && apt-get install qemu-utils\nCMD a\nCMD b\n");
        Assert.NotEqual(0, Run(dockerfilelint, bad).ExitCode);
        Assert.Contains("only be one CMD", Run(dockerfileUtils, "lint", bad).Output, StringComparison.Ordinal);
    }

    [GeneratedRegex(@"^\s*-\s*alert:\s*(\S+)", RegexOptions.Multiline)]
    private static partial Regex AlertNames();

    [GeneratedRegex(@"^\s*runbook_url:\s*(\S+)", RegexOptions.Multiline)]
    private static partial Regex RunbookUrls();
}
