//! Sync fails closed on the stream side, the real binary between real clusters: a slot dropped
//! and re-created, advanced by `pg_replication_slot_advance` or acknowledged by `blueshift tail`
//! past green, dropped, or invalidated by `max_slot_wal_keep_size` is refused with the object,
//! the gap and the way to start over (and `blueshift status` flags it); the documented way to
//! start over works; and a green blocked for 30 s under a 5 s `wal_sender_timeout` does not make
//! blue drop the stream.

#[path = "support/cli.rs"]
mod cli;
#[path = "support/sync.rs"]
mod support;

use std::time::Duration;

use blueshift_tests::{blueshift_binary, eventually, PgBinaries};
use support::{fingerprint, Pair};

const SCHEMA: &str = "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE TABLE k (n int, v text);";
const TABLES: &[&str] = &["t", "k"];

fn pair(name: &str, blue_settings: &[(&str, &str)]) -> Pair {
    let bins = PgBinaries::from_env().expect("PostgreSQL binaries");
    let pair = Pair::with(name, bins.clone(), bins, blue_settings);
    pair.schema(SCHEMA);
    pair.blue
        .psql("app", "CREATE PUBLICATION pub FOR ALL TABLES")
        .expect("publication");
    pair
}

/// Inserts rows `from..=to` into both tables on blue, one transaction per ten rows.
fn write(pair: &Pair, from: i32, to: i32) {
    pair.blue
        .psql(
            "app",
            &format!(
                "DO $$ BEGIN FOR i IN {from}..{to} LOOP
                   INSERT INTO t VALUES (i, 'row ' || i); INSERT INTO k VALUES (i, 'row ' || i);
                   IF i % 10 = 0 THEN COMMIT; END IF;
                 END LOOP; END $$"
            ),
        )
        .expect("writes on blue");
}

fn count(c: &blueshift_tests::Cluster, table: &str) -> i64 {
    c.psql("app", &format!("SELECT count(*) FROM {table}"))
        .expect("count")
        .parse()
        .expect("a number")
}

/// Runs sync expecting it to refuse; its log.
fn refused(pair: &Pair) -> String {
    let mut sync = pair.spawn("sync", &[]);
    let status = sync.exited(Duration::from_secs(60));
    let log = sync.log_text();
    assert!(!status.success(), "sync did not refuse:\n{log}");
    log
}

