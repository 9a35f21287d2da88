//! `blueshift cutover` through a real PgBouncer while pgbench writes through it at a fixed
//! rate: no failed transaction, every committed row on green exactly once (and back on blue
//! through the way back the cutover arms), the write pause measured from pgbench's
//! per-transaction log; the sequences (bigserial, identity, a
//! descending one, one cached by several sessions) carry on without a duplicate key; and a
//! failing switch command rolls back automatically before RESUME.

mod cutover_support;

use std::time::{Duration, Instant};

use cutover_support::{text, Stage, CLIENTS};

#[test]
fn pgbench_through_pgbouncer_loses_nothing_and_fails_nothing() {
    let stage = Stage::new("cutover-pgbench");
    let bench = stage.pgbench(100, 12);
    std::thread::sleep(Duration::from_secs(4));

    // The verify gate, on the contract of `blueshift verify` (blueshift.verify_run on green):
    // no run, a run that found differences, an old one — each refused, nothing changed.
    let gate = [("BLUESHIFT_SKIP_VERIFY", "0")];
    let refused = stage.cutover(&["--dry-run"], &gate);
    assert_eq!(refused.status.code(), Some(3), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("no verify has run: run `blueshift verify` or pass --skip-verify"),
        "{}",
        text(&refused)
    );
    stage
        .pair
        .green
        .psql(
            "app",
            "CREATE TABLE blueshift.verify_run (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                 started_at timestamptz, finished_at timestamptz, lsn pg_lsn, outcome text,
                 differences bigint);
             INSERT INTO blueshift.verify_run (started_at, finished_at, outcome, differences)
             VALUES (now() - interval '2 hours', now() - interval '2 hours', 'equal', 0),
                    (now(), now(), 'different', 3)",
        )
        .unwrap();
    let refused = stage.cutover(&["--dry-run"], &gate);
    assert_eq!(refused.status.code(), Some(3), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("found 3 differences"),
        "{}",
        text(&refused)
    );
    stage
        .pair
        .green
        .psql(
            "app",
            "INSERT INTO blueshift.verify_run (started_at, finished_at, outcome, differences)
             VALUES (now() - interval '2 hours', now() - interval '2 hours', 'equal', 0)",
        )
        .unwrap();
    let refused = stage.cutover(&["--dry-run"], &gate);
    assert_eq!(refused.status.code(), Some(3), "{}", text(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("older than --max-verify-age"),
        "{}",
        text(&refused)
    );
    stage
        .pair
        .green
        .psql(
            "app",
            "INSERT INTO blueshift.verify_run (started_at, finished_at, outcome, differences)
             VALUES (now(), now(), 'equal', 0)",
        )
        .unwrap();

    // The plan: a clean, recent verify passes the gate; nothing changes.
    let plan = stage.cutover(&["--dry-run"], &gate);
    assert!(plan.status.success(), "{}", text(&plan));
    let plan_text = String::from_utf8_lossy(&plan.stdout).into_owned();
    assert!(plan_text.contains("estimated write pause"), "{plan_text}");
    assert_eq!(
        stage.entry_port(),
        stage.pair.blue.port(),
        "dry run switched"
    );
    assert!(stage.blue_writable(), "dry run fenced blue");

    let started = Instant::now();
    let out = stage.cutover(&[], &gate);
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
