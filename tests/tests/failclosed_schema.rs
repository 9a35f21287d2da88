//! Fail closed on schema: a change green cannot take losslessly stops sync at that change —
//! naming the table, the column, both types and the fix — and the same running `blueshift sync`
//! (same process id) goes on by itself once the operator fixes green, with nothing lost and
//! nothing after the change applied meanwhile. Real binary, two real clusters:
//!
//! - a column added on blue mid-sync: held until green has it (a shutdown meanwhile exits
//!   cleanly; the next run refuses at preflight, and once green is fixed the held change comes
//!   again, whole); with the column declared excluded, carried on without it;
//! - `numeric(12,2)` → `numeric(12,4)` on blue: held (green would round), resumes once green's
//!   column is widened, the value exact;
//! - a blue-only column at preflight: refused with both fixes, started once excluded;
//! - a value green's column cannot hold: the error names the column and the row's key (no other
//!   value of the row), and sync resumes once green's column is widened;
//! - `TRUNCATE parent CASCADE` on blue with a green-only table referencing `parent`: held, the
//!   green-only rows intact, until the operator drops that foreign key; a plain `TRUNCATE` of
//!   two published tables works, `ONLY` each (a green-only inheritance child keeps its rows),
//!   `RESTART IDENTITY` only when blue ran it.
//! - an UPDATE or DELETE of a parent's row on blue: never touches the row of an inheritance
//!   child with the same key on green (`ONLY`).

#[path = "support/sync.rs"]
mod support;

use std::process::Command;
use std::time::Duration;

use blueshift_tests::{blueshift_binary, eventually};
use support::{fingerprint, http_get, Pair, Sync};

const WITHIN: Duration = Duration::from_secs(90);

