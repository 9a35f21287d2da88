//! Streamed apply (`engine::sync::streamed`): a transaction blue streams while it is in progress
//! (`logical_decoding_work_mem = 64kB`) is applied on green as it arrives, on a connection of
//! its own, and committed at its turn — invisible on green until blue commits, equal after;
//! subtransaction aborts and a top-level abort; kill -9 in the middle of it and with its
//! COMMIT in flight; a small transaction touching its rows, in both orders; and the deadlock
//! rule (an earlier transaction that needs a row the streamed one locked on green).

#[path = "support/sync.rs"]
mod support;

use std::time::{Duration, Instant};

use blueshift_tests::{eventually, PgBinaries};
use support::{Pair, Sync};

const SCHEMA: &str = "
    CREATE TABLE big (id int PRIMARY KEY, v text);
    CREATE TABLE small (id int PRIMARY KEY, v int);
    CREATE TABLE nokey (a int, b text);
";

/// The streamed appliers' `application_name` on green (see `sync::attempt`).
const STREAMED_APP: &str = "blueshift streamed apply bs";

fn pair(name: &str) -> Pair {
    let pair = Pair::with(
        name,
        PgBinaries::from_env().unwrap(),
        PgBinaries::from_env().unwrap(),
        &[("logical_decoding_work_mem", "64kB")],
    );
    pair.schema(SCHEMA);
    pair.blue
        .psql(
            "app",
            "INSERT INTO small SELECT g, 0 FROM generate_series(1, 10) g;
             CREATE PUBLICATION pub FOR ALL TABLES",
        )
        .unwrap();
    pair
}

/// `blueshift sync --stream-apply on` with two pool appliers (so the first streamed origin is `blueshift_bs_2`),
/// a 4 MiB budget (streamed transactions spill as they arrive too) and `extra`.
fn start(pair: &Pair, spill: &tempfile::TempDir, extra: &[&str]) -> Sync {
    let mut args = vec![
        "--stream-apply",
        "on",
        "--workers",
        "2",
        "--max-txn-memory",
        "4MiB",
        "--spill-dir",
        spill.path().to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let sync = pair.sync(&args);
    // A first small transaction: its commit moves past the backfill's fences, after which
    // streamed transactions are applied as they arrive.
    pair.blue
        .psql("app", "UPDATE small SET v = v + 1 WHERE id = 10")
        .unwrap();
    pair.converge(&["small"], Duration::from_secs(60));
    sync
}

/// A session on blue that keeps its transaction open across statements.
struct Session {
    client: tokio_postgres::Client,
}

impl Session {
    async fn open(pair: &Pair) -> Session {
        let client = pair.blue.connect("app").await.unwrap();
        client.batch_execute("BEGIN").await.unwrap();
        Session { client }
    }

    async fn run(&self, sql: &str) {
        self.client.batch_execute(sql).await.unwrap();
    }
}

/// Waits until green's streamed applier has an open transaction that wrote, and is idle (it
/// applied what blue sent so far).
fn wait_streamed_open(pair: &Pair) {
    eventually(Duration::from_secs(120), || {
        let n = pair.green.psql(
            "app",
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{STREAMED_APP}' \
                 AND backend_xid IS NOT NULL AND state = 'idle in transaction'"
            ),
        )?;
        anyhow::ensure!(n == "1", "no streamed transaction open on green yet");
        Ok(())
    })
    .unwrap();
}

/// The durable progress of origin `name` on green (empty when it committed nothing).
fn origin_progress(pair: &Pair, name: &str) -> String {
    pair.green
        .psql(
            "app",
            &format!(
                "SELECT coalesce(pg_replication_origin_progress('{name}', true)::text, '') \
                 FROM pg_replication_origin WHERE roname = '{name}'"
            ),
        )
        .unwrap()
}

