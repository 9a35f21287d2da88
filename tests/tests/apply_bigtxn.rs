//! Set-based apply of ONE large source transaction (`blueshift sync`, the real binary between
//! real clusters): its changes are folded and applied in chunks inside one green transaction
//! (`blueshift_applier`'s `chunk` module), read back from its spill file or from memory.
//!
//! The same transaction of over 100 000 changes — deletes, updates leaving a TOASTed value
//! unchanged, inserts, keys touched again in later chunks (updated, inserted then deleted,
//! deleted then inserted again), a two-column key, a table with a unique index beyond its key
//! (applied in blue's order) and a keyless one (inserts only: a set INSERT), a TRUNCATE — goes to green spilled and
//! folded, in memory and folded, and spilled with `--fold off` (row by row): green equals blue
//! row for row each time. Then: a row missing on green fails the transaction with nothing of it
//! committed, the row path naming the table; and a sync killed several times with a set
//! statement of the transaction in flight converges exactly once.

#[path = "support/sync.rs"]
mod support;

use std::time::Duration;

use support::Pair;

const SCHEMA: &str = r#"
CREATE TABLE big (id int PRIMARY KEY, n int NOT NULL, v text, t text);
ALTER TABLE big ALTER COLUMN t SET STORAGE EXTERNAL;
CREATE TABLE pair (k1 int, k2 text, v int, PRIMARY KEY (k1, k2));
CREATE TABLE uniq (id int PRIMARY KEY, code int NOT NULL UNIQUE);
CREATE TABLE nokey (a int, b text);
CREATE TABLE small (id int PRIMARY KEY, v text);
"#;

const TABLES: &[&str] = &["big", "pair", "uniq", "nokey", "small"];

/// Rows present before (copied by the backfill); every 100th row of `big` has a TOASTed `t`.
const BEFORE: &str = r#"
INSERT INTO big SELECT g, g, 'v' || g, CASE WHEN g % 100 = 0 THEN repeat(md5(g::text), 100) END
  FROM generate_series(1, 60000) g;
INSERT INTO pair SELECT g % 100, 'k' || (g / 100), g FROM generate_series(1, 3000) g;
INSERT INTO uniq SELECT g, g FROM generate_series(1, 100) g;
INSERT INTO small SELECT g, 's' FROM generate_series(1, 100) g;
"#;

