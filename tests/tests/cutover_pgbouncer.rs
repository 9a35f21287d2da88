//! `blueshift cutover` through a real PgBouncer while pgbench writes through it at a fixed
//! rate, behind the real verify gate (real `blueshift verify` runs: none, one that found a
//! difference, one of a single table, a counts-only one and a stale one refused, a clean
//! recent one passes): no failed transaction, every committed row on green exactly once (and back on blue
//! through the way back the cutover arms), the write pause measured from pgbench's
//! per-transaction log; the sequences (bigserial, identity, a
//! descending one, one cached by several sessions) carry on without a duplicate key; and a
//! failing switch command rolls back automatically before RESUME.

mod cutover_support;

use std::time::{Duration, Instant};

use cutover_support::{text, wait_until, Stage, CLIENTS};

#[test]
fn pgbench_through_pgbouncer_loses_nothing_and_fails_nothing() {
    let stage = Stage::new("cutover-pgbench").with_verify_gate();
    // Long enough for four verify runs and the cutover under the load; it is still running at
    // the cutover (checked).
    let mut bench = stage.pgbench(100, 80);
    std::thread::sleep(Duration::from_secs(3));

    // The verify gate, through real `blueshift verify` runs while the sidecar streams: no run
    // yet, a run that found a difference, a clean run of one table only, a clean run grown
    // older than --max-verify-age — each refused, nothing changed; then a clean recent run of
    // the whole publication lets the cutover through. Every verify runs while pgbench writes
    // through PgBouncer: the sidecar holds green at verify's point for a few milliseconds.
    // The sidecar exports the cutover's state (none ran: replicating), and no pause yet.
    let metrics = stage.exported_state("replicating");
    assert!(
        !metrics.contains("\nblueshift_cutover_pause_seconds "),
        "{metrics}"
    );
    let refused = stage.cutover(&["--dry-run"], &[]);
    assert_eq!(refused.status.code(), Some(3), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("no verify of slot \"bs\" and publication \"pub\" has run: run `blueshift verify` or pass --skip-verify"),
        "{}",
        text(&refused)
    );
    // A row only green holds (blue's keys are positive): verify finds it, the gate refuses.
    stage
        .pair
        .green
        .psql(
            "app",
            "INSERT INTO orders (id, client, note) VALUES (-7, -7, 'only on green')",
        )
        .unwrap();
    let verified = stage.verify(&[]);
    assert_eq!(verified.status.code(), Some(1), "{}", text(&verified));
    assert!(
        String::from_utf8_lossy(&verified.stdout).contains("-7"),
        "{}",
        text(&verified)
    );
    let refused = stage.cutover(&["--dry-run"], &[]);
    assert_eq!(refused.status.code(), Some(3), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("(run 1) found 1 differences other than sequences behind on green"),
        "{}",
        text(&refused)
    );
    stage
        .pair
        .green
        .psql("app", "DELETE FROM orders WHERE id = -7")
        .unwrap();
    // A clean run of one table says nothing about the four others.
    let verified = stage.verify(&["--tables", "orders"]);
    assert!(rows_equal(&verified), "{}", text(&verified));
    let refused = stage.cutover(&["--dry-run"], &[]);
    assert_eq!(refused.status.code(), Some(3), "{}", text(&refused));
    let stderr = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert!(
        stderr.contains("the last verify (run 2) did not compare 4 published table(s)"),
        "{}",
        text(&refused)
    );
    for table in ["events", "downs", "cached", "counters"] {
        assert!(
            stderr.contains(&format!("\"public\".\"{table}\"")),
            "{stderr}"
        );
    }
    // Equal row counts (--counts) prove nothing about the rows themselves.
    let counted = stage.verify(&["--counts"]);
    assert!(rows_equal(&counted), "{}", text(&counted));
    let refused = stage.cutover(&["--dry-run"], &[]);
    assert_eq!(refused.status.code(), Some(3), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("the last verify (run 3) compared row counts only"),
        "{}",
        text(&refused)
    );
    let verified = stage.verify(&[]);
    assert!(rows_equal(&verified), "{}", text(&verified));
    eprintln!(
        "blueshift verify under pgbench through PgBouncer:\n{}",
        String::from_utf8_lossy(&verified.stdout)
    );
    // The clean run, once older than --max-verify-age, is refused too.
    let mut stale = None;
    wait_until(
        Duration::from_secs(20),
        "the gate refuses a verify older than --max-verify-age 1",
        || {
            let out = stage.cutover(&["--dry-run", "--max-verify-age", "1"], &[]);
            let refused = out.status.code() == Some(3);
            stale = Some(out);
            refused
        },
    );
    let stale = stale.expect("ran");
    assert!(
        String::from_utf8_lossy(&stale.stderr).contains("older than --max-verify-age 1 s"),
        "{}",
        text(&stale)
    );

    // The plan: a clean, recent verify passes the gate; nothing changes.
    let plan = stage.cutover(&["--dry-run"], &[]);
    assert!(plan.status.success(), "{}", text(&plan));
    let plan_text = String::from_utf8_lossy(&plan.stdout).into_owned();
    assert!(plan_text.contains("estimated write pause"), "{plan_text}");
    // pgbench moved the sequences since sync started, and sync does not carry them: verify
    // found them behind on green, and the gate let that through with a warning (the drain
    // copies them; the 1000 inserts below prove it).
    assert!(
        plan_text.contains("warning: the last verify (run 4) found the rows equal and"),
        "{plan_text}"
    );
    assert_eq!(
        stage.entry_port(),
        stage.pair.blue.port(),
        "dry run switched"
    );
    assert!(stage.blue_writable(), "dry run fenced blue");

    assert!(
        bench.running(),
        "pgbench ended before the cutover: lengthen it"
    );
    let started = Instant::now();
    let out = stage.cutover(&[], &[]);
    let took = started.elapsed();
    assert!(out.status.success(), "{}", text(&out));
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(report.contains("cutover: cut-over"), "{report}");
    assert_eq!(stage.state(), "cut-over");
    assert_eq!(stage.entry_port(), stage.pair.green.port());
    assert!(!stage.paused());
    // `status` shows the machine: its state, the pause, the way back, the last events.
    let status = stage.status();
    assert!(status.contains("cut-over (forward)"), "{status}");
    assert!(status.contains("write pause"), "{status}");
    assert!(
        status.contains("armed (slot bs_reverse on green)"),
        "{status}"
    );
    assert!(status.contains("watch passed"), "{status}");
    // The sidecar exports the new state and the pause green recorded.
    let metrics = stage.exported_state("cut-over");
    let recorded: f64 = stage
        .pair
        .green
        .psql(
            "app",
            "SELECT pause_ms / 1000 FROM blueshift.cutover WHERE slot = 'bs'",
        )
        .unwrap()
        .parse()
        .unwrap();
    let exported: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("blueshift_cutover_pause_seconds "))
        .unwrap_or_else(|| panic!("no pause exported:\n{metrics}"))
        .parse()
        .unwrap();
    assert!(
        (exported - recorded).abs() < 1e-6,
        "{exported} vs {recorded}"
    );
    // Blue is fenced: a new session cannot write there any more.
    assert!(!stage.blue_writable());
    let refused = stage
        .pair
        .blue
        .psql("app", "INSERT INTO orders (client) VALUES (99)")
        .unwrap_err();
    assert!(
        format!("{refused:#}").contains("read-only transaction"),
        "{refused:#}"
    );

    let result = bench.finish();
    assert!(result.success, "pgbench failed:\n{}", result.output);
    assert_eq!(result.failed, 0, "failed transactions:\n{}", result.output);
    assert!(result.committed > 500, "{result:?}");

    // Every committed transaction is on green exactly once: one row per table and one counter
    // increment each.
    let n = i64::try_from(result.committed).unwrap();
    for table in ["orders", "events", "downs", "cached"] {
        assert_eq!(stage.count(true, table), n, "{table} on green");
    }
    let sum: i64 = stage
        .pair
        .green
        .psql("app", "SELECT sum(n) FROM counters")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(sum, n, "counter increments on green");
    // Green's writes since the switch flow back to blue through the way back the cutover
    // armed (blue is read-only for everybody else): blue ends equal to green, each
    // transaction once.
    stage.converge();
    assert_eq!(stage.count(false, "orders"), n, "orders on blue");

    // Sequences: the first 1000 inserts on green after the cutover raise no duplicate key.
    stage
        .pair
        .green
        .psql(
            "app",
            "DO $$ BEGIN FOR i IN 1..1000 LOOP
                INSERT INTO orders (client, note) VALUES (-1, 'after');
                INSERT INTO events (kind) VALUES ('after');
                INSERT INTO downs (v) VALUES (-1);
                INSERT INTO cached (v) VALUES (-1);
             END LOOP; END $$",
        )
        .expect("1000 inserts on green after the cutover");
    let below: i64 = stage
        .pair
        .green
        .psql("app", "SELECT count(*) FROM downs WHERE id >= 0")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(below, 0, "the descending sequence went on downwards");

    let pause = report
        .lines()
        .find_map(|l| l.trim().strip_prefix("write pause (PAUSE to RESUME): "))
        .unwrap_or("?")
        .to_owned();
    eprintln!(
        "cutover at 100 tx/s through PgBouncer, {CLIENTS} clients: {} committed, {} failed; \
         blueshift's pause {pause}; pgbench: longest transaction {:.1} ms, longest delay from \
         schedule {:.1} ms; the command took {took:?} (watch 2 s)",
        result.committed, result.failed, result.max_latency_ms, result.max_delay_ms
    );
    assert!(
        result.max_latency_ms < 5000.0,
        "the pause stays under --max-pause: {result:?}"
    );
}