/// `blueshift status` for slot `bs`; its stdout (it succeeds).
fn status(pair: &Pair) -> String {
    let out = cli::run(
        "status",
        &pair.blue.uri("app"),
        &pair.green.uri("app"),
        &["--slot", "bs"],
    );
    // A report that lists a problem exits 1 (the problems class), after printing it.
    let stderr = cli::failed("status", &out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("status lists 1 problem(s)"), "{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Streams rows 1..=100, then stops sync cleanly.
fn synced_then_stopped(pair: &Pair) {
    let mut sync = pair.sync(&[]);
    write(pair, 1, 100);
    pair.converge(TABLES, Duration::from_secs(60));
    assert!(sync.terminate(), "SIGTERM exits 0");
}

#[test]
fn a_slot_dropped_and_created_again_is_refused_with_the_gap_and_status_flags_it() {
    let pair = pair("recreated", &[]);
    synced_then_stopped(&pair);
    let recorded = pair
        .green
        .psql(
            "app",
            "SELECT acknowledged FROM blueshift.slot_guard WHERE slot = 'bs'",
        )
        .expect("green recorded what it acknowledged");
    pair.blue
        .psql("app", "SELECT pg_drop_replication_slot('bs')")
        .unwrap();
    // Lost with the old slot: nobody streams these.
    write(&pair, 101, 150);
    pair.blue
        .psql(
            "app",
            "SELECT pg_create_logical_replication_slot('bs', 'pgoutput')",
        )
        .unwrap();
    write(&pair, 151, 200);
    let confirmed = pair.confirmed();

    let log = refused(&pair);
    assert!(
        log.contains(&format!(
            "green holds up to {recorded}, the slot starts at {confirmed}: changes in between are lost"
        )),
        "{log}"
    );
    assert!(
        log.contains("replication slot \"bs\" on blue is not the one blueshift left"),
        "{log}"
    );
    assert!(
        log.contains("blueshift cleanup --source … --target … --slot bs --yes"),
        "{log}"
    );
    assert!(!log.contains("sync started"), "{log}");
    assert_eq!(
        count(&pair.green, "t"),
        100,
        "nothing applied from the new slot"
    );
    // The slot was not moved by the refused run.
    assert_eq!(pair.confirmed(), confirmed);

    let out = status(&pair);
    assert!(out.starts_with("PROBLEM: "), "{out}");
    assert!(
        out.contains(&format!(
            "the slot starts at {confirmed}: changes in between are lost"
        )),
        "{out}"
    );
}

#[test]
fn a_slot_advanced_past_green_is_refused_and_starting_over_as_told_converges() {
    let pair = pair("advanced", &[]);
    synced_then_stopped(&pair);
    write(&pair, 101, 150);
    pair.blue
        .psql(
            "app",
            "SELECT pg_replication_slot_advance('bs', pg_current_wal_lsn())",
        )
        .unwrap();
    let log = refused(&pair);
    assert!(log.contains("changes in between are lost"), "{log}");
    assert!(log.contains("pg_replication_slot_advance"), "{log}");
    assert!(status(&pair).contains("changes in between are lost"));

    // Start over exactly as the message says: cleanup, TRUNCATE green's tables, sync.
    let out = cli::run(
        "cleanup",
        &pair.blue.uri("app"),
        &pair.green.uri("app"),
        &["--slot", "bs", "--yes"],
    );
    let report = cli::succeeded("cleanup", &out);
    assert!(report.contains("green's record of slot \"bs\""), "{report}");
    pair.green.psql("app", "TRUNCATE t, k").unwrap();
    let mut sync = pair.sync(&[]);
    write(&pair, 151, 200);
    pair.converge(TABLES, Duration::from_secs(60));
    assert_eq!(count(&pair.green, "t"), 200);
    assert!(sync.terminate());

    // Another consumer of the same slot: `blueshift tail --slot` acknowledges what it printed.
    write(&pair, 201, 250);
    let until = pair.blue_lsn();
    let out = std::process::Command::new(blueshift_binary())
        .args(["tail", "--source", &pair.blue.uri("app")])
        .args(["--publication", "pub", "--slot", "bs", "--until", &until])
        .args(["--status-interval", "1"])
        .env_remove("PGPASSWORD")
        .output()
        .expect("tail runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = refused(&pair);
    assert!(log.contains("changes in between are lost"), "{log}");
    assert!(log.contains("blueshift tail --slot bs"), "{log}");
    assert_eq!(count(&pair.green, "t"), 200);
}

#[test]
fn a_dropped_slot_is_reported_lost_before_the_backfill_looks_at_green() {
    let pair = pair("dropped", &[]);
    synced_then_stopped(&pair);
    pair.blue
        .psql("app", "SELECT pg_drop_replication_slot('bs')")
        .unwrap();
    write(&pair, 101, 120);
    let log = refused(&pair);
    assert!(
        log.contains("replication slot \"bs\" does not exist on blue")
            && log.contains("the slot was lost"),
        "{log}"
    );
    assert!(!log.contains("already has rows"), "{log}");
    assert!(log.contains("To start over"), "{log}");
    // Status says the same rather than "start the sync".
    let out = cli::run(
        "status",
        &pair.blue.uri("app"),
        &pair.green.uri("app"),
        &["--slot", "bs"],
    );
    let err = cli::failed("status", &out);
    assert!(err.contains("the slot was lost"), "{err}");
}

#[test]
fn an_invalidated_slot_names_max_slot_wal_keep_size_and_how_to_start_over() {
    let pair = pair("invalidated", &[("max_slot_wal_keep_size", "1MB")]);
    synced_then_stopped(&pair);
    // Blue writes past max_slot_wal_keep_size and a checkpoint removes the slot's WAL.
    eventually(Duration::from_secs(60), || {
        pair.blue.psql(
            "app",
            "INSERT INTO k VALUES (-1, 'wal'); SELECT pg_switch_wal();
             INSERT INTO k VALUES (-1, 'wal'); SELECT pg_switch_wal(); CHECKPOINT;",
        )?;
        let status = pair.blue.psql(
            "app",
            "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'bs'",
        )?;
        anyhow::ensure!(status == "lost", "wal_status is {status}");
        Ok(())
    })
    .unwrap();
    let log = refused(&pair);
    assert!(
        log.contains("replication slot \"bs\" on blue was invalidated (wal_status = lost"),
        "{log}"
    );
    assert!(log.contains("max_slot_wal_keep_size"), "{log}");
    assert!(log.contains("To start over"), "{log}");
    let out = status(&pair);
    assert!(
        out.starts_with("PROBLEM: ") && out.contains("max_slot_wal_keep_size"),
        "{out}"
    );
}

/// Green's table locked for 30 s while blue writes, with blue's `wal_sender_timeout` at 5 s and
/// sync's status interval at its 10 s default: the appliers block, the job queue fills, the
/// reader stops reading — and standby status still reaches blue in time, so the walsender is
/// never terminated and the same connection carries everything once the lock goes.
#[test]
fn a_green_locked_for_30_s_under_a_5_s_wal_sender_timeout_keeps_the_stream() {
    let pair = pair("keepalive", &[("wal_sender_timeout", "5s")]);
    // One applier and a queue of four: once the applier waits on the lock, the reader soon
    // waits on the queue and reads nothing from blue (no keepalive asking for a reply either).
    let mut sync = pair.sync(&[
        "--status-interval",
        "10",
        "--workers",
        "1",
        "--queue-capacity",
        "4",
    ]);
    let walsender = || {
        pair.blue
            .psql(
                "app",
                "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'bs'",
            )
            .expect("slot")
    };
    let pid = walsender();
    write(&pair, 1, 10);
    pair.converge(TABLES, Duration::from_secs(60));

    let mut lock = std::process::Command::new(pair.green.binaries().bin("psql"))
        .args(["-X", "-q", &pair.green.uri("app"), "-c"])
        .arg("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(30); COMMIT;")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("psql on green");
    eventually(Duration::from_secs(30), || {
        let held = pair.green.psql(
            "app",
            "SELECT count(*) FROM pg_locks WHERE relation = 't'::regclass AND mode = 'AccessExclusiveLock' AND granted",
        )?;
        anyhow::ensure!(held == "1", "the lock is not held yet");
        Ok(())
    })
    .unwrap();
    // Far more transactions than the queue holds.
    write(&pair, 11, 3000);
    assert!(
        lock.wait().expect("psql ends").success(),
        "the lock was held 30 s"
    );
    pair.converge(TABLES, Duration::from_secs(120));

    assert_eq!(walsender(), pid, "the same walsender streamed throughout");
    let blue_log = pair.blue.log();
    assert!(
        !blue_log.contains("terminating walsender process due to replication timeout"),
        "{blue_log}"
    );
    let log = sync.log_text();
    assert!(!log.contains("reconnecting"), "{log}");
    assert!(
        log.contains("standby status goes out within a third of blue's wal_sender_timeout"),
        "{log}"
    );
    assert_eq!(
        fingerprint(&pair.blue, "t").unwrap(),
        fingerprint(&pair.green, "t").unwrap()
    );
    assert!(sync.terminate());
}

/// A slot green has no record of (an install from before the slot guard) is adopted at its
/// `confirmed_flush_lsn` with one warning, and guarded from then on. The table without a key is
/// named in a warning that says blue itself refuses UPDATE and DELETE on it.
#[test]
fn a_slot_without_a_record_is_adopted_once_with_a_warning() {
    let pair = pair("adopted", &[]);
    synced_then_stopped(&pair);
    pair.green
        .psql("app", "DELETE FROM blueshift.slot_guard")
        .unwrap();
    let confirmed = pair.confirmed();
    let mut sync = pair.sync(&[]);
    write(&pair, 101, 120);
    pair.converge(TABLES, Duration::from_secs(60));
    assert!(sync.terminate());
    let log = sync.log_text();
    assert!(
        log.contains("green has no record of this replication slot"),
        "{log}"
    );
    assert!(
        log.contains(&format!("confirmed_flush_lsn={confirmed}")),
        "{log}"
    );
    assert!(
        log.contains("table \"public\".\"k\" has no primary key on blue")
            && log.contains("blue itself refuses UPDATE and DELETE on it"),
        "{log}"
    );
    let recorded = pair
        .green
        .psql(
            "app",
            "SELECT created_lsn IS NULL, acknowledged >= pg_lsn '0/0' FROM blueshift.slot_guard",
        )
        .unwrap();
    assert_eq!(recorded, "t|t", "recorded as adopted");
    // Once recorded, no second warning.
    let mut sync = pair.sync(&[]);
    assert!(sync.terminate());
    assert!(!sync
        .log_text()
        .contains("green has no record of this replication slot"));
}