/// The large transaction: some 104 500 changes, 13 chunks of 8192.
const BIG: &str = r#"
BEGIN;
-- keys touched here, again some 80 000 changes later, and at the very end
UPDATE big SET n = n + 1 WHERE id <= 50;
DELETE FROM big WHERE id % 3 = 0;
-- rows whose TOASTed t is not sent (unchanged)
UPDATE big SET n = n * 2 WHERE id % 3 = 1;
INSERT INTO big SELECT g, g, 'new', NULL FROM generate_series(100001, 140000) g;
UPDATE big SET v = 'again' WHERE id <= 50 OR id BETWEEN 100001 AND 100050;
-- inserted in one chunk, deleted in a later one; deleted in one, inserted again later
DELETE FROM big WHERE id BETWEEN 100001 AND 100020;
INSERT INTO big SELECT g, -g, 'reinserted', 'x' FROM generate_series(3, 300, 3) g;
UPDATE big SET t = repeat('z', 5000) WHERE id = 1;
-- a two-column key
UPDATE pair SET v = v + 1;
DELETE FROM pair WHERE k1 = 7;
INSERT INTO pair SELECT g, 'new', g FROM generate_series(1000, 1500) g;
-- a swap through a unique index beyond the key: in blue's order
UPDATE uniq SET code = -code;
UPDATE uniq SET code = 1000 - code;
INSERT INTO nokey SELECT g, 'n' FROM generate_series(1, 500) g;
TRUNCATE small;
INSERT INTO small SELECT g, 'after' FROM generate_series(1, 50) g;
-- the last touch of keys changed in the first chunk (id 1's t: unchanged TOAST again)
UPDATE big SET n = 0 WHERE id BETWEEN 1 AND 10;
COMMIT;
"#;

fn log_env() -> [(&'static str, &'static str); 1] {
    [(
        "RUST_LOG",
        "info,blueshift_engine=debug,blueshift_applier=debug",
    )]
}

/// Starts sync once to create the slot and copy the rows of [`BEFORE`], then stops it.
fn prepared(name: &str) -> Pair {
    let pair = Pair::new(name);
    pair.schema(SCHEMA);
    pair.blue.psql("app", BEFORE).expect("rows before");
    pair.blue
        .psql("app", "CREATE PUBLICATION pub FOR ALL TABLES")
        .expect("publication");
    let mut sync = pair.sync(&[]);
    pair.converge(TABLES, Duration::from_secs(120));
    assert!(sync.terminate());
    pair
}

/// Small transactions around the large one.
fn around(pair: &Pair, tag: &str) {
    pair.blue
        .psql(
            "app",
            &format!(
                "INSERT INTO small VALUES (1000 + (SELECT count(*) FROM small), '{tag}');
                 UPDATE pair SET v = -1 WHERE k1 = 1 AND k2 = 'k1'"
            ),
        )
        .expect("small transaction");
}

/// [`BIG`] applied by a sync with `args`: green equals blue; returns the sync's log.
fn big_converges(name: &str, args: &[&str]) -> String {
    let pair = prepared(name);
    around(&pair, "before");
    pair.blue.psql("app", BIG).expect("the large transaction");
    around(&pair, "after");
    let spill = tempfile::tempdir().expect("spill dir");
    let mut all = vec![
        "--workers",
        "2",
        "--spill-dir",
        spill.path().to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let mut sync = pair.spawn_env("sync", &all, &log_env());
    pair.converge(TABLES, Duration::from_secs(300));
    let log = sync.log_text();
    assert!(sync.terminate(), "sync exits cleanly:\n{log}");
    log
}

/// Lines of `log` saying `table` was folded.
fn folded(log: &str, table: &str) -> usize {
    log.lines()
        .filter(|l| {
            l.contains("changes folded into set statements")
                && l.contains(&format!("table={table} "))
        })
        .count()
}

#[test]
fn a_spilled_large_transaction_folded_matches_blue() {
    let log = big_converges("bigtxn-spilled", &["--max-txn-memory", "4MiB"]);
    assert!(
        log.contains("spilled transaction folded chunk by chunk"),
        "the transaction was spilled:\n{log}"
    );
    // Folded chunk by chunk: `big` in many chunks, `pair` at least once.
    assert!(folded(&log, "public.big") >= 10, "{log}");
    assert!(folded(&log, "public.pair") >= 1, "{log}");
    // The keyless table got only inserts: one set INSERT per chunk, not folded.
    assert!(
        log.lines().any(
            |l| l.contains("not foldable, but only inserts: one set INSERT")
                && l.contains("table=public.nokey ")
        ),
        "{log}"
    );
    let (table, reason) = (
        "public.uniq",
        "a unique index or exclusion constraint beyond the key",
    );
    assert!(
        log.lines()
            .any(|l| l.contains("changes applied in blue's order")
                && l.contains(&format!("table={table} "))
                && l.contains(reason)),
        "{table} was not applied in order ({reason}):\n{log}"
    );
}

#[test]
fn a_large_transaction_in_memory_folded_matches_blue() {
    let log = big_converges("bigtxn-memory", &["--max-txn-memory", "1GiB"]);
    assert!(folded(&log, "public.big") >= 10, "{log}");
    assert!(!log.contains("spilled transaction folded"), "{log}");
}

#[test]
fn the_same_large_transaction_row_by_row() {
    let log = big_converges(
        "bigtxn-rows",
        &["--max-txn-memory", "4MiB", "--fold", "off"],
    );
    assert_eq!(folded(&log, "public.big"), 0, "--fold off folded:\n{log}");
    assert!(!log.contains("spilled transaction folded"), "{log}");
}

#[test]
fn a_row_missing_on_green_fails_the_large_transaction_and_commits_nothing_of_it() {
    let pair = prepared("bigtxn-missing");
    // Green diverges: a row the first statement of the transaction updates is gone.
    pair.green
        .psql("app", "DELETE FROM big WHERE id = 5")
        .expect("diverge");
    pair.blue.psql("app", BIG).expect("the large transaction");
    let spill = tempfile::tempdir().expect("spill dir");
    let mut sync = pair.spawn_env(
        "sync",
        &[
            "--workers",
            "2",
            "--max-txn-memory",
            "4MiB",
            "--spill-dir",
            spill.path().to_str().unwrap(),
        ],
        &log_env(),
    );
    let status = sync.exited(Duration::from_secs(300));
    let log = sync.log_text();
    assert!(!status.success(), "sync stopped:\n{log}");
    assert!(
        log.contains("public.big") && log.contains("found no matching row on green"),
        "the error names the table and the cause:\n{log}"
    );
    assert!(
        log.contains("folded group failed; applying it again in blue's order"),
        "the folded transaction failed first, then the row path (the spill read again):\n{log}"
    );
    assert_eq!(
        pair.green
            .psql(
                "app",
                "SELECT count(*) FILTER (WHERE id > 100000), count(*) FILTER (WHERE n = 0), \
                 count(*) FILTER (WHERE v = 'again') FROM big"
            )
            .expect("rows"),
        "0|0|0",
        "nothing of the transaction committed:\n{log}"
    );
    assert_eq!(
        pair.green
            .psql("app", "SELECT count(*) FROM small WHERE v = 'after'")
            .expect("rows"),
        "0"
    );
}

#[test]
fn killed_with_a_set_statement_of_a_large_transaction_in_flight() {
    let pair = prepared("bigtxn-kill");
    around(&pair, "before");
    pair.blue.psql("app", BIG).expect("the large transaction");
    around(&pair, "after");
    let spill = tempfile::tempdir().expect("spill dir");
    let dir = spill.path().to_str().unwrap();
    let args = [
        "--workers",
        "2",
        "--max-txn-memory",
        "4MiB",
        "--spill-dir",
        dir,
    ];
    // Early, in the middle and late in the transaction's set statements.
    for at in [1, 9, 23] {
        let spec = format!("set-statement=kill@{at}");
        let mut sync = pair.spawn_env(
            "sync",
            &args,
            &[("BLUESHIFT_FAILPOINTS", spec.as_str()), log_env()[0]],
        );
        let log = sync.killed_at(&spec, Duration::from_secs(300));
        // Nothing of the large transaction is on green.
        assert_eq!(
            pair.green
                .psql("app", "SELECT count(*) FROM big WHERE id > 100000")
                .expect("rows"),
            "0",
            "{log}"
        );
    }
    let mut sync = pair.spawn_env("sync", &args, &log_env());
    pair.converge(TABLES, Duration::from_secs(300));
    let log = sync.log_text();
    assert!(sync.terminate(), "{log}");
    assert!(folded(&log, "public.big") >= 10, "{log}");
}
