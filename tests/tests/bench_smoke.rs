//! `blueshift bench --smoke`, the real binary on throwaway clusters: every scenario runs end to
//! end, and its outputs exist and parse (report.md with each scenario's rows, results.json with
//! samples for blueshift and every peer, the SVG plots). No timing is asserted.
//! It takes about 3 minutes on two shared cores (debug build; the cutover scenario alone runs
//! two 15 s loads through PgBouncer).
//!
//! The `bidirectional` scenario's peer (native subscriptions with `origin = none`) needs
//! PostgreSQL 16+: it runs in a second invocation on PostgreSQL 18, the others on the default
//! binaries; on an older major it stops at once, saying so.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

use blueshift_tests::{blueshift_binary, PgBinaries};
use serde_json::Value;

/// The scenarios that run on any supported major.
const ANY_MAJOR: [&str; 8] = [
    "catchup",
    "live",
    "backfill",
    "decode",
    "bigtxn",
    "verify",
    "cutover",
    "catchup-outage",
];

fn bench(bins: &PgBinaries, scenarios: &[&str], out: &Path) -> Output {
    let started = Instant::now();
    let run = Command::new(blueshift_binary())
        .args(["bench", "--smoke"])
        .args(scenarios)
        .arg("--pg-bin")
        .arg(bins.dir())
        .arg("--out")
        .arg(out)
        .output()
        .expect("blueshift bench runs");
    eprintln!(
        "blueshift bench --smoke {} took {:.1} s",
        scenarios.join(" "),
        started.elapsed().as_secs_f64()
    );
    run
}

#[test]
fn bench_smoke_runs_every_scenario_and_writes_the_reports() {
    let bins = PgBinaries::from_env().expect("PostgreSQL binaries");
    let out = tempfile::tempdir().expect("temp dir");
    let run = bench(&bins, &ANY_MAJOR, out.path());
    check_outputs(
        &run,
        out.path(),
        &ANY_MAJOR,
        &["catchup-throughput.svg", "live-lag.svg"],
    );

    let pg18 = PgBinaries::major(18).expect("PostgreSQL 18 binaries");
    let out = tempfile::tempdir().expect("temp dir");
    let run = bench(&pg18, &["bidirectional"], out.path());
    check_outputs(
        &run,
        out.path(),
        &["bidirectional"],
        &[
            "bidirectional-lag-forward.svg",
            "bidirectional-lag-reverse.svg",
        ],
    );
    let results: Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("results.json")).expect("results.json"),
    )
    .expect("results.json parses");
    let samples = results["scenarios"][0]["samples"]
        .as_array()
        .expect("samples");
    for (side, metric) in [
        ("blueshift", "forward_lag_p99_ms"),
        ("blueshift", "reverse_lag_p99_ms"),
        ("blueshift", "reverse_applied_tps"),
        ("native", "forward_lag_p99_ms"),
        ("native", "reverse_lag_p99_ms"),
        ("native", "reverse_applied_tps"),
        ("blueshift", "oneway_txn_per_s"),
        ("forward-only", "oneway_txn_per_s"),
        ("blueshift", "consumer_cpu_s_per_mchange"),
    ] {
        assert!(
            samples.iter().any(|x| x["side"] == side
                && x["metric"] == metric
                && x["value"]
                    .as_f64()
                    .is_some_and(|v| v.is_finite() && v > 0.0)),
            "bidirectional: no {metric} for {side}"
        );
    }
}

/// On PostgreSQL 14 or 15 the bidirectional scenario stops before it sets anything up, naming
/// the version and the fix.
#[test]
fn bench_bidirectional_refuses_postgresql_before_16() {
    let bins = match PgBinaries::from_env().expect("PostgreSQL binaries") {
        b if b.major_version() < 16 => b,
        _ => PgBinaries::major(14).expect("PostgreSQL 14 binaries"),
    };
    let out = tempfile::tempdir().expect("temp dir");
    let run = bench(&bins, &["bidirectional"], out.path());
    assert!(!run.status.success(), "a failed scenario fails the run");
    let report = std::fs::read_to_string(out.path().join("report.md")).expect("report.md");
    assert!(
        report.contains("needs PostgreSQL 16 or later")
            && report.contains(&format!("runs {}", bins.major_version()))
            && report.contains("--pg-bin"),
        "{report}"
    );
}

