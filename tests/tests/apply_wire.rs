//! The applier's pipelined session (blueshift_applier's `wire` module: our own protocol
//! client, one `Sync` per window), the real binary between real clusters:
//!
//! - killed (`SIGKILL`, the `mid-window` failpoint) with a window sent and its answers unread,
//!   again and again, with catch-up groups and live transactions; then green equals blue row
//!   for row: nothing lost, nothing applied twice;
//! - a transaction green refuses in the middle of the stream: the transactions before it are
//!   on green and the origin's progress says exactly that, nothing of it or after it is; the
//!   error names the table and the column; once green is fixed, sync carries on exactly once;
//! - the path without it (`--pipelined-apply off`, no longer the default), killed after green
//!   commits, again and again: green equals blue, every row once.

#[path = "support/sync.rs"]
mod support;

use std::time::Duration;

use blueshift_decoder::Lsn;
use blueshift_tests::eventually;
use support::Pair;

const ITERATIONS: u32 = 6;

const WITHIN: Duration = Duration::from_secs(120);

const SCHEMA: &str = "CREATE TABLE seqd (n bigint PRIMARY KEY, v text NOT NULL, at pg_lsn);
                      CREATE TABLE keyless (n bigint NOT NULL, v text NOT NULL);
                      CREATE SEQUENCE gen;";

/// `count` transactions on blue, each inserting the next number into both tables and updating
/// the row five numbers back.
fn workload(count: u32) -> String {
    format!(
        "DO $$ DECLARE x bigint; BEGIN FOR i IN 1..{count} LOOP
           x := nextval('gen');
           INSERT INTO seqd VALUES (x, 'v' || x, pg_current_wal_insert_lsn());
           INSERT INTO keyless VALUES (x, 'v' || x);
           UPDATE seqd SET v = v || '+' WHERE n = x - 5;
           COMMIT;
         END LOOP; END $$"
    )
}

/// One transaction of 3000 rows: a window larger than one write chunk.
const BIG: &str = "INSERT INTO keyless SELECT -g, repeat('x', 200) FROM generate_series(1, 3000) g";

#[test]
fn killed_with_a_window_sent_and_unanswered() {
    let pair = Pair::new("wire-kill");
    pair.schema(SCHEMA);
    pair.blue
        .psql("app", "CREATE PUBLICATION pub FOR TABLE seqd, keyless")
        .expect("publication");
    let mut sync = pair.sync(&["--pipelined-apply", "on"]);
    assert!(sync.terminate());
    for i in 0..ITERATIONS {
        // A backlog (catch-up groups), sometimes a big transaction in it.
        pair.blue
            .psql("app", &workload(5 + (i % 3) * 11))
            .expect("backlog");
        if i % 2 == 1 {
            pair.blue.psql("app", BIG).expect("big transaction");
        }
        let spec = format!("mid-window=kill@{}", 1 + i % 3);
        let mut sync = pair.spawn_env(
            "sync",
            &["--pipelined-apply", "on", "--workers", "2"],
            &[("BLUESHIFT_FAILPOINTS", spec.as_str())],
        );
        // Live transactions while it runs, so the N-th window always comes.
        let mut writer = pair.background_on_blue(
            &workload(400).replace("COMMIT;", "COMMIT; PERFORM pg_sleep(0.01);"),
        );
        sync.killed_at(&spec, Duration::from_secs(60));
        let _ = writer.kill();
        let _ = writer.wait();
        assert_eq!(
            pair.green
                .psql("app", "SELECT count(*) - count(DISTINCT n) FROM keyless")
                .expect("duplicates"),
            "0",
            "iteration {i}: a row applied twice"
        );
    }
    let mut sync = pair.sync(&["--pipelined-apply", "on"]);
    pair.blue.psql("app", &workload(5)).expect("last writes");
    pair.converge(&["seqd", "keyless"], WITHIN);
    // Equal fingerprints above: the same rows, none missing, none twice (blue's big
    // transactions repeat their numbers, so count them as blue does).
    let counts = "SELECT count(DISTINCT n) || '/' || count(*) FROM keyless";
    assert_eq!(
        pair.green.psql("app", counts).expect("count"),
        pair.blue.psql("app", counts).expect("count"),
        "every row once"
    );
    assert!(sync.terminate(), "{}", sync.log_text());
}

