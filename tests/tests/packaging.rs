//! The packaging in the repository: the Grafana dashboard parses and names only metrics the
//! code exports (the list comes from the code's own exposition, so a metric added later is
//! picked up by itself); the alert rules and Prometheus's configuration pass `promtool`; the
//! compose file passes `docker-compose config` and has the services the walkthrough needs; the
//! image is multi-stage and runs as a non-root user; completions, the man page and `--version`
//! (with the commit) come from the binary.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use blueshift_engine::metrics::Metrics;
use blueshift_tests::{blueshift_binary, docker_compose, promtool};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_owned()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every series name the code exports: the `# TYPE` families of fresh registries' expositions
/// (the sidecar's and a verify process's), with `_bucket`, `_sum` and `_count` for histograms.
fn exported() -> BTreeSet<String> {
    // The sidecar's registry, and a verify process's (`blueshift verify --metrics-addr`).
    let text = Metrics::new().render() + &Metrics::for_verify().render();
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
        names.insert(name.to_owned());
        if kind == "histogram" || kind == "summary" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
    }
    assert!(names.len() > 10, "{text}");
    names
}

/// The `blueshift_*` names in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let start_ok = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if start_ok && expr[i..].starts_with("blueshift_") {
            let end = expr[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .map_or(expr.len(), |n| i + n);
            names.insert(expr[i..end].to_owned());
            i = end;
        } else {
            i += 1;
        }
    }
    names
}

/// Every `expr` string anywhere in a JSON document.
fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[test]
fn the_dashboard_parses_and_names_only_exported_metrics() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/dashboards/blueshift.json"))
            .expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "blueshift");
    let mut all = Vec::new();
    exprs(&dashboard, &mut all);
    assert!(all.len() >= 15, "{all:?}");
    let exported = exported();
    let mut used = BTreeSet::new();
    for expr in &all {
        let names = metric_names(expr);
        assert!(
            !names.is_empty(),
            "a query without a blueshift metric: {expr}"
        );
        for name in names {
            assert!(
                exported.contains(&name),
                "the dashboard queries {name}, which the code does not export ({expr})"
            );
            used.insert(name);
        }
    }
    // What the dashboard is for: lag, throughput, stage latency, queue, errors, backfill.
    for needed in [
        "blueshift_lag_seconds",
        "blueshift_lag_bytes",
        "blueshift_slot_retained_wal_bytes",
        "blueshift_applied_transactions_total",
        "blueshift_stage_latency_seconds_bucket",
        "blueshift_apply_latency_seconds_bucket",
        "blueshift_queue_depth_transactions",
        "blueshift_errors_total",
        "blueshift_backfill_rows_total",
        "blueshift_connected",
        "blueshift_up",
        "blueshift_cutover_state",
        "blueshift_cutover_pause_seconds",
        // Verify: rows compared, differences, the verified LSN against blue's current one.
        "blueshift_verify_rows_total",
        "blueshift_verify_differences_total",
        "blueshift_verify_last_run_differences",
        "blueshift_verify_last_run_outcome",
        "blueshift_verified_lsn",
        "blueshift_source_lsn",
    ] {
        assert!(used.contains(needed), "no panel shows {needed}");
    }
}