#[test]
fn a_failing_switch_command_rolls_back_before_resume() {
    let stage = Stage::new("cutover-switchfail");
    let bench = stage.pgbench(100, 8);
    std::thread::sleep(Duration::from_secs(3));
    // The command fails towards green; towards blue (the rollback runs it again) it succeeds.
    let out = stage.cutover(
        &[
            "--switch-command",
            "echo \"switching $BLUESHIFT_SWITCH_DIRECTION\" >&2; [ \"$BLUESHIFT_SWITCH_DIRECTION\" = to-blue ] || exit 3",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(stderr.contains("rolled back automatically"), "{stderr}");
    assert!(stderr.contains("switch command failed"), "{stderr}");
    assert!(stderr.contains("switching to-green"), "{stderr}");
    assert!(stderr.contains("switching to-blue"), "{stderr}");
    // PgBouncer's own server connections are not sessions that bypass it.
    assert!(!stderr.contains("bypasses PgBouncer"), "{stderr}");
    assert_eq!(stage.state(), "rolled-back");
    assert_eq!(stage.entry_port(), stage.pair.blue.port());
    assert!(!stage.paused());
    assert!(stage.blue_writable());
    let result = bench.finish();
    assert!(result.success, "pgbench failed:\n{}", result.output);
    assert_eq!(result.failed, 0, "{}", result.output);
    // Everything went to blue, and the sync still carries it to green.
    let n = i64::try_from(result.committed).unwrap();
    assert_eq!(stage.count(false, "orders"), n);
    stage.converge();
}

/// `blueshift verify` found every row equal: exit 0, or exit 1 with sequences behind on green
/// as its only differences (sync does not carry sequences; the cutover copies them).
fn rows_equal(out: &std::process::Output) -> bool {
    let stdout = String::from_utf8_lossy(&out.stdout);
    match out.status.code() {
        Some(0) => true,
        Some(1) => stdout.lines().any(|l| {
            let Some(rest) = l.strip_prefix("DIFFERENT in ") else {
                return false;
            };
            let number = |s: &str| {
                s.split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
            };
            let all = rest.split_once(": ").and_then(|(_, r)| number(r));
            let sequences = rest.split_once(" (").and_then(|(_, r)| number(r));
            rest.ends_with("sequences behind on green, which `blueshift cutover` copies)")
                && all.is_some()
                && all == sequences
        }),
        _ => false,
    }
}
