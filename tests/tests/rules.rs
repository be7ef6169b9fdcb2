//! The shipped Prometheus rules (recording and alerting) load and compute what they claim (`promtool`, from the
//! Debian `prometheus` package that tests/mcp/setup.sh installs).

use std::process::Command;

use integration_tests::repo_root;

fn promtool(args: &[&str]) {
    let dir = repo_root().join("mcp-probe/rules");
    let out = Command::new("promtool")
        .args(args)
        .current_dir(&dir)
        .output()
        .expect("promtool missing: run `cargo xtask test` (tests/mcp/setup.sh installs it)");
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn recording_rules_are_valid() {
    promtool(&["check", "rules", "mcp-probe.rules.yml"]);
}

#[test]
fn alerting_rules_are_valid() {
    promtool(&["check", "rules", "mcp-probe.alerts.yml"]);
}

/// Every alert fires on the traffic it is about and not on traffic just short of it; the
/// recording rules for rates, error ratios, quantiles and HTTP rejections compute what
/// they claim.
#[test]
fn alerts_and_traffic_rules_compute_the_documented_figures() {
    promtool(&["test", "rules", "mcp-probe.alerts.test.yml"]);
}

#[test]
fn cost_per_request_rules_compute_the_documented_figures() {
    promtool(&["test", "rules", "mcp-probe.rules.test.yml"]);
}
