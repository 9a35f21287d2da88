//! Crashes at each failpoint of the commit/acknowledge boundary (see
//! `blueshift_applier::failpoint`), 20 times each, the real binary between real clusters: blue
//! writes, `blueshift sync` starts with the failpoint armed and kills itself there (`SIGKILL`),
//! again and again; then a sync without failpoints catches up. After every crash green has no
//! duplicate and the slot is not past what green recorded; at the end green equals blue row for
//! row — a table with a unique sequence number (no loss, no gap) and a table without a key (no
//! duplicate).

#[path = "support/sync.rs"]
mod support;

use std::time::Duration;

use blueshift_decoder::Lsn;
use support::Pair;

const ITERATIONS: u32 = 20;

const SCHEMA: &str = "CREATE TABLE seqd (n bigint PRIMARY KEY, v text NOT NULL);
                      CREATE TABLE keyless (n bigint NOT NULL, v text NOT NULL);
                      CREATE SEQUENCE gen;";

/// `count` transactions on blue, each inserting the next number into both tables and updating
/// the row five numbers back (more statements per transaction, and rows that change).
fn workload(count: u32) -> String {
    format!(
        "DO $$ DECLARE x bigint; BEGIN FOR i IN 1..{count} LOOP
           x := nextval('gen');
           INSERT INTO seqd VALUES (x, 'v' || x);
           INSERT INTO keyless VALUES (x, 'v' || x);
           UPDATE seqd SET v = v || '+' WHERE n = x - 5;
           COMMIT;
         END LOOP; END $$"
    )
}

/// A `psql` on blue (application name `fp_writer`) committing one small transaction after
/// another for up to half a minute; ended with `pg_terminate_backend`.
fn writer(pair: &Pair) -> std::process::Child {
    std::process::Command::new(pair.blue.binaries().bin("psql"))
        .args(["-X", "-q"])
        .arg(format!(
            "{}?application_name=fp_writer",
            pair.blue.uri("app")
        ))
        .arg("-c")
        .arg(workload(3000).replace("COMMIT;", "COMMIT; PERFORM pg_sleep(0.01);"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("psql on blue")
}

/// The slot's `confirmed_flush_lsn` is never past green's record of what was acknowledged. The
/// slot is read first: the record only grows and is written before the slot may move, so a
/// record read later must cover it (even while a sync runs).
fn slot_within_record(pair: &Pair, context: &str) {
    let confirmed = pair.confirmed();
    let exists = pair
        .green
        .psql(
            "app",
            "SELECT pg_catalog.to_regclass('blueshift.slot_guard') IS NOT NULL",
        )
        .expect("catalog");
    if exists != "t" {
        return;
    }
    let recorded = pair
        .green
        .psql(
            "app",
            "SELECT acknowledged FROM blueshift.slot_guard WHERE slot = 'bs'",
        )
        .expect("record");
    if let (Ok(recorded), Ok(confirmed)) = (recorded.parse::<Lsn>(), confirmed.parse::<Lsn>()) {
        assert!(
            confirmed <= recorded,
            "{context}: the slot confirmed {confirmed}, green recorded only {recorded}"
        );
    }
}

/// Kills sync at `failpoint` (`kill@at(i)` in iteration `i`) `ITERATIONS` times, then checks
/// that a clean sync converges with nothing lost or doubled. With `from_scratch`, the first
/// iteration starts without a slot (the backfill creates it); otherwise a clean sync creates it
/// first.
fn crash_loop(name: &str, failpoint: &str, from_scratch: bool, at: impl Fn(u32) -> u32) {
    let pair = Pair::new(&format!("fp-{name}"));
    pair.schema(SCHEMA);
    pair.blue
        .psql("app", "CREATE PUBLICATION pub FOR TABLE seqd, keyless")
        .expect("publication");
    if !from_scratch {
        let mut sync = pair.sync(&[]);
        assert!(sync.terminate());
    }
    for i in 0..ITERATIONS {
        // A backlog of a different size each time, so crashes land at different places.
        pair.blue
            .psql("app", &workload(5 + (i % 5) * 7))
            .expect("backlog");
        let spec = format!("{failpoint}=kill@{}", at(i));
        let mut sync = pair.spawn_env(
            "sync",
            &["--workers", "2"],
            &[("BLUESHIFT_FAILPOINTS", spec.as_str())],
        );
        // Blue keeps writing while sync runs and dies: one small transaction after another, so
        // the failpoint's N-th hit always comes.
        let mut writer = writer(&pair);
        sync.killed_at(&spec, Duration::from_secs(60));
        pair.blue
            .psql(
                "app",
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'fp_writer'",
            )
            .expect("stop the writer");
        writer.wait().expect("writer ends");
        assert_eq!(
            pair.green
                .psql("app", "SELECT count(*) - count(DISTINCT n) FROM keyless")
                .expect("duplicates"),
            "0",
            "iteration {i}: a row applied twice"
        );
        slot_within_record(&pair, &format!("iteration {i}"));
    }
    let mut sync = pair.sync(&[]);
    pair.blue.psql("app", &workload(5)).expect("last writes");
    pair.converge(&["seqd", "keyless"], Duration::from_secs(120));
    // Equal fingerprints above: the same rows, none missing, none twice. And every number is
    // there once on both sides.
    let written = pair
        .blue
        .psql("app", "SELECT count(*) FROM seqd")
        .expect("count");
    for table in ["seqd", "keyless"] {
        assert_eq!(
            pair.green
                .psql(
                    "app",
                    &format!("SELECT count(DISTINCT n) || '/' || count(*) FROM {table}")
                )
                .expect("count"),
            format!("{written}/{written}"),
            "table {table}: every number once"
        );
    }
    slot_within_record(&pair, "at the end");
    assert!(sync.terminate());
}

#[test]
fn killed_between_statements_of_a_group() {
    // The statements of a (group) transaction: before the first, or after some were sent.
    crash_loop("stmt", "between-statements", false, |i| 1 + (i * 7) % 12);
}

#[test]
fn killed_after_green_commit_before_the_bookkeeping() {
    crash_loop("commit", "after-green-commit", false, |i| 1 + i % 2);
}

#[test]
fn killed_once_durable_before_the_record() {
    crash_loop("durable", "after-durable", false, |_| 1);
}

#[test]
fn killed_while_writing_the_slot_guard_record() {
    // From scratch: the first crash is in the record of the slot just created (the backfill
    // creates it), the second in the adoption of that unrecorded slot, the third just after
    // it; the rest while recording acknowledged positions.
    crash_loop("guard", "slot-guard-write", true, |i| {
        if i == 2 {
            2
        } else {
            1
        }
    });
}

#[test]
fn killed_after_the_record_before_the_status_update() {
    crash_loop("recorded", "after-slot-guard-record", false, |_| 1);
}

#[test]
fn killed_after_the_status_update() {
    crash_loop("status", "after-status-update", false, |_| 1);
}

#[test]
fn killed_with_a_commit_in_flight() {
    // A transaction (or group) whose turn had come: its COMMIT went down the pipeline behind
    // its changes, and blueshift died before reading any answer. Green may or may not have
    // committed it; the origin's progress says which, and nothing is lost or doubled.
    crash_loop("inflight", "commit-in-flight", false, |i| 1 + i % 3);
}
