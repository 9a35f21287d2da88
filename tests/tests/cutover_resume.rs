//! `blueshift cutover` killed (`kill -9`, by failpoint) at each state while pgbench writes
//! through PgBouncer, then `--resume`: it finishes, no client transaction failed (they waited
//! behind PgBouncer's PAUSE, which outlives blueshift), and green holds every committed
//! transaction exactly once.

mod cutover_support;

use std::os::unix::process::ExitStatusExt as _;
use std::time::Duration;

use cutover_support::{text, Stage};

fn killed_at_then_resumed(name: &str, failpoint: &str, state: &str, paused: bool) {
    let stage = Stage::new(name);
    let bench = stage.pgbench(100, 14);
    std::thread::sleep(Duration::from_secs(3));
    let spec = format!("{failpoint}=kill");
    let out = stage.cutover(&[], &[("BLUESHIFT_FAILPOINTS", &spec)]);
    assert_eq!(out.status.signal(), Some(9), "{}", text(&out));
    assert_eq!(stage.state(), state);
    assert_eq!(stage.paused(), paused, "PgBouncer paused after the crash");
    // The sidecar exports the state the cutover was killed in: what the stuck-cutover alert
    // (deploy/prometheus/alerts.yml) fires on.
    stage.exported_state(state);

    // Without --resume a new cutover is refused: one is half done.
    let refused = stage.cutover(&[], &[]);
    assert_eq!(refused.status.code(), Some(3), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--resume"),
        "{}",
        text(&refused)
    );

    let out = stage.cutover(&["--resume"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(stage.state(), "cut-over");
    assert_eq!(stage.entry_port(), stage.pair.green.port());
    assert!(!stage.paused());
    assert!(!stage.blue_writable());

    let result = bench.finish();
    assert!(result.success, "pgbench failed:\n{}", result.output);
    assert_eq!(result.failed, 0, "{}", result.output);
    let n = i64::try_from(result.committed).unwrap();
    for table in ["orders", "events", "downs", "cached"] {
        assert_eq!(stage.count(true, table), n, "{table} on green");
    }
    let events = stage
        .pair
        .green
        .psql(
            "app",
            "SELECT string_agg(state, ',' ORDER BY id) FROM blueshift.cutover_event WHERE slot = 'bs'",
        )
        .unwrap();
    assert!(events.ends_with("cut-over"), "{events}");
    eprintln!(
        "killed at {state}, resumed: {} committed, 0 failed, longest transaction {:.0} ms; events {events}",
        result.committed, result.max_latency_ms
    );
}

#[test]
fn killed_when_fenced() {
    killed_at_then_resumed("cutover-kill-fenced", "cutover-fenced", "fenced", true);
}

#[test]
fn killed_when_drained() {
    killed_at_then_resumed("cutover-kill-drained", "cutover-drained", "drained", true);
}

#[test]
fn killed_when_switched() {
    killed_at_then_resumed(
        "cutover-kill-switched",
        "cutover-switched",
        "switched",
        true,
    );
}

#[test]
fn killed_when_watching() {
    killed_at_then_resumed(
        "cutover-kill-watching",
        "cutover-resumed",
        "watching",
        false,
    );
}
