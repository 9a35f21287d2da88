//! `blueshift cutover` under faults, pgbench writing through PgBouncer all along: a session
//! that bypasses PgBouncer and writes on blue across the fence is detected and named (and the
//! cutover rolls back before RESUME), or terminated with --terminate-direct-sessions; green
//! stopped while the cutover drains rolls back within --max-pause, and `--resume` lays the
//! fence again once green is back.

mod cutover_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cutover_support::{text, wait_until, Stage};

/// A psql on blue, not through PgBouncer, that writes and keeps its transaction open.
fn direct_writer(stage: &Stage, value: i32) -> (std::process::Child, i32) {
    let mut child = Command::new(stage.pair.blue.binaries().bin("psql"))
        .args(["-X", "-q", &stage.pair.blue.uri("app"), "-c"])
        .arg(format!(
            "BEGIN; INSERT INTO orders (client, note) VALUES ({value}, 'direct'); \
             SELECT pg_sleep(60); COMMIT;"
        ))
        .env("PGAPPNAME", "direct-writer")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql starts");
    let mut pid = 0;
    wait_until(
        Duration::from_secs(30),
        "the direct writer holds an xid",
        || {
            if let Some(status) = child.try_wait().expect("try_wait") {
                let mut err = String::new();
                use std::io::Read as _;
                let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut err));
                panic!("the direct writer ended: {status:?}: {err}");
            }
            let found = stage
                .pair
                .blue
                .psql(
                    "app",
                    &format!(
                        "SELECT pid FROM pg_stat_activity WHERE application_name = 'direct-writer' \
                         AND backend_xid IS NOT NULL AND query LIKE '%VALUES ({value},%'"
                    ),
                )
                .unwrap_or_default();
            pid = found.parse().unwrap_or(0);
            pid != 0
        },
    );
    (child, pid)
}

#[test]
fn a_direct_writer_on_blue_is_named_then_terminated_on_request() {
    let stage = Stage::new("cutover-direct");
    let bench = stage.pgbench(100, 16);
    std::thread::sleep(Duration::from_secs(2));

    let (mut writer, pid) = direct_writer(&stage, 77);
    let out = stage.cutover(&[], &[]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        stderr.contains("a write on blue after the fence"),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("pid {pid}")), "{stderr}");
    assert!(stderr.contains("direct-writer"), "{stderr}");
    assert!(stderr.contains("writing in xid"), "{stderr}");
    assert!(stderr.contains("rolled back automatically"), "{stderr}");
    assert_eq!(stage.state(), "rolled-back");
    assert_eq!(stage.entry_port(), stage.pair.blue.port());
    assert!(!stage.paused());
    assert!(stage.blue_writable());
    // Killing psql leaves its backend asleep in its open transaction: end that too.
    let _ = writer.kill();
    let _ = writer.wait();
    stage
        .pair
        .blue
        .psql("app", &format!("SELECT pg_terminate_backend({pid})"))
        .unwrap();

    // The same writer again, terminated at the fence on request: the cutover goes through.
    let (mut writer, pid) = direct_writer(&stage, 78);
    let out = stage.cutover(&["--terminate-direct-sessions"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        stdout.contains(&format!("pid {pid}")) && stdout.contains("terminated"),
        "{stdout}"
    );
    let status = writer.wait().expect("psql ends");
    assert!(
        !status.success(),
        "the terminated writer's transaction failed"
    );
    assert_eq!(stage.state(), "cut-over");
    assert_eq!(stage.entry_port(), stage.pair.green.port());

    let result = bench.finish();
    assert!(result.success, "pgbench failed:\n{}", result.output);
    assert_eq!(result.failed, 0, "{}", result.output);
    // Every pgbench transaction on green; neither direct write committed anywhere.
    let n = i64::try_from(result.committed).unwrap();
    assert_eq!(stage.count(true, "orders"), n);
    assert_eq!(
        stage
            .pair
            .green
            .psql("app", "SELECT count(*) FROM orders WHERE note = 'direct'")
            .unwrap(),
        "0"
    );
}