/// Waits until the sync log has a line containing every one of `needles`; returns that line.
fn log_line(sync: &mut Sync, needles: &[&str]) -> String {
    let mut found = String::new();
    eventually(WITHIN, || {
        anyhow::ensure!(sync.running(), "sync exited:\n{}", sync.log_text());
        let log = sync.log_text();
        match log.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
            Some(line) => {
                found = line.to_owned();
                Ok(())
            }
            None => anyhow::bail!("no log line with {needles:?} yet"),
        }
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    found
}

/// Rows of `sql` on green.
fn green(pair: &Pair, sql: &str) -> String {
    pair.green.psql("app", sql).expect("query on green")
}

/// Waits until `tables` hold the same rows on both sides, and checks sync is the same process.
fn converge_same_process(pair: &Pair, sync: &mut Sync, pid: u32, tables: &[&str]) {
    pair.converge(tables, WITHIN);
    assert!(sync.running(), "{}", sync.log_text());
    assert_eq!(sync.pid(), pid, "the same process carried on: no restart");
}

#[test]
fn a_column_added_on_blue_holds_sync_until_green_has_it() {
    let pair = Pair::new("fc-add");
    pair.schema(
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         CREATE TABLE later (id int PRIMARY KEY);
         CREATE PUBLICATION pub FOR ALL TABLES;",
    );
    let port = blueshift_tests::free_port().expect("a free port");
    let metrics = format!("127.0.0.1:{port}");
    let mut sync = pair.sync(&["--workers", "2", "--metrics-addr", &metrics]);
    let pid = sync.pid();
    pair.blue
        .psql("app", "INSERT INTO t VALUES (1, 'one'), (2, 'two')")
        .unwrap();
    pair.converge(&["t"], WITHIN);

    // Blue gains a column and uses it; a later transaction touches another table.
    pair.blue
        .psql(
            "app",
            "ALTER TABLE t ADD COLUMN extra numeric(8,3);
             INSERT INTO t VALUES (3, 'three', 3.125);
             UPDATE t SET extra = 1.5 WHERE id = 1;",
        )
        .unwrap();
    pair.blue
        .psql("app", "INSERT INTO later VALUES (1)")
        .unwrap();

    let line = log_line(&mut sync, &["sync is blocked", "\"extra\""]);
    for part in [
        "\"public\".\"t\"",
        "numeric(8,3) on blue",
        "ADD COLUMN \"extra\" numeric(8,3)",
        "--exclude 'public.t:extra'",
    ] {
        assert!(line.contains(part), "{part:?} in: {line}");
    }
    assert!(
        http_get(&metrics, "/metrics").contains("\nblueshift_blocked 1"),
        "the gauge says sync waits"
    );
    // Held at that transaction: neither it nor anything after it reached green.
    assert_eq!(green(&pair, "SELECT count(*) FROM t WHERE id = 3"), "0");
    assert_eq!(green(&pair, "SELECT count(*) FROM later"), "0");

    // The operator adds the column on green: the same sync goes on, the new column included.
    pair.green
        .psql("app", "ALTER TABLE t ADD COLUMN extra numeric(8,3)")
        .unwrap();
    converge_same_process(&pair, &mut sync, pid, &["t", "later"]);
    assert_eq!(
        green(&pair, "SELECT id, v, extra FROM t ORDER BY id"),
        "1|one|1.500\n2|two|\n3|three|3.125"
    );
    log_line(&mut sync, &["green takes blue's change to this table now"]);
    assert!(http_get(&metrics, "/metrics").contains("\nblueshift_blocked 0"));

    // Later changes of the column keep flowing.
    pair.blue
        .psql("app", "UPDATE t SET extra = extra * 2 WHERE id = 3")
        .unwrap();
    converge_same_process(&pair, &mut sync, pid, &["t"]);
    assert!(sync.terminate(), "{}", sync.log_text());
}

#[test]
fn a_shutdown_while_blocked_exits_cleanly_and_the_held_change_comes_again() {
    let pair = Pair::new("fc-stop");
    pair.schema(
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         CREATE PUBLICATION pub FOR ALL TABLES;",
    );
    let mut sync = pair.sync(&[]);
    pair.blue
        .psql(
            "app",
            "ALTER TABLE t ADD COLUMN extra int; INSERT INTO t VALUES (1, 'one', 1);",
        )
        .unwrap();
    log_line(&mut sync, &["sync is blocked", "\"extra\""]);
    assert!(
        sync.terminate(),
        "SIGTERM while blocked exits 0:\n{}",
        sync.log_text()
    );
    assert_eq!(green(&pair, "SELECT count(*) FROM t"), "0");

    // A new run sees blue's new column at preflight and refuses before streaming.
    let out = Command::new(blueshift_binary())
        .arg("sync")
        .args(["--source", &pair.blue.uri("app")])
        .args(["--target", &pair.green.uri("app")])
        .args(["--publication", "pub", "--slot", "bs"])
        .output()
        .expect("runs");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("column \"extra\" of table \"public\".\"t\""),
        "{err}"
    );

    // Fixed: the held transaction was never acknowledged, so it comes again, whole.
    pair.green
        .psql("app", "ALTER TABLE t ADD COLUMN extra int")
        .unwrap();
    let mut sync = pair.sync(&[]);
    pair.converge(&["t"], WITHIN);
    assert_eq!(green(&pair, "SELECT id, v, extra FROM t"), "1|one|1");
    assert!(sync.terminate(), "{}", sync.log_text());
}