/// `--pipelined-apply off` (every statement its own `Sync`, over tokio-postgres) is no longer the
/// default but stays an option: killed right after a green commit, while blue keeps writing,
/// again and again, it still leaves green equal to blue, every row once.
#[test]
fn the_path_without_the_wire_session_is_killed_after_a_commit_and_loses_nothing() {
    let pair = Pair::new("wire-off");
    pair.schema(SCHEMA);
    pair.blue
        .psql("app", "CREATE PUBLICATION pub FOR TABLE seqd, keyless")
        .expect("publication");
    let mut sync = pair.sync(&["--pipelined-apply", "off"]);
    assert!(sync.terminate());
    for i in 0..3u32 {
        pair.blue.psql("app", &workload(20)).expect("backlog");
        let spec = format!("after-green-commit=kill@{}", 2 + i);
        let mut sync = pair.spawn_env(
            "sync",
            &["--pipelined-apply", "off", "--workers", "2"],
            &[("BLUESHIFT_FAILPOINTS", spec.as_str())],
        );
        let mut writer = pair.background_on_blue(
            &workload(200).replace("COMMIT;", "COMMIT; PERFORM pg_sleep(0.01);"),
        );
        let log = sync.killed_at(&spec, Duration::from_secs(60));
        let _ = writer.kill();
        let _ = writer.wait();
        assert!(
            log.contains("pipelined=false"),
            "iteration {i}: the appliers ran without the wire session:\n{log}"
        );
    }
    let mut sync = pair.sync(&["--pipelined-apply", "off"]);
    pair.blue.psql("app", &workload(5)).expect("last writes");
    pair.converge(&["seqd", "keyless"], WITHIN);
    let counts = "SELECT count(DISTINCT n) || '/' || count(*) FROM keyless";
    assert_eq!(
        pair.green.psql("app", counts).expect("count"),
        pair.blue.psql("app", counts).expect("count"),
        "every row once"
    );
    assert!(sync.terminate(), "{}", sync.log_text());
}

/// The furthest origin progress of the sync's appliers on green.
fn origin_progress(pair: &Pair) -> Lsn {
    pair.green
        .psql(
            "app",
            "SELECT coalesce(max(remote_lsn), '0/0') FROM pg_replication_origin_status \
             WHERE external_id LIKE 'blueshift%'",
        )
        .expect("origin status")
        .parse()
        .expect("an lsn")
}

#[test]
fn a_refused_transaction_leaves_exactly_the_ones_before_it() {
    const REFUSED: u32 = 40;
    let pair = Pair::new("wire-refuse");
    pair.schema(SCHEMA);
    pair.blue
        .psql("app", "CREATE PUBLICATION pub FOR TABLE seqd, keyless")
        .expect("publication");
    // Green refuses the row of one transaction, in the middle of a backlog.
    pair.green
        .psql(
            "app",
            &format!("ALTER TABLE seqd ADD CONSTRAINT not_forty CHECK (n <> {REFUSED})"),
        )
        .expect("constraint");
    let mut sync = pair.sync(&["--pipelined-apply", "on", "--workers", "2"]);
    assert!(sync.terminate());
    pair.blue.psql("app", &workload(100)).expect("backlog");
    let mut sync = pair.sync(&["--pipelined-apply", "on", "--workers", "2"]);
    // Blocked on the refused row: the error names the table and the constraint's column.
    let mut line = String::new();
    eventually(WITHIN, || {
        anyhow::ensure!(sync.running(), "sync exited:\n{}", sync.log_text());
        let log = sync.log_text();
        match log
            .lines()
            .find(|l| l.contains("sync is blocked") && l.contains("not_forty"))
        {
            Some(l) => {
                line = l.to_owned();
                Ok(())
            }
            None => anyhow::bail!("not blocked yet"),
        }
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(line.contains("seqd"), "the table is named: {line}");

    // Green holds a prefix of blue's transactions, every one before the refused one's group,
    // none from it on; the origin's progress is the last of that prefix.
    let held: u32 = pair
        .green
        .psql("app", "SELECT count(*) FROM seqd")
        .expect("count")
        .parse()
        .expect("a number");
    assert!(
        held < REFUSED,
        "{held} rows: nothing from the refused one on"
    );
    assert_eq!(
        pair.green
            .psql("app", "SELECT coalesce(max(n), 0) FROM seqd")
            .expect("max"),
        held.to_string(),
        "a prefix, no gap"
    );
    let progress = origin_progress(&pair);
    // Transaction n wrote `at` (its WAL position) before its commit: its commit LSN is past
    // its own `at` and before the next one's.
    let at = |n: u32| -> Lsn {
        pair.blue
            .psql("app", &format!("SELECT at FROM seqd WHERE n = {n}"))
            .expect("at")
            .parse()
            .expect("an lsn")
    };
    if held > 0 {
        assert!(
            progress > at(held),
            "the origin covers transaction {held}: {progress}"
        );
    }
    assert!(
        progress < at(held + 1),
        "the origin stops before transaction {}: {progress}",
        held + 1
    );

    // Fixed: sync carries on by itself, exactly once.
    pair.green
        .psql("app", "ALTER TABLE seqd DROP CONSTRAINT not_forty")
        .expect("fix");
    pair.converge(&["seqd", "keyless"], WITHIN);
    assert_eq!(
        pair.green
            .psql(
                "app",
                "SELECT count(DISTINCT n) || '/' || count(*) FROM keyless"
            )
            .expect("count"),
        "100/100"
    );
    assert!(sync.terminate(), "{}", sync.log_text());
}