#[test]
fn green_stopped_while_draining_rolls_back_within_the_pause_budget() {
    let mut stage = Stage::new("cutover-greendown");
    let bench = stage.pgbench(100, 16);
    std::thread::sleep(Duration::from_secs(2));

    // The sync stops applying, so the drain waits; then green goes down under it.
    stage.sync.signal("STOP");
    let mut cutover = stage
        .cutover_command(&["--max-pause", "2", "--max-lag", "60"], &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cutover starts");
    let started = Instant::now();
    wait_until(Duration::from_secs(10), "the cutover fenced blue", || {
        if let Some(status) = cutover.try_wait().expect("try_wait") {
            let mut err = String::new();
            use std::io::Read as _;
            let _ = cutover.stderr.take().unwrap().read_to_string(&mut err);
            panic!("the cutover ended before the fence: {status:?}\n{err}");
        }
        stage.state() == "fenced"
    });
    stage.pair.green.stop().expect("green stops");
    let status = cutover.wait().expect("cutover ends");
    let took = started.elapsed();
    let mut stderr = String::new();
    use std::io::Read as _;
    cutover
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("rolled back automatically"), "{stderr}");
    assert!(
        took < Duration::from_secs(6),
        "rolled back within --max-pause (2 s) and the connection's teardown: {took:?}"
    );
    assert_eq!(stage.entry_port(), stage.pair.blue.port());
    assert!(!stage.paused());
    assert!(stage.blue_writable());

    // Green back, the sync going again: the rollback could not be recorded on green, so the
    // record still says fenced and only --resume goes on — laying the fence again.
    stage.pair.green.start_again().expect("green starts");
    stage.sync.signal("CONT");
    assert_eq!(stage.state(), "fenced");
    wait_until(Duration::from_secs(60), "the sync catches up", || {
        stage.cutover(&["--dry-run", "--resume"], &[]).status.code() == Some(3)
    });
    let out = stage.cutover(&["--resume", "--max-lag", "60", "--max-pause", "10"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(stage.state(), "cut-over");

    let result = bench.finish();
    assert!(result.success, "pgbench failed:\n{}", result.output);
    assert_eq!(result.failed, 0, "{}", result.output);
    let n = i64::try_from(result.committed).unwrap();
    for table in ["orders", "events", "downs", "cached"] {
        assert_eq!(stage.count(true, table), n, "{table} on green");
    }
    eprintln!(
        "green stopped mid-drain: rolled back in {took:?}; resumed; {} committed, 0 failed, \
         longest transaction {:.0} ms",
        result.committed, result.max_latency_ms
    );
}

/// Without PgBouncer: the switch command does the switch, blue is fenced read-only, and the
/// watch has no probe to send (the pause is what the application's reconnect takes).
#[test]
fn without_pgbouncer_a_switch_command_switches() {
    let stage = Stage::new("cutover-command");
    stage
        .pair
        .blue
        .psql(
            "app",
            "INSERT INTO orders (client, note) SELECT g % 4, 'direct' FROM generate_series(1, 500) g",
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("switched");
    let command = format!(
        "echo \"$BLUESHIFT_TARGET_HOST $BLUESHIFT_TARGET_PORT $BLUESHIFT_TARGET_DBNAME $BLUESHIFT_SWITCH_DIRECTION\" > '{}'",
        record.display()
    );
    let out = Command::new(blueshift_tests::blueshift_binary())
        .arg("cutover")
        .args(["--source", &stage.pair.blue.uri("app")])
        .args(["--target", &stage.pair.green.uri("app")])
        .args(["--slot", "bs", "--publication", "pub", "--skip-verify"])
        .args(["--switch-command", &command, "--watch", "1"])
        .output()
        .expect("cutover runs");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(stage.state(), "cut-over");
    assert_eq!(
        std::fs::read_to_string(&record).unwrap().trim(),
        format!("127.0.0.1 {} app to-green", stage.pair.green.port())
    );
    assert!(!stage.blue_writable());
    assert_eq!(stage.count(true, "orders"), 500);
    // PgBouncer was not touched.
    assert_eq!(stage.entry_port(), stage.pair.blue.port());
}

/// A write on blue after RESUME (a session that bypasses PgBouncer, read-write since before
/// the fence) fails the watch, which rolls back to blue by itself through the way back.
#[test]
fn a_late_write_on_blue_fails_the_watch_and_rolls_back() {
    let stage = Stage::new("cutover-latewrite");
    let bench = stage.pgbench(100, 20);
    std::thread::sleep(Duration::from_secs(2));
    // Connected now, writing in 3 s: after the switch, during the watch.
    let mut late = Command::new(stage.pair.blue.binaries().bin("psql"))
        .args(["-X", "-q", &stage.pair.blue.uri("app"), "-c"])
        // A key no sequence hands out, so green can take it too.
        .arg("SELECT pg_sleep(3); INSERT INTO downs (id, v) VALUES (1000000, 55);")
        .env("PGAPPNAME", "late-writer")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("psql starts");
    let out = stage.cutover(&["--watch", "8"], &[]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        stderr.contains("the watch after the switch failed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("a write on blue after the fence"),
        "{stderr}"
    );
    assert!(
        stderr.contains("rolled back to blue automatically through the reverse direction"),
        "{stderr}"
    );
    let _ = late.wait();
    assert_eq!(stage.state(), "rolled-back");
    assert_eq!(stage.entry_port(), stage.pair.blue.port());
    assert!(stage.blue_writable());
    let result = bench.finish();
    assert!(result.success, "pgbench failed:\n{}", result.output);
    assert_eq!(result.failed, 0, "{}", result.output);
    // Blue has every transaction (green's came back) and the late write; green the same.
    let n = i64::try_from(result.committed).unwrap();
    stage.converge();
    assert_eq!(stage.count(false, "orders"), n);
    assert_eq!(stage.count(false, "downs"), n + 1);
}