#[test]
fn an_excluded_column_added_on_blue_is_left_out_and_sync_carries_on() {
    let pair = Pair::new("fc-excl");
    pair.schema(
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         CREATE PUBLICATION pub FOR ALL TABLES;",
    );
    // Declared before blue has the column: a warning at preflight, effective when it comes.
    let mut sync = pair.sync(&["--exclude", "t:secret"]);
    let pid = sync.pid();
    pair.blue
        .psql(
            "app",
            "ALTER TABLE t ADD COLUMN secret text;
             INSERT INTO t VALUES (1, 'one', 'not for green');
             UPDATE t SET secret = 'changed', v = 'uno' WHERE id = 1;
             INSERT INTO t VALUES (2, 'two', NULL);",
        )
        .unwrap();
    eventually(WITHIN, || {
        let rows = green(&pair, "SELECT id, v FROM t ORDER BY id");
        anyhow::ensure!(rows == "1|uno\n2|two", "green has {rows:?}");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", sync.log_text()));
    assert!(
        !sync.log_text().contains("sync is blocked"),
        "{}",
        sync.log_text()
    );
    assert_eq!(sync.pid(), pid);
    assert!(sync.terminate(), "{}", sync.log_text());
}

#[test]
fn a_numeric_scale_widened_on_blue_holds_sync_until_green_is_widened() {
    let pair = Pair::new("fc-scale");
    pair.schema(
        "CREATE TABLE prices (id int PRIMARY KEY, amount numeric(12,2));
         CREATE PUBLICATION pub FOR ALL TABLES;",
    );
    let mut sync = pair.sync(&[]);
    let pid = sync.pid();
    pair.blue
        .psql("app", "INSERT INTO prices VALUES (1, 10.25)")
        .unwrap();
    pair.converge(&["prices"], WITHIN);
    pair.blue
        .psql(
            "app",
            "ALTER TABLE prices ALTER COLUMN amount TYPE numeric(12,4);
             INSERT INTO prices VALUES (2, 1.2345);",
        )
        .unwrap();
    let line = log_line(&mut sync, &["sync is blocked", "\"amount\""]);
    for part in [
        "numeric(12,4) on blue, numeric(12,2) on green",
        "rounded to 2 decimals",
        "ALTER COLUMN \"amount\" TYPE numeric(12,4)",
        "--lossy-cast 'public.prices:amount'",
    ] {
        assert!(line.contains(part), "{part:?} in: {line}");
    }
    // Not rounded onto green: not applied at all.
    assert_eq!(green(&pair, "SELECT count(*) FROM prices"), "1");

    pair.green
        .psql(
            "app",
            "ALTER TABLE prices ALTER COLUMN amount TYPE numeric(12,4)",
        )
        .unwrap();
    converge_same_process(&pair, &mut sync, pid, &["prices"]);
    assert_eq!(
        green(&pair, "SELECT amount FROM prices WHERE id = 2"),
        "1.2345"
    );
    assert!(sync.terminate(), "{}", sync.log_text());
}

#[test]
fn preflight_refuses_an_undeclared_blue_only_column() {
    let pair = Pair::new("fc-pre");
    pair.blue
        .psql(
            "app",
            "CREATE TABLE t (id int PRIMARY KEY, v text, \"Old Col\" varchar(30));
             INSERT INTO t VALUES (1, 'one', 'dropped on green');
             CREATE PUBLICATION pub FOR ALL TABLES;",
        )
        .unwrap();
    pair.green
        .psql("app", "CREATE TABLE t (id int PRIMARY KEY, v text)")
        .unwrap();
    let out = Command::new(blueshift_binary())
        .arg("sync")
        .args(["--source", &pair.blue.uri("app")])
        .args(["--target", &pair.green.uri("app")])
        .args(["--publication", "pub", "--slot", "bs"])
        .output()
        .expect("runs");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success(), "{err}");
    for part in [
        "column \"Old Col\" of table \"public\".\"t\"",
        "values of it would be lost",
        "ADD COLUMN \"Old Col\" character varying(30)",
        "--exclude 'public.t:\"Old Col\"'",
    ] {
        assert!(err.contains(part), "{part:?} in: {err}");
    }
    assert_eq!(
        pair.blue
            .psql("app", "SELECT count(*) FROM pg_replication_slots")
            .unwrap(),
        "0",
        "refused before anything was created"
    );

    // Declared as the error says (the quoted name parses), sync starts and leaves it out.
    let mut sync = pair.sync(&["--exclude", "public.t:\"Old Col\""]);
    pair.blue
        .psql("app", "INSERT INTO t VALUES (2, 'two', 'x')")
        .unwrap();
    eventually(WITHIN, || {
        let rows = green(&pair, "SELECT id, v FROM t ORDER BY id");
        anyhow::ensure!(rows == "1|one\n2|two", "green has {rows:?}");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", sync.log_text()));
    assert!(sync.terminate(), "{}", sync.log_text());
}

#[test]
fn a_value_green_cannot_hold_names_its_column_and_row_and_waits_for_the_fix() {
    let pair = Pair::new("fc-value");
    pair.blue
        .psql(
            "app",
            "CREATE TABLE t (id int PRIMARY KEY, code text, note text);
             CREATE PUBLICATION pub FOR ALL TABLES;",
        )
        .unwrap();
    // text → varchar(10): a value that does not fit fails loudly (a cast, not blocked).
    pair.green
        .psql(
            "app",
            "CREATE TABLE t (id int PRIMARY KEY, code varchar(10), note varchar(10))",
        )
        .unwrap();
    let mut sync = pair.sync(&["--workers", "2"]);
    let pid = sync.pid();
    pair.blue
        .psql(
            "app",
            "INSERT INTO t VALUES (1, 'short', 'n'), (42, 'a secret value too long', 'n'), (3, 'ok', 'n')",
        )
        .unwrap();
    let line = log_line(&mut sync, &["sync is blocked", "failed on green"]);
    for part in [
        "INSERT on table \"public.t\"",
        "column \"code\" (character varying(10) on green)",
        "row with key (id)=(42)",
        "widen it on green",
    ] {
        assert!(line.contains(part), "{part:?} in: {line}");
    }
    let log = sync.log_text();
    assert!(
        !log.contains("secret"),
        "no value but the key in the log: {log}"
    );
    assert_eq!(green(&pair, "SELECT count(*) FROM t"), "0");

    pair.green
        .psql("app", "ALTER TABLE t ALTER COLUMN code TYPE text")
        .unwrap();
    converge_same_process(&pair, &mut sync, pid, &["t"]);
    assert!(sync.terminate(), "{}", sync.log_text());
}

#[test]
fn truncate_cascade_never_empties_a_green_only_table() {
    let pair = Pair::new("fc-trunc");
    pair.blue
        .psql(
            "app",
            "CREATE TABLE parent (id int PRIMARY KEY);
             CREATE PUBLICATION pub FOR ALL TABLES;",
        )
        .unwrap();
    pair.green
        .psql(
            "app",
            "CREATE TABLE parent (id int PRIMARY KEY);
             CREATE TABLE green_only (id int PRIMARY KEY, parent_id int REFERENCES parent);",
        )
        .unwrap();
    let mut sync = pair.sync(&[]);
    let pid = sync.pid();
    pair.blue
        .psql(
            "app",
            "INSERT INTO parent SELECT g FROM generate_series(1, 10) g",
        )
        .unwrap();
    pair.converge(&["parent"], WITHIN);
    pair.green
        .psql(
            "app",
            "INSERT INTO green_only SELECT g, g FROM generate_series(1, 10) g",
        )
        .unwrap();

    pair.blue.psql("app", "TRUNCATE parent CASCADE").unwrap();
    pair.blue
        .psql("app", "INSERT INTO parent VALUES (100)")
        .unwrap();
    let line = log_line(&mut sync, &["sync is blocked", "TRUNCATE"]);
    for part in [
        "table \"public.green_only\" references \"public.parent\"",
        "never with CASCADE",
        "ALTER TABLE \"public\".\"green_only\" DROP CONSTRAINT \"green_only_parent_id_fkey\"",
    ] {
        assert!(line.contains(part), "{part:?} in: {line}");
    }
    assert_eq!(
        green(
            &pair,
            "SELECT (SELECT count(*) FROM green_only), (SELECT count(*) FROM parent)"
        ),
        "10|10",
        "green-only rows intact, and nothing applied past the TRUNCATE"
    );

    // The operator lets the green-only table go its own way; sync goes on by itself.
    pair.green
        .psql(
            "app",
            "ALTER TABLE green_only DROP CONSTRAINT green_only_parent_id_fkey",
        )
        .unwrap();
    converge_same_process(&pair, &mut sync, pid, &["parent"]);
    assert_eq!(green(&pair, "SELECT id FROM parent"), "100");
    assert_eq!(
        green(&pair, "SELECT count(*) FROM green_only"),
        "10",
        "blue's TRUNCATE never reaches a table blue did not truncate"
    );
    assert!(sync.terminate(), "{}", sync.log_text());
}

#[test]
fn a_plain_truncate_of_published_tables_truncates_exactly_them() {
    let pair = Pair::new("fc-trunc2");
    pair.schema(
        "CREATE TABLE a (id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, v text);
         CREATE TABLE b (id int PRIMARY KEY, a_id int REFERENCES a);
         CREATE PUBLICATION pub FOR TABLE a, b;",
    );
    let mut sync = pair.sync(&[]);
    // On green only (after the backfill, which wants green's tables empty): an inheritance
    // child of `a`, which TRUNCATE ONLY leaves alone.
    pair.green
        .psql(
            "app",
            "CREATE TABLE a_archive () INHERITS (a);
             INSERT INTO a_archive VALUES (1000, 'archived');",
        )
        .unwrap();
    pair.blue
        .psql(
            "app",
            "INSERT INTO a (v) SELECT 'v' || g FROM generate_series(1, 5) g;
             INSERT INTO b SELECT g, g FROM generate_series(1, 5) g;",
        )
        .unwrap();
    pair.converge(&["ONLY a", "b"], WITHIN);
    // Green's own identity sequence, moved on: RESTART IDENTITY resets it, a plain TRUNCATE not.
    pair.green
        .psql(
            "app",
            "SELECT setval(pg_get_serial_sequence('a', 'id'), 500)",
        )
        .unwrap();
    let next_on_green = || green(&pair, "SELECT last_value || ':' || is_called FROM a_id_seq");

    pair.blue.psql("app", "TRUNCATE a, b").unwrap();
    pair.blue
        .psql("app", "INSERT INTO a (v) VALUES ('after')")
        .unwrap();
    pair.converge(&["ONLY a", "b"], WITHIN);
    assert_eq!(green(&pair, "SELECT count(*) FROM ONLY a"), "1");
    assert_eq!(
        green(&pair, "SELECT id, v FROM a_archive"),
        "1000|archived",
        "only the tables blue truncated"
    );
    assert_eq!(next_on_green(), "500:true", "no RESTART IDENTITY from blue");

    pair.blue
        .psql("app", "TRUNCATE a, b RESTART IDENTITY")
        .unwrap();
    pair.blue
        .psql("app", "INSERT INTO a (v) VALUES ('restarted')")
        .unwrap();
    pair.converge(&["ONLY a", "b"], WITHIN);
    assert_eq!(
        fingerprint(&pair.green, "ONLY a").unwrap(),
        fingerprint(&pair.blue, "ONLY a").unwrap()
    );
    assert_eq!(
        green(&pair, "SELECT id FROM ONLY a"),
        "1",
        "blue's restarted id"
    );
    assert_eq!(
        next_on_green(),
        "1:false",
        "RESTART IDENTITY as blue ran it"
    );
    assert!(sync.terminate(), "{}", sync.log_text());
}

#[test]
fn an_update_or_delete_on_a_parent_never_touches_its_inheritance_children() {
    let pair = Pair::new("fc-inherit");
    // The same key in the parent and in its child: blue's UPDATE/DELETE of the parent's row
    // must not reach the child's row on green (blue sends the child's own changes as the
    // child's).
    pair.schema(
        "CREATE TABLE p (id int PRIMARY KEY, v text);
         CREATE TABLE c () INHERITS (p);
         ALTER TABLE c ADD PRIMARY KEY (id);",
    );
    pair.blue
        .psql("app", "CREATE PUBLICATION pub FOR TABLE p, c")
        .unwrap();
    pair.blue
        .psql(
            "app",
            "INSERT INTO p VALUES (1, 'parent 1'), (2, 'parent 2'), (3, 'parent 3');
             INSERT INTO c VALUES (1, 'child 1'), (2, 'child 2'), (3, 'child 3');",
        )
        .unwrap();
    let mut sync = pair.sync(&[]);
    pair.converge(&["ONLY p", "c"], WITHIN);
    pair.blue
        .psql(
            "app",
            "UPDATE ONLY p SET v = 'parent 1 changed' WHERE id = 1;
             DELETE FROM ONLY p WHERE id = 2;
             UPDATE c SET v = 'child 3 changed' WHERE id = 3;
             INSERT INTO p VALUES (4, 'parent 4');",
        )
        .unwrap();
    pair.converge(&["ONLY p", "c"], WITHIN);
    assert_eq!(
        green(
            &pair,
            "SELECT string_agg(id || ':' || v, ',' ORDER BY id) FROM c"
        ),
        "1:child 1,2:child 2,3:child 3 changed"
    );
    assert_eq!(
        green(
            &pair,
            "SELECT string_agg(id || ':' || v, ',' ORDER BY id) FROM ONLY p"
        ),
        "1:parent 1 changed,3:parent 3,4:parent 4"
    );
    assert!(sync.running(), "{}", sync.log_text());
    assert!(sync.terminate(), "{}", sync.log_text());
}
