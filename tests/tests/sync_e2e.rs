//! `blueshift sync` end to end, the real binary between two real clusters: every DML kind,
//! TOAST, replica identities, TRUNCATE, hostile identifiers, a spilled 1 M-row transaction and
//! its aborted twin, `--workers 1` vs `--workers 4`, kill -9 under concurrent writes, green and
//! blue restarts, an idle slot moving forward, and blue 15 → green 18.

#[path = "support/sync.rs"]
mod support;

use std::time::Duration;

use blueshift_tests::{eventually, PgBinaries};
use support::{fingerprint, http_get, Pair};

const SCHEMA: &str = r#"
CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance bigint NOT NULL, doc text);
ALTER TABLE accounts ALTER COLUMN doc SET STORAGE EXTERNAL;
CREATE TABLE full_t (a int, b text);
ALTER TABLE full_t REPLICA IDENTITY FULL;
CREATE TABLE idx_t (id int NOT NULL, code text NOT NULL, v text);
CREATE UNIQUE INDEX idx_t_code ON idx_t (code);
ALTER TABLE idx_t REPLICA IDENTITY USING INDEX idx_t_code;
CREATE TABLE nokey (a int, b text);
CREATE TABLE parent (id int PRIMARY KEY);
CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent);
CREATE TABLE seq_t (id serial PRIMARY KEY, v text);
CREATE TABLE "x; DROP TABLE y" ("Weird ""col""" int PRIMARY KEY, "ünï" text);
"#;

const TABLES: &[&str] = &[
    "accounts",
    "full_t",
    "idx_t",
    "nokey",
    "parent",
    "child",
    "seq_t",
    r#""x; DROP TABLE y""#,
];

fn publish(pair: &Pair) {
    pair.blue
        .psql("app", "CREATE PUBLICATION pub FOR ALL TABLES")
        .expect("publication");
}

#[test]
fn every_dml_kind_toast_identities_truncate_and_hostile_names() {
    let pair = Pair::new("dml");
    pair.schema(SCHEMA);
    publish(&pair);
    let port = blueshift_tests::free_port().expect("a free port");
    let metrics_addr = format!("127.0.0.1:{port}");
    let mut sync = pair.sync(&["--workers", "2", "--metrics-addr", &metrics_addr]);
    let big = "0123456789abcdef".repeat(400);
    pair.blue
        .psql(
            "app",
            &format!(
                "INSERT INTO accounts SELECT g, 'o' || g, g * 10, CASE WHEN g = 1 THEN '{big}' END FROM generate_series(1, 500) g;
                 UPDATE accounts SET balance = balance + 1 WHERE id = 1;   -- unchanged TOAST
                 UPDATE accounts SET id = 1000 WHERE id = 2;               -- key change
                 DELETE FROM accounts WHERE id BETWEEN 10 AND 20;
                 INSERT INTO full_t VALUES (1, 'a'), (1, 'a'), (2, NULL);
                 UPDATE full_t SET b = 'z' WHERE b IS NULL;
                 DELETE FROM full_t WHERE ctid = (SELECT ctid FROM full_t WHERE a = 1 LIMIT 1);
                 INSERT INTO idx_t VALUES (1, 'c1', 'x'), (2, 'c2', 'y');
                 UPDATE idx_t SET code = 'c3' WHERE code = 'c1';
                 DELETE FROM idx_t WHERE code = 'c2';
                 INSERT INTO nokey VALUES (1, 'no key'), (1, 'no key');
                 INSERT INTO parent VALUES (1), (2); INSERT INTO child VALUES (1, 1);
                 INSERT INTO seq_t (v) VALUES ('a'), ('b');
                 INSERT INTO \"x; DROP TABLE y\" VALUES (1, 'ü'), (2, 'ß');
                 UPDATE \"x; DROP TABLE y\" SET \"ünï\" = 'é' WHERE \"Weird \"\"col\"\"\" = 1;"
            ),
        )
        .expect("workload");
    pair.converge(TABLES, Duration::from_secs(60));
    // The TOASTed value survived the update that did not send it.
    assert_eq!(
        pair.green
            .psql("app", "SELECT length(doc) FROM accounts WHERE id = 1")
            .unwrap(),
        big.len().to_string()
    );
    pair.blue
        .psql(
            "app",
            "TRUNCATE parent CASCADE; TRUNCATE seq_t RESTART IDENTITY; INSERT INTO seq_t (v) VALUES ('after');",
        )
        .unwrap();
    pair.converge(TABLES, Duration::from_secs(60));
    assert_eq!(
        pair.green.psql("app", "SELECT id FROM seq_t").unwrap(),
        "1",
        "the row inserted after TRUNCATE … RESTART IDENTITY carries blue's restarted id"
    );
    assert!(sync.running());
    // The live metrics count what was applied.
    let page = http_get(&metrics_addr, "/metrics");
    let applied: f64 = page
        .lines()
        .find_map(|l| l.strip_prefix("blueshift_applied_transactions_total "))
        .expect("applied transactions series")
        .trim()
        .parse()
        .unwrap();
    assert!(applied >= 10.0, "{page}");
    assert!(
        page.contains("blueshift_applied_rows_total{op=\"insert\"}"),
        "{page}"
    );
    assert!(
        page.contains("blueshift_apply_latency_seconds_bucket{le=\"+Inf\"}"),
        "{page}"
    );
    // The table without a key was named in a warning before data moved.
    let log = sync.log_text();
    assert!(log.contains("nokey"), "{log}");
    assert!(sync.terminate(), "SIGTERM exits 0");
}

