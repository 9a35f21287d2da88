//! Adaptive batching, the real binary between two real clusters: a caught-up sync applies each
//! source transaction as its own green transaction (the lowest latency), and a burst that piles
//! up behind a transaction still in flight is taken as one group as soon as that transaction
//! commits — not one at a time by appliers that each took a single job and wait for the one
//! before it (`blueshift_applied_groups_total` against `blueshift_applied_transactions_total`).
//! Caught up, one applier of four does all the work (one green session, whose origin alone
//! moves); the others join once a burst queues up.

#[path = "support/sync.rs"]
mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use blueshift_tests::eventually;
use support::{http_get, Pair};

/// The value of the unlabelled (or exactly labelled) series `name` on the metrics page.
fn metric(addr: &str, name: &str) -> f64 {
    let page = http_get(addr, "/metrics");
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no series {name} in:\n{page}"))
        .trim()
        .parse()
        .unwrap()
}

/// (source transactions applied, green transactions they went in).
fn applied(addr: &str) -> (f64, f64) {
    (
        metric(addr, "blueshift_applied_transactions_total"),
        metric(addr, "blueshift_applied_groups_total"),
    )
}

#[test]
fn one_at_a_time_when_caught_up_one_group_for_a_burst_behind_a_stalled_commit() {
    let pair = Pair::new("adaptive");
    pair.schema("CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL)");
    pair.blue
        .psql("app", "CREATE PUBLICATION pub FOR ALL TABLES")
        .expect("publication");
    let port = blueshift_tests::free_port().expect("a free port");
    let addr = format!("127.0.0.1:{port}");
    let mut sync = pair.sync(&["--workers", "4", "--metrics-addr", &addr]);
    pair.blue
        .psql("app", "INSERT INTO t VALUES (0, 0)")
        .expect("row");
    pair.converge(&["t"], Duration::from_secs(60));

    // Caught up: each transaction waits for the one before it to be on green, so the queue is
    // empty whenever one arrives, and each is a green transaction of its own.
    let before = applied(&addr);
    for i in 1..=10 {
        pair.blue
            .psql("app", &format!("UPDATE t SET v = {i} WHERE id = 0"))
            .unwrap();
        eventually(Duration::from_secs(30), || {
            let v = pair.green.psql("app", "SELECT v FROM t WHERE id = 0")?;
            anyhow::ensure!(v == i.to_string(), "green has v = {v}, not yet {i}");
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    }
    // The metrics are recorded just after the commit green shows.
    eventually(Duration::from_secs(10), || {
        let after = applied(&addr);
        anyhow::ensure!(after.0 - before.0 >= 10.0, "not all counted yet: {after:?}");
        Ok(())
    })
    .unwrap();
    let after = applied(&addr);
    assert_eq!(
        after.1 - before.1,
        after.0 - before.0,
        "a caught-up sync applies each transaction alone ({before:?} → {after:?})"
    );
    // ... and all of them on one applier: the others stay parked while the queue is shallow.
    assert_eq!(
        appliers_used(&pair),
        ["blueshift_bs_0"],
        "a caught-up sync keeps to its first applier"
    );

    // A burst behind a stalled commit: green's row is locked, so the first transaction of the
    // burst cannot commit; the ones after it depend on it (same row) and arrive one by one.
    let mut holder = Command::new(pair.green.binaries().bin("psql"))
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", &pair.green.uri("app")])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("psql holding green's row");
    let mut stdin = holder.stdin.take().unwrap();
    writeln!(stdin, "BEGIN; SELECT 1 FROM t WHERE id = 0 FOR UPDATE;").unwrap();
    stdin.flush().unwrap();
    eventually(Duration::from_secs(30), || {
        let n = pair.green.psql(
            "app",
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'psql' \
             AND state = 'idle in transaction'",
        )?;
        anyhow::ensure!(n == "1", "the row lock is not held yet");
        Ok(())
    })
    .unwrap();
    let before = applied(&addr);
    const BURST: usize = 40;
    for i in 0..BURST {
        pair.blue
            .psql("app", &format!("UPDATE t SET v = {} WHERE id = 0", 100 + i))
            .unwrap();
    }
    // Every transaction of the burst but the stalled one and those the helper that joined took
    // (the first four queued behind it) is queued: the helper holds the queue while it waits,
    // instead of the other appliers taking one each.
    let left = BURST - 1 - HELPERS_JOIN_AT;
    eventually(Duration::from_secs(60), || {
        let queued = metric(&addr, "blueshift_queue_depth_transactions{queue=\"apply\"}");
        anyhow::ensure!(
            queued >= left as f64,
            "{queued} transactions queued, not yet {left}"
        );
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", sync.log_text()));
    writeln!(stdin, "COMMIT;").unwrap();
    drop(stdin);
    assert!(holder.wait().unwrap().success(), "the lock holder commits");
    pair.converge(&["t"], Duration::from_secs(60));
    assert_eq!(
        pair.green
            .psql("app", "SELECT v FROM t WHERE id = 0")
            .unwrap(),
        (100 + BURST - 1).to_string(),
        "green holds the burst's last value"
    );
    eventually(Duration::from_secs(10), || {
        let after = applied(&addr);
        anyhow::ensure!(
            after.0 - before.0 >= BURST as f64,
            "not all counted yet: {after:?}"
        );
        Ok(())
    })
    .unwrap();
    let after = applied(&addr);
    assert!(
        after.1 - before.1 <= 2.0,
        "the burst went in at most two green transactions (the stalled one, then everything \
         queued behind it): {before:?} → {after:?}"
    );
    // A helper took the burst behind the stalled transaction, on its own green session.
    assert_eq!(appliers_used(&pair).len(), 2, "a helper joined the burst");
    assert!(sync.running());
    assert!(sync.terminate(), "SIGTERM exits 0");
}

/// How deep the queue gets before appliers beyond the first take from it (the engine's
/// `HELPERS_JOIN_AT`).
const HELPERS_JOIN_AT: usize = 4;

/// The appliers whose origin on green has recorded a commit, by name.
fn appliers_used(pair: &Pair) -> Vec<String> {
    pair.green
        .psql(
            "app",
            "SELECT external_id FROM pg_catalog.pg_replication_origin_status \
             WHERE external_id LIKE 'blueshift\\_bs\\_%' AND remote_lsn <> '0/0' ORDER BY 1",
        )
        .expect("origins")
        .lines()
        .map(str::to_owned)
        .collect()
}