#[test]
fn the_alert_rules_pass_promtool_and_name_only_exported_metrics() {
    let promtool = promtool().unwrap_or_else(|e| panic!("{e:#}"));
    for args in [
        &["check", "rules", "deploy/prometheus/alerts.yml"][..],
        &["check", "config", "deploy/prometheus/prometheus.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(repo())
            .output()
            .expect("promtool runs");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let exported = exported();
    let rules = read("deploy/prometheus/alerts.yml");
    let mut count = 0;
    for line in rules.lines() {
        let Some(expr) = line.trim().strip_prefix("expr:") else {
            continue;
        };
        count += 1;
        for name in metric_names(expr) {
            assert!(
                exported.contains(&name),
                "an alert rule uses {name}, which the code does not export ({expr})"
            );
        }
    }
    assert!(count >= 6, "{rules}");
    for alert in [
        "BlueshiftDown",
        "BlueshiftLagHigh",
        "BlueshiftRetainedWalHigh",
        "BlueshiftNotStreaming",
        "BlueshiftCutoverStuck",
        "BlueshiftVerifyDifferences",
    ] {
        assert!(rules.contains(&format!("alert: {alert}")), "{alert}");
    }
}

#[test]
fn the_compose_file_is_valid_and_has_the_walkthrough() {
    let secrets = tempfile::tempdir().unwrap();
    for name in [
        "blue.password",
        "green.password",
        "grafana.password",
        "userlist.txt",
    ] {
        std::fs::write(secrets.path().join(name), "not-a-real-secret\n").unwrap();
    }
    let out = Command::new(docker_compose().unwrap_or_else(|e| panic!("{e:#}")))
        .args(["-f", "docker-compose.yml", "config"])
        .current_dir(repo())
        .env("BLUESHIFT_SECRETS", secrets.path())
        .output()
        .expect("docker-compose runs");
    let config = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "docker-compose config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needed in [
        "image: postgres:15",
        "image: postgres:18",
        "edoburu/pgbouncer",
        "image: blueshift:local",
        "prom/prometheus",
        "grafana/grafana-oss",
        "wal_level=logical",
        "/etc/blueshift/blueshift.toml",
        "/var/lib/grafana/dashboards",
    ] {
        assert!(config.contains(needed), "{needed} missing from:\n{config}");
    }
    // The sidecar's settings file is one every command accepts, and names the secrets.
    let toml = read("deploy/blueshift.toml");
    assert!(toml.contains("source_password_file = \"/run/secrets/blue_password\""));
    assert!(!toml.to_lowercase().contains("password="), "{toml}");
}

#[test]
fn the_image_is_multi_stage_and_runs_as_non_root() {
    let dockerfile = read("Dockerfile");
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(stages.len(), 2, "{stages:?}");
    assert!(stages[0].contains(" AS build"), "{stages:?}");
    assert!(stages[1].contains("-slim"), "{stages:?}");
    let user = dockerfile
        .lines()
        .rfind(|l| l.starts_with("USER "))
        .expect("a USER line");
    assert!(!user.contains("root") && !user.contains(" 0"), "{user}");
    assert!(dockerfile.contains("COPY --from=build"), "{dockerfile}");
}

#[test]
fn completions_man_page_and_version_come_from_the_binary() {
    let run = |args: &[&str]| {
        let out = Command::new(blueshift_binary())
            .args(args)
            .output()
            .expect("blueshift runs");
        assert!(out.status.success(), "{args:?}: {:?}", out);
        String::from_utf8(out.stdout).expect("UTF-8")
    };
    let bash = run(&["completions", "bash"]);
    assert!(bash.contains("complete -F _blueshift"), "{bash}");
    assert!(
        bash.contains("--shutdown-timeout"),
        "completions know every option"
    );
    let zsh = run(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef blueshift"), "{zsh}");
    let man = run(&["man"]);
    assert!(man.contains(".TH blueshift 1"), "{man}");
    for command in ["sync", "backfill", "status", "cleanup", "completions"] {
        assert!(man.contains(command), "the man page lists {command}");
    }
    let dir = tempfile::tempdir().unwrap();
    run(&["man", "--out-dir", &dir.path().display().to_string()]);
    assert!(dir.path().join("blueshift-sync.1").is_file());

    let version = run(&["--version"]);
    assert!(version.starts_with("blueshift 0.1.0 (commit "), "{version}");
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(repo())
        .output()
        .expect("git runs");
    if head.status.success() {
        let head = String::from_utf8_lossy(&head.stdout).trim().to_owned();
        assert!(
            version.contains(&format!("(commit {head})")),
            "{version} vs {head}"
        );
    }
    let help = run(&["--help"]);
    assert!(help.contains("Exit codes:"), "{help}");
    assert!(help.contains("6  interrupted"), "{help}");
}