fn count(pair: &Pair, sql: &str) -> (String, String) {
    (
        pair.blue.psql("app", sql).unwrap(),
        pair.green.psql("app", sql).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_transaction_is_applied_while_blue_sends_it_and_shows_only_after_its_commit() {
    let pair = pair("streamed-big");
    let spill = tempfile::tempdir().unwrap();
    let mut sync = start(&pair, &spill, &[]);
    assert_eq!(origin_progress(&pair, "blueshift_bs_2"), "");

    let blue = Session::open(&pair).await;
    blue.run(
        "INSERT INTO big SELECT g, repeat('x', 40) || g FROM generate_series(1, 200000) g;
         UPDATE small SET v = v + 100 WHERE id = 1",
    )
    .await;
    // Blue's walsender decoded and sent everything written so far, and green's streamed
    // applier applied it: what is left for the commit is the commit.
    let written = pair.blue_lsn();
    eventually(Duration::from_secs(300), || {
        let sent = pair.blue.psql(
            "app",
            &format!("SELECT bool_and(sent_lsn >= '{written}') FROM pg_stat_replication"),
        )?;
        anyhow::ensure!(sent == "t", "blue has not sent up to {written} yet");
        Ok(())
    })
    .unwrap();
    wait_streamed_open(&pair);
    // Applied on green, not committed: nothing of it is visible.
    assert_eq!(
        pair.green.psql("app", "SELECT count(*) FROM big").unwrap(),
        "0"
    );
    assert_eq!(
        pair.green
            .psql("app", "SELECT v FROM small WHERE id = 1")
            .unwrap(),
        "0"
    );
    let committed = Instant::now();
    blue.run("COMMIT").await;
    eventually(Duration::from_secs(120), || {
        let n = pair.green.psql("app", "SELECT count(*) FROM big")?;
        anyhow::ensure!(n == "200000", "green has {n} rows");
        Ok(())
    })
    .unwrap();
    let lag = committed.elapsed();
    pair.converge(&["big", "small"], Duration::from_secs(60));
    // Committed by the streamed applier under its own origin, at the transaction's commit.
    let progress = origin_progress(&pair, "blueshift_bs_2");
    assert!(!progress.is_empty(), "the streamed origin did not move");
    let log = sync.log_text();
    assert!(
        log.contains("committing a streamed transaction at its turn"),
        "{log}"
    );
    assert!(!log.contains("applied from its spill instead"), "{log}");
    eprintln!("200000-row streamed transaction: green caught up {lag:?} after blue's commit");
    assert!(
        lag < Duration::from_secs(15),
        "green caught up only {lag:?} after the commit"
    );
    assert!(sync.terminate());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subtransaction_aborts_roll_back_to_their_savepoints_and_a_top_level_abort_leaves_nothing()
{
    let pair = pair("streamed-sub");
    let spill = tempfile::tempdir().unwrap();
    let mut sync = start(&pair, &spill, &[]);

    // A top-level abort, streamed: nothing of it on green.
    let aborted = Session::open(&pair).await;
    aborted
        .run("INSERT INTO nokey SELECT g, 'gone' FROM generate_series(1, 100000) g")
        .await;
    wait_streamed_open(&pair);
    aborted.run("ROLLBACK").await;

    let blue = Session::open(&pair).await;
    blue.run(
        "INSERT INTO big SELECT g, 'top' FROM generate_series(1, 40000) g;
         SAVEPOINT a;
         INSERT INTO big SELECT g, 'a' FROM generate_series(40001, 80000) g;
         ROLLBACK TO SAVEPOINT a;
         SAVEPOINT b;
         INSERT INTO big SELECT g, 'b' FROM generate_series(80001, 120000) g;
         RELEASE SAVEPOINT b;
         SAVEPOINT c;
         UPDATE big SET v = 'c' WHERE id <= 30000;
         ROLLBACK TO SAVEPOINT c;
         SAVEPOINT d;
         INSERT INTO big SELECT g, 'd' FROM generate_series(120001, 160000) g;
         SAVEPOINT e;
         INSERT INTO big SELECT g, 'e' FROM generate_series(160001, 200000) g;
         RELEASE SAVEPOINT e;
         ROLLBACK TO SAVEPOINT d;
         UPDATE big SET v = 'after' WHERE id <= 10;
         SAVEPOINT f;
         DELETE FROM big WHERE id > 100000;
         RELEASE SAVEPOINT f;",
    )
    .await;
    wait_streamed_open(&pair);
    assert_eq!(
        pair.green.psql("app", "SELECT count(*) FROM big").unwrap(),
        "0"
    );
    blue.run("COMMIT").await;
    pair.converge(&["big", "nokey", "small"], Duration::from_secs(120));
    let (b, g) = count(
        &pair,
        "SELECT count(*) || '/' || count(*) FILTER (WHERE v = 'top') || '/' || \
         count(*) FILTER (WHERE v = 'after') FROM big",
    );
    assert_eq!(b, "60000/39990/10");
    assert_eq!(g, b);
    assert_eq!(
        pair.green
            .psql("app", "SELECT count(*) FROM nokey")
            .unwrap(),
        "0"
    );
    let log = sync.log_text();
    assert!(
        log.contains("committing a streamed transaction at its turn"),
        "{log}"
    );
    assert!(!log.contains("applied from its spill instead"), "{log}");
    assert!(sync.terminate());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_of_a_streamed_apply_and_with_its_commit_in_flight_applies_it_once() {
    let pair = pair("streamed-kill");
    let spill = tempfile::tempdir().unwrap();
    let mut first = start(&pair, &spill, &[]);

    // Keyless: a transaction applied twice would show as duplicate rows.
    let blue = Session::open(&pair).await;
    blue.run("INSERT INTO nokey SELECT g, 'once' FROM generate_series(1, 200000) g")
        .await;
    wait_streamed_open(&pair);
    first.kill9();
    // Green rolls the open transaction back with the connection.
    eventually(Duration::from_secs(60), || {
        let n = pair.green.psql(
            "app",
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{STREAMED_APP}'"
            ),
        )?;
        anyhow::ensure!(
            n == "0",
            "the killed streamed applier's session is still there"
        );
        Ok(())
    })
    .unwrap();
    assert_eq!(
        pair.green
            .psql("app", "SELECT count(*) FROM nokey")
            .unwrap(),
        "0"
    );

    // Blue sends the open transaction again from its start; this time blueshift dies with the
    // streamed transaction's COMMIT on its way (the only commit this run makes).
    let args = [
        "--stream-apply",
        "on",
        "--workers",
        "2",
        "--max-txn-memory",
        "4MiB",
        "--spill-dir",
        spill.path().to_str().unwrap(),
    ];
    let mut second = pair.spawn_env(
        "sync",
        &args,
        &[("BLUESHIFT_FAILPOINTS", "commit-in-flight=kill@1")],
    );
    wait_streamed_open(&pair);
    blue.run("INSERT INTO nokey SELECT g, 'once' FROM generate_series(200001, 250000) g; COMMIT")
        .await;
    let log = second.killed_at("commit-in-flight=kill@1", Duration::from_secs(120));
    assert!(
        log.contains("committing a streamed transaction at its turn"),
        "{log}"
    );

    let mut third = pair.sync(&args);
    pair.blue
        .psql("app", "INSERT INTO nokey VALUES (0, 'after')")
        .unwrap();
    pair.converge(&["nokey", "small"], Duration::from_secs(120));
    let (b, g) = count(
        &pair,
        "SELECT count(*) || '/' || count(DISTINCT a) FROM nokey",
    );
    assert_eq!(b, "250001/250001");
    assert_eq!(g, b, "exactly once on green");
    assert!(third.terminate());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_transactions_touching_the_streamed_ones_rows_in_either_order_do_not_hang() {
    let pair = pair("streamed-order");
    let spill = tempfile::tempdir().unwrap();
    let mut sync = start(&pair, &spill, &[]);

    // The small one first: it commits on blue before the streamed one updates its row.
    let big = Session::open(&pair).await;
    big.run("INSERT INTO big SELECT g, 'x' FROM generate_series(1, 100000) g")
        .await;
    wait_streamed_open(&pair);
    pair.blue
        .psql("app", "UPDATE small SET v = v + 1 WHERE id = 1")
        .unwrap();
    big.run(
        "UPDATE small SET v = v * 10 WHERE id = 1;
         INSERT INTO big SELECT g, 'y' FROM generate_series(100001, 150000) g",
    )
    .await;
    big.run("COMMIT").await;
    pair.converge(&["big", "small"], Duration::from_secs(120));

    // The streamed one first: it locks row 2 on blue; the small one waits there for its
    // commit, and commits after it.
    let big = Session::open(&pair).await;
    big.run(
        "UPDATE small SET v = 500 WHERE id = 2;
         INSERT INTO big SELECT g, 'z' FROM generate_series(150001, 250000) g",
    )
    .await;
    wait_streamed_open(&pair);
    let mut waiter = pair.background_on_blue("UPDATE small SET v = v + 7 WHERE id = 2");
    eventually(Duration::from_secs(30), || {
        let n = pair.blue.psql(
            "app",
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
        )?;
        anyhow::ensure!(n == "1", "the small transaction does not wait yet");
        Ok(())
    })
    .unwrap();
    big.run("COMMIT").await;
    assert!(waiter.wait().unwrap().success());
    pair.converge(&["big", "small"], Duration::from_secs(120));
    assert_eq!(
        pair.green
            .psql("app", "SELECT v FROM small WHERE id IN (1, 2) ORDER BY id")
            .unwrap(),
        "10\n507"
    );
    let log = sync.log_text();
    assert!(
        log.contains("committing a streamed transaction at its turn"),
        "{log}"
    );
    assert!(sync.terminate());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_earlier_transaction_waiting_for_a_row_the_streamed_one_locked_makes_it_give_up() {
    let pair = pair("streamed-deadlock");
    let spill = tempfile::tempdir().unwrap();
    let mut sync = start(&pair, &spill, &[]);

    // Green: a session of the test holds row 9, so the pool applier of the next transaction
    // stops there, before it reaches row 3.
    let holder = pair.green.connect("app").await.unwrap();
    holder
        .batch_execute("BEGIN; SELECT * FROM small WHERE id = 9 FOR UPDATE")
        .await
        .unwrap();
    pair.blue
        .psql(
            "app",
            "BEGIN; UPDATE small SET v = v + 1 WHERE id = 9; UPDATE small SET v = v + 1 WHERE id = 3; COMMIT",
        )
        .unwrap();
    eventually(Duration::from_secs(30), || {
        let n = pair.green.psql(
            "app",
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
        )?;
        anyhow::ensure!(n == "1", "the pool applier does not wait for row 9 yet");
        Ok(())
    })
    .unwrap();
    // The streamed transaction, later on blue, updates row 3 first on green (and holds it).
    let big = Session::open(&pair).await;
    big.run(
        "UPDATE small SET v = v + 100 WHERE id = 3;
         INSERT INTO big SELECT g, 'x' FROM generate_series(1, 100000) g",
    )
    .await;
    wait_streamed_open(&pair);
    big.run("COMMIT").await;
    // Row 9 free: the earlier transaction now waits for row 3, which the streamed one holds
    // while it waits for the earlier one's commit — until the deadlock rule lets go.
    holder.batch_execute("ROLLBACK").await.unwrap();
    pair.converge(&["big", "small"], Duration::from_secs(120));
    assert_eq!(
        pair.green
            .psql("app", "SELECT v FROM small WHERE id IN (3, 9) ORDER BY id")
            .unwrap(),
        "101\n1"
    );
    let log = sync.log_text();
    assert!(log.contains("applied from its spill instead"), "{log}");
    assert!(sync.terminate());
}