#[test]
fn one_worker_and_four_workers_give_identical_green() {
    let mut prints = Vec::new();
    for workers in ["1", "4"] {
        let pair = Pair::new(&format!("w{workers}"));
        pair.schema(SCHEMA);
        publish(&pair);
        let mut sync = pair.sync(&["--workers", workers]);
        // Many small conflicting and non-conflicting transactions.
        pair.blue
            .psql(
                "app",
                "INSERT INTO accounts SELECT g, 'o', 0 FROM generate_series(1, 100) g;
                 DO $$ BEGIN FOR i IN 1..2000 LOOP
                   UPDATE accounts SET balance = balance + i WHERE id = 1 + (i * 7) % 100;
                   IF i % 10 = 0 THEN DELETE FROM accounts WHERE id = 1 + (i * 7) % 100;
                                      INSERT INTO accounts VALUES (1 + (i * 7) % 100, 'again', i); END IF;
                   COMMIT; END LOOP; END $$;",
            )
            .expect("workload");
        pair.converge(&["accounts"], Duration::from_secs(120));
        prints.push(fingerprint(&pair.green, "accounts").unwrap());
        assert!(sync.terminate());
    }
    assert_eq!(prints[0], prints[1]);
}

#[test]
fn kill_9_five_times_under_concurrent_writes_loses_and_duplicates_nothing() {
    let pair = Pair::new("kill");
    pair.schema(SCHEMA);
    publish(&pair);
    // The slot must exist before the writes start (there is no backfill in this test).
    let mut first = Some(pair.sync(&["--workers", "4"]));
    let mut writer = pair.background_on_blue(
        "DO $$ BEGIN FOR i IN 1..4000 LOOP
               INSERT INTO accounts VALUES (i, 'w', i);
               IF i % 3 = 0 THEN UPDATE accounts SET balance = balance * 2 WHERE id = i - 1; END IF;
               IF i % 5 = 0 THEN DELETE FROM accounts WHERE id = i - 2; END IF;
               INSERT INTO nokey VALUES (i, 'log');
               COMMIT; PERFORM pg_sleep(0.0005); END LOOP; END $$",
    );
    for round in 0..5 {
        let mut sync = first
            .take()
            .unwrap_or_else(|| pair.sync(&["--workers", "4"]));
        // Let it apply something, then kill it without warning.
        let before = fingerprint(&pair.green, "nokey").unwrap();
        eventually(Duration::from_secs(60), || {
            let now = fingerprint(&pair.green, "nokey")?;
            anyhow::ensure!(now != before, "round {round}: nothing applied yet");
            Ok(())
        })
        .unwrap();
        sync.kill9();
    }
    assert!(writer.wait().unwrap().success());
    let mut sync = pair.sync(&["--workers", "4"]);
    pair.converge(&["accounts", "nokey"], Duration::from_secs(120));
    assert!(sync.terminate());
    assert_eq!(
        pair.green
            .psql("app", "SELECT count(*) FROM nokey")
            .unwrap(),
        "4000",
        "every insert exactly once"
    );
}