fn check_outputs(run: &Output, out_path: &Path, expected: &[&str], plots: &[&str]) {
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    let context = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    let results: Value = serde_json::from_str(
        &std::fs::read_to_string(out_path.join("results.json")).expect("results.json written"),
    )
    .expect("results.json parses");
    let report = std::fs::read_to_string(out_path.join("report.md")).expect("report.md written");
    assert_eq!(stdout.trim(), report.trim(), "stdout is the report");
    let published =
        std::fs::read_to_string(out_path.join("BENCHMARKS.md")).expect("BENCHMARKS.md written");
    assert!(
        published.contains(&format!("](docs/bench/{})", plots[0])),
        "BENCHMARKS.md links the plots from docs/bench/"
    );

    let scenarios = results["scenarios"].as_array().expect("scenarios");
    let names: Vec<&str> = scenarios
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, expected);

    let mut errors = Vec::new();
    for s in scenarios {
        let name = s["name"].as_str().expect("name");
        assert!(
            s["error"].is_null(),
            "scenario {name} failed: {}\n{context}",
            s["error"]
        );
        for e in s["errors"].as_array().expect("errors") {
            errors.push((
                name.to_owned(),
                e["side"].as_str().unwrap_or("").to_owned(),
                e["message"].as_str().unwrap_or("").to_owned(),
            ));
        }
        let samples = s["samples"].as_array().expect("samples");
        let has = |side: &str| {
            samples
                .iter()
                .any(|x| x["side"] == side && x["value"].as_f64().is_some_and(f64::is_finite))
        };
        let mut sides: Vec<String> = s["peers"]
            .as_array()
            .expect("peers")
            .iter()
            .map(|p| p.as_str().expect("peer").to_owned())
            .collect();
        assert!(!sides.is_empty(), "{name} has a peer");
        sides.push("blueshift".to_owned());
        for side in &sides {
            assert!(has(side), "{name}: no samples for {side}\n{context}");
        }
        // Where blueshift applies to green, the CPU of its sessions on green is measured (they
        // do most of its apply work) and counted in the total, and so are its context switches.
        if name == "catchup" || name == "live" {
            let value = |side: &str, metric: &str| {
                samples
                    .iter()
                    .filter(|x| x["side"] == side && x["metric"] == metric)
                    .filter_map(|x| x["value"].as_f64())
                    .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
            };
            assert!(
                value("blueshift", "green_backends_cpu_s").is_some_and(|v| v > 0.0),
                "{name}: blueshift's green sessions' CPU\n{context}"
            );
            assert!(
                value("blueshift", "consumer_switches_per_mchange").is_some_and(|v| v > 0.0),
                "{name}: blueshift's context switches\n{context}"
            );
            for side in &sides {
                assert!(
                    value(side, "total_cpu_s_per_mchange").is_some_and(|v| v > 0.0),
                    "{name}: total CPU of {side}\n{context}"
                );
            }
        }
        assert!(
            report.contains(&format!("## `{name}`")),
            "report.md has a section for {name}"
        );
        // Every figure's row names the peer it compares with.
        for peer in &sides {
            if peer != "blueshift" {
                assert!(
                    report.contains(&format!("({peer}) |")),
                    "report.md has {name}'s rows against {peer}"
                );
            }
        }
    }
    assert!(report.contains("| figure | blueshift | peer | ratio | runs | spread |"));

    assert!(errors.is_empty(), "errors: {errors:?}\n{context}");
    assert!(run.status.success(), "blueshift bench failed\n{context}");

    for plot in plots {
        let svg = std::fs::read_to_string(out_path.join(plot)).expect("plot written");
        assert!(
            svg.starts_with("<svg")
                && svg.contains("blueshift run 1")
                && svg.contains("native run 1"),
            "{plot} has both sides"
        );
    }
}

/// `catchup` replays every write load besides TPC-B (`--catchup-workload`): a secondary-key
/// swap, key-changing updates, unchanged TOAST, a keyless REPLICA IDENTITY FULL table, uniform
/// keys. A run yields a figure only once green equals blue table by table, so each load's
/// figures for blueshift (and native) say that apply carried it exactly.
#[test]
fn catchup_replays_each_workload_and_green_equals_blue() {
    let bins = PgBinaries::from_env().expect("PostgreSQL binaries");
    let out = tempfile::tempdir().expect("temp dir");
    let workloads = ["uniform", "swap", "keychange", "toast", "rifull"];
    let run = Command::new(blueshift_binary())
        .args(["bench", "catchup", "--smoke", "--pg-bin"])
        .arg(bins.dir())
        .arg("--catchup-workload")
        .arg(workloads.join(","))
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("blueshift bench runs");
    let context = format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "blueshift bench failed\n{context}");
    let results: Value = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("results.json")).expect("results.json written"),
    )
    .expect("results.json parses");
    let s = &results["scenarios"][0];
    assert_eq!(s["name"], "catchup");
    assert!(s["error"].is_null(), "{}\n{context}", s["error"]);
    assert_eq!(
        s["errors"].as_array().map(Vec::len),
        Some(0),
        "{}\n{context}",
        s["errors"]
    );
    let samples = s["samples"].as_array().expect("samples");
    for workload in workloads {
        for side in ["blueshift", "native", "decode_floor"] {
            let metric = format!("catchup_s_{workload}");
            assert!(
                samples.iter().any(|x| x["side"] == side
                    && x["metric"] == metric.as_str()
                    && x["value"].as_f64().is_some_and(|v| v > 0.0)),
                "{side} has no {metric}\n{context}"
            );
        }
        let backlog = format!("transactions_{workload}");
        assert!(
            samples
                .iter()
                .any(|x| x["metric"] == backlog.as_str()
                    && x["value"].as_f64().is_some_and(|v| v > 0.0)),
            "no backlog written for {workload}\n{context}"
        );
    }
}