/// Green crashes (kill -9 of its postmaster) while sync applies under load: commits green had
/// not flushed are lost with it, so the slot must not have been told about them — they are sent
/// again and applied once.
#[test]
fn green_crash_under_load_loses_nothing() {
    let mut pair = Pair::new("greencrash");
    pair.schema(SCHEMA);
    publish(&pair);
    let mut sync = pair.sync(&["--workers", "4"]);
    let mut writer = pair.background_on_blue(
        "DO $$ BEGIN FOR i IN 1..3000 LOOP
               INSERT INTO nokey VALUES (i, 'log'); COMMIT; PERFORM pg_sleep(0.001); END LOOP; END $$",
    );
    for _ in 0..3 {
        // Crash green once sync has applied more (or the writes are over).
        let before = fingerprint(&pair.green, "nokey").unwrap();
        eventually(Duration::from_secs(60), || {
            let done = writer.try_wait()?.is_some();
            anyhow::ensure!(
                done || fingerprint(&pair.green, "nokey")? != before,
                "nothing applied yet"
            );
            Ok(())
        })
        .unwrap();
        pair.green.crash().expect("green crashes");
        pair.green.start_again().expect("green recovers");
    }
    assert!(writer.wait().unwrap().success());
    pair.converge(&["nokey"], Duration::from_secs(120));
    assert_eq!(
        pair.green
            .psql("app", "SELECT count(*), count(DISTINCT a) FROM nokey")
            .unwrap(),
        "3000|3000",
        "every row exactly once"
    );
    assert!(sync.running(), "sync rode out the crashes");
    assert!(sync.terminate());
}

#[test]
fn green_and_blue_restarts_mid_stream_are_survived() {
    let mut pair = Pair::new("restarts");
    pair.schema(SCHEMA);
    publish(&pair);
    let mut sync = pair.sync(&["--workers", "2"]);
    pair.blue
        .psql(
            "app",
            "INSERT INTO accounts SELECT g, 'a', g FROM generate_series(1, 200) g",
        )
        .unwrap();
    pair.converge(&["accounts"], Duration::from_secs(60));
    pair.green.restart().expect("green restarts");
    pair.blue
        .psql("app", "UPDATE accounts SET balance = balance + 1")
        .unwrap();
    pair.converge(&["accounts"], Duration::from_secs(60));
    pair.blue.restart().expect("blue restarts");
    pair.blue
        .psql("app", "DELETE FROM accounts WHERE id % 2 = 0")
        .unwrap();
    pair.converge(&["accounts"], Duration::from_secs(60));
    pair.green.crash().expect("green crashes");
    pair.green.start_again().expect("green recovers");
    pair.blue
        .psql(
            "app",
            "INSERT INTO accounts SELECT g, 'b', g FROM generate_series(1000, 1100) g",
        )
        .unwrap();
    pair.converge(&["accounts"], Duration::from_secs(60));
    assert!(sync.running(), "sync rode out the restarts");
    assert!(sync.terminate());
}

#[test]
fn an_idle_period_moves_the_slot_forward() {
    let pair = Pair::new("idle");
    pair.schema(SCHEMA);
    publish(&pair);
    // Another database's writes produce WAL that carries nothing for our slot.
    pair.blue.create_database("other").unwrap();
    let mut sync = pair.sync(&["--workers", "1"]);
    pair.blue
        .psql("app", "INSERT INTO accounts VALUES (1, 'a', 1)")
        .unwrap();
    pair.converge(&["accounts"], Duration::from_secs(60));
    pair.blue
        .psql(
            "other",
            "CREATE TABLE noise (x int); INSERT INTO noise SELECT generate_series(1, 10000)",
        )
        .unwrap();
    let target = pair.blue_lsn();
    let target: blueshift_decoder::Lsn = target.parse().unwrap();
    eventually(Duration::from_secs(60), || {
        let confirmed: blueshift_decoder::Lsn = pair.confirmed().parse()?;
        anyhow::ensure!(confirmed >= target, "slot at {confirmed}, blue at {target}");
        Ok(())
    })
    .unwrap();
    assert!(sync.terminate());
}

#[test]
fn a_spilled_million_row_transaction_is_applied_and_its_aborted_twin_leaves_nothing() {
    let pair = Pair::with(
        "spill",
        PgBinaries::from_env().unwrap(),
        PgBinaries::from_env().unwrap(),
        &[("logical_decoding_work_mem", "64kB")],
    );
    pair.schema(SCHEMA);
    publish(&pair);
    let spill = tempfile::tempdir().unwrap();
    let mut sync = pair.sync(&[
        "--workers",
        "2",
        "--max-txn-memory",
        "4MiB",
        "--spill-dir",
        spill.path().to_str().unwrap(),
    ]);
    pair.blue
        .psql(
            "app",
            "BEGIN; INSERT INTO nokey SELECT g, 'gone' FROM generate_series(1, 1000000) g; ROLLBACK;
             INSERT INTO nokey SELECT g, 'kept' FROM generate_series(1, 1000000) g;",
        )
        .unwrap();
    pair.converge(&["nokey"], Duration::from_secs(300));
    assert_eq!(
        pair.green
            .psql(
                "app",
                "SELECT count(*), count(*) FILTER (WHERE b = 'gone') FROM nokey"
            )
            .unwrap(),
        "1000000|0"
    );
    // About 40 MB of row values went through a 4 MiB budget: memory stayed bounded.
    let peak = sync.peak_rss_kib();
    assert!(peak < 96 * 1024, "blueshift sync peaked at {peak} KiB");
    eprintln!("blueshift sync peak RSS: {peak} KiB");
    assert!(sync.terminate());
    // The assembler spills into a folder of its own under --spill-dir (beside it, the lock
    // file that keeps a second sync of the same slot name out).
    for dir in std::fs::read_dir(spill.path()).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "spill files left in {}",
            dir.display()
        );
    }
}

#[test]
fn values_survive_blue_output_settings_that_green_would_misread() {
    let pair = Pair::with(
        "styles",
        PgBinaries::from_env().unwrap(),
        PgBinaries::from_env().unwrap(),
        &[
            ("DateStyle", "SQL, DMY"),
            ("IntervalStyle", "sql_standard"),
            ("extra_float_digits", "0"),
        ],
    );
    pair.schema("CREATE TABLE t (id int PRIMARY KEY, d date, ts timestamp, i interval, f float8)");
    pair.blue
        .psql("app", "CREATE PUBLICATION pub FOR ALL TABLES")
        .unwrap();
    let mut sync = pair.sync(&["--workers", "1"]);
    pair.blue
        .psql(
            "app",
            "INSERT INTO t VALUES (1, '2026-01-02', '2026-01-02 03:04:05.678901', '1 year 2 mons 3 days 04:05:06.5', 0.1::float8 + 0.2::float8)",
        )
        .unwrap();
    pair.converge(&["t"], Duration::from_secs(60));
    assert_eq!(
        pair.green
            .psql("app", "SELECT d = date '2026-01-02' AND f = 0.1::float8 + 0.2::float8 AND i = interval '1 year 2 mons 3 days 04:05:06.5' FROM t")
            .unwrap(),
        "t"
    );
    assert!(sync.terminate());
}

#[test]
fn blue_15_to_green_18() {
    let pair = Pair::with(
        "upgrade",
        PgBinaries::major(15).unwrap(),
        PgBinaries::major(18).unwrap(),
        &[],
    );
    pair.schema(SCHEMA);
    publish(&pair);
    let mut sync = pair.sync(&["--workers", "2"]);
    pair.blue
        .psql(
            "app",
            "INSERT INTO accounts SELECT g, 'o' || g, g FROM generate_series(1, 1000) g;
             UPDATE accounts SET balance = -balance WHERE id % 3 = 0;
             DELETE FROM accounts WHERE id % 7 = 0;
             INSERT INTO full_t VALUES (1, NULL), (1, NULL);",
        )
        .unwrap();
    pair.converge(TABLES, Duration::from_secs(60));
    assert!(sync.terminate());
}

/// Writesets see a unique column's old value only when blue sends it (the key, or REPLICA
/// IDENTITY FULL): a transaction that takes a unique value another one just released can reach
/// green before the releasing one has run. It must wait for its turn, not stop sync.
#[test]
fn a_unique_value_passed_between_rows_does_not_stop_sync() {
    let pair = Pair::new("uniqpass");
    pair.schema(
        "CREATE TABLE u (id int PRIMARY KEY, email text NOT NULL UNIQUE);
         CREATE TABLE pad (id int PRIMARY KEY);",
    );
    publish(&pair);
    let mut sync = pair.sync(&["--workers", "4"]);
    pair.blue
        .psql("app", "INSERT INTO u VALUES (1, 'a'), (2, 'b')")
        .unwrap();
    pair.converge(&["u"], Duration::from_secs(30));
    pair.blue
        .psql(
            "app",
            "DO $$ DECLARE v text; BEGIN FOR i IN 1..1500 LOOP
                 SELECT email INTO v FROM u WHERE id = 1;
                 UPDATE u SET email = 'n' || i WHERE id = 1; COMMIT;
                 UPDATE u SET email = v WHERE id = 2; COMMIT;
                 IF i % 50 = 0 THEN PERFORM pg_sleep(0.01); END IF;
             END LOOP; END $$",
        )
        .unwrap();
    pair.converge(&["u"], Duration::from_secs(60));
    assert!(sync.running(), "sync kept running:\n{}", sync.log_text());
    assert!(sync.terminate());
}
