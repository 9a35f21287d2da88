//! Folding and set-based apply of catch-up groups (`blueshift sync --fold`), the real binary
//! between real clusters. The same backlog of small transactions — queued while sync was
//! stopped, so that it is applied in groups — goes to green with `--fold on` and with `--fold
//! off`, and green must equal blue row for row either way: inserts, updates, insert → update →
//! delete chains, deletes and reinserts of a key, unchanged TOAST values carried, a swap of
//! values of a secondary unique index (falls back to blue's order, no failure), key-changing
//! updates, a keyless table and a REPLICA IDENTITY FULL one with duplicate rows, a table with an
//! `ENABLE ALWAYS` trigger on green (every change must reach it), TRUNCATE inside a group,
//! and tables that cannot be folded but take only inserts (keyless, REPLICA IDENTITY FULL: one
//! set INSERT; with an `ENABLE ALWAYS` trigger: in blue's order).
//! Then: a row missing on green fails the group, naming the table, with nothing of it
//! committed; a sync killed with a set statement in flight loses and doubles nothing; and a
//! randomized workload converges.

#[path = "support/sync.rs"]
mod support;

use std::time::Duration;

use support::Pair;

const SCHEMA: &str = r#"
CREATE TABLE plain (id int PRIMARY KEY, v text NOT NULL, n bigint);
CREATE TABLE toasted (id int PRIMARY KEY, big text, small int NOT NULL);
ALTER TABLE toasted ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE TABLE uniq (id int PRIMARY KEY, code int NOT NULL UNIQUE, v text);
CREATE TABLE keychange (id int PRIMARY KEY, v text);
CREATE TABLE full_t (a int, b text);
ALTER TABLE full_t REPLICA IDENTITY FULL;
CREATE TABLE nokey (a int, b text);
CREATE TABLE full_ins (a int, b text);
ALTER TABLE full_ins REPLICA IDENTITY FULL;
CREATE TABLE trig (id int PRIMARY KEY, v int NOT NULL);
CREATE TABLE trig_ins (id int, v int);
CREATE TABLE trunc (id int PRIMARY KEY, v text);
CREATE TABLE "Odd ""name""" ("K ey" text PRIMARY KEY, "va l" numeric(10,2), d date, arr int[], j jsonb);
"#;

const TABLES: &[&str] = &[
    "plain",
    "toasted",
    "uniq",
    "keychange",
    "full_t",
    "nokey",
    "full_ins",
    "trig",
    "trig_ins",
    "trunc",
    r#""Odd ""name""""#,
];

/// Green only: an `ENABLE ALWAYS` trigger on `trig` logging every row change it sees.
const GREEN_TRIGGER: &str = r#"
CREATE TABLE trig_log (op text, id int, v int);
CREATE FUNCTION trig_log() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN INSERT INTO public.trig_log VALUES (TG_OP, OLD.id, OLD.v); RETURN OLD; END IF;
  INSERT INTO public.trig_log VALUES (TG_OP, NEW.id, NEW.v); RETURN NEW;
END $$;
CREATE TRIGGER trig_log AFTER INSERT OR UPDATE OR DELETE ON trig FOR EACH ROW EXECUTE FUNCTION trig_log();
ALTER TABLE trig ENABLE ALWAYS TRIGGER trig_log;
CREATE TRIGGER trig_ins_log AFTER INSERT ON trig_ins FOR EACH ROW EXECUTE FUNCTION trig_log();
ALTER TABLE trig_ins ENABLE ALWAYS TRIGGER trig_ins_log;
"#;

/// Rows present before the backlog (copied by the backfill).
const BEFORE: &str = r#"
INSERT INTO plain SELECT g, 'p' || g, g FROM generate_series(1, 200) g;
INSERT INTO toasted SELECT g, repeat(md5(g::text), 100), g FROM generate_series(1, 20) g;
INSERT INTO uniq SELECT g, g, 'u' || g FROM generate_series(1, 20) g;
INSERT INTO keychange SELECT g, 'k' || g FROM generate_series(1, 50) g;
INSERT INTO full_t VALUES (1, 'dup'), (1, 'dup'), (2, NULL), (3, 'x');
INSERT INTO nokey VALUES (1, 'dup'), (1, 'dup');
INSERT INTO trig SELECT g, 0 FROM generate_series(1, 10) g;
INSERT INTO trunc SELECT g, 't' || g FROM generate_series(1, 30) g;
INSERT INTO "Odd ""name""" VALUES ('a b', 1.5, '2020-01-01', '{1,NULL,3}', '{"x": [1, "y"]}');
"#;

/// The backlog: many small transactions (each `COMMIT` ends one), applied later in groups.
fn backlog(round: u32) -> String {
    format!(
        r#"DO $$ DECLARE r int := {round}; BEGIN
  FOR i IN 1..60 LOOP
    -- inserts, then updates of the new row in later transactions
    INSERT INTO plain VALUES (1000 * (r + 1) + i, 'new', i);
    UPDATE plain SET v = v || '+', n = n + 1 WHERE id = i;
    COMMIT;
    UPDATE plain SET v = 'updated' WHERE id = 1000 * (r + 1) + i;
    UPDATE plain SET n = NULL WHERE id = i + 100;
    -- an insert -> update -> delete chain
    INSERT INTO plain VALUES (-i - 1000 * r, 'chain', 0);
    UPDATE plain SET n = 1 WHERE id = -i - 1000 * r;
    COMMIT;
    DELETE FROM plain WHERE id = -i - 1000 * r;
    -- a key deleted and inserted again
    DELETE FROM plain WHERE id = 150 + (i % 40);
    COMMIT;
    INSERT INTO plain VALUES (150 + (i % 40), 'again ' || i, r);
    -- unchanged TOAST: updates that leave big alone, on a row of before and a new one
    UPDATE toasted SET small = small + 1 WHERE id = 1 + (i % 20);
    INSERT INTO toasted VALUES (100 * (r + 1) + i, repeat(md5((i + r)::text), 100), 0);
    COMMIT;
    UPDATE toasted SET small = 7 WHERE id = 100 * (r + 1) + i;
    IF i % 10 = 0 THEN UPDATE toasted SET big = repeat('z', 3000) WHERE id = 2; END IF;
    -- a swap of two rows' unique codes through a free value, over three transactions
    UPDATE uniq SET code = -1 WHERE id = 1 + (i % 10);
    COMMIT;
    UPDATE uniq SET code = 1 + (i % 10) WHERE id = 11 + (i % 10);
    COMMIT;
    UPDATE uniq SET code = 11 + (i % 10) WHERE id = 1 + (i % 10);
    -- a key-changing update, and updates around it
    UPDATE keychange SET v = v || '.' WHERE id = i % 50;
    UPDATE keychange SET id = id + 10000 WHERE id = 1 + (i % 50);
    COMMIT;
    UPDATE keychange SET id = id - 10000, v = 'back' WHERE id = 10001 + (i % 50);
    -- REPLICA IDENTITY FULL and keyless tables with duplicates
    INSERT INTO full_t VALUES (i, 'dup'), (i, 'dup');
    UPDATE full_t SET b = 'one' WHERE ctid = (SELECT ctid FROM full_t WHERE a = i AND b = 'dup' LIMIT 1);
    INSERT INTO nokey VALUES (i, 'dup'), (i, 'dup');
    INSERT INTO full_ins VALUES (i, NULL), (i, NULL);
    INSERT INTO trig_ins VALUES (i, r);
    COMMIT;
    DELETE FROM full_t WHERE ctid = (SELECT ctid FROM full_t WHERE a = 1 AND b = 'dup' LIMIT 1);
    -- a table whose green trigger must see every change
    UPDATE trig SET v = v + 1 WHERE id = 1 + (i % 10);
    INSERT INTO trig VALUES (100 + i + 1000 * r, i);
    COMMIT;
    DELETE FROM trig WHERE id = 100 + i + 1000 * r;
    -- types cast from text arrays, hostile names
    INSERT INTO "Odd ""name""" VALUES ('k' || i || '-' || r, i / 3.0, DATE '2020-01-01' + i, ARRAY[i, NULL], jsonb_build_object('i', i));
    UPDATE "Odd ""name""" SET "va l" = "va l" + 1, arr = arr || 9 WHERE "K ey" = 'a b';
    COMMIT;
    -- TRUNCATE inside a group, with changes before and after it
    IF i = 30 THEN
      INSERT INTO trunc VALUES (500 + r, 'before truncate');
      COMMIT;
      TRUNCATE trunc;
      COMMIT;
    END IF;
    INSERT INTO trunc VALUES (1000 * (r + 1) + i, 'after');
    UPDATE trunc SET v = 'upd' WHERE id = 1000 * (r + 1) + i - 1;
    COMMIT;
  END LOOP;
END $$"#
    )
}

/// Changes the green trigger sees by [`backlog`], a round: 60 updates, 60 inserts and 60
/// deletes on `trig`, 60 inserts on `trig_ins`.
const TRIG_CHANGES_PER_ROUND: u32 = 240;

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
    pair.green
        .psql("app", GREEN_TRIGGER)
        .expect("green trigger");
    pair.blue.psql("app", BEFORE).expect("rows before");
    pair.blue
        .psql("app", "CREATE PUBLICATION pub FOR ALL TABLES")
        .expect("publication");
    let mut sync = pair.sync(&[]);
    pair.converge(TABLES, Duration::from_secs(60));
    assert!(sync.terminate());
    // What the backfill copied fired no trigger (session_replication_role = replica, and a
    // copy): the log starts empty.
    pair.green
        .psql("app", "TRUNCATE trig_log")
        .expect("empty log");
    pair
}

/// The backlog applied with `--fold <fold>`: green equals blue, the trigger saw every change.
fn backlog_converges(name: &str, fold: &str) -> String {
    let pair = prepared(name);
    for round in 0..2 {
        pair.blue.psql("app", &backlog(round)).expect("backlog");
    }
    let mut sync = pair.spawn_env("sync", &["--workers", "2", "--fold", fold], &log_env());
    pair.converge(TABLES, Duration::from_secs(120));
    let log = sync.log_text();
    assert!(sync.terminate(), "sync exits cleanly:\n{log}");
    assert_eq!(
        pair.green
            .psql("app", "SELECT count(*) FROM trig_log")
            .expect("trigger log"),
        (2 * TRIG_CHANGES_PER_ROUND).to_string(),
        "the ALWAYS trigger on green fired once per change blue made:\n{log}"
    );
    log
}

#[test]
fn every_fold_path_matches_blue_and_the_row_path() {
    let log = backlog_converges("fold-on", "on");
    // Groups were folded, and the tables that must not be were applied in blue's order.
    assert!(
        log.contains("changes folded into set statements"),
        "nothing was folded:\n{log}"
    );
    for (table, reason) in [
        (
            "public.uniq",
            "a unique index or exclusion constraint beyond the key",
        ),
        ("public.trig", "a trigger fires during apply"),
        ("public.full_t", "REPLICA IDENTITY FULL"),
        // Keyless and only inserts, but its trigger must see them in blue's order.
        ("public.trig_ins", "no replica identity key"),
        ("public.keychange", "a change that cannot be folded"),
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains("changes applied in blue's order")
                    && l.contains(&format!("table={table} "))
                    && l.contains(reason)),
            "{table} was not applied in order ({reason}):\n{log}"
        );
    }
    assert!(
        !log.lines()
            .any(|l| l.contains("one set INSERT") && l.contains("table=public.trig_ins ")),
        "public.trig_ins has a trigger that fires during apply:\n{log}"
    );
    // Tables that cannot be folded but took only inserts in a group: one set INSERT.
    for (table, reason) in [
        ("public.nokey", "no replica identity key"),
        ("public.full_ins", "REPLICA IDENTITY FULL"),
    ] {
        assert!(
            log.lines().any(
                |l| l.contains("not foldable, but only inserts: one set INSERT")
                    && l.contains(&format!("table={table} "))
                    && l.contains(reason)
            ),
            "{table} did not take its inserts as a set ({reason}):
{log}"
        );
    }
    for table in ["public.plain", "public.toasted", "public.trunc"] {
        assert!(
            log.lines()
                .any(|l| l.contains("changes folded into set statements")
                    && l.contains(&format!("table={table} "))),
            "{table} was never folded:\n{log}"
        );
    }
}

#[test]
fn the_same_backlog_row_by_row() {
    let log = backlog_converges("fold-off", "off");
    assert!(
        !log.contains("changes folded into set statements"),
        "--fold off folded:\n{log}"
    );
}

#[test]
fn a_row_missing_on_green_fails_the_group_and_commits_nothing_of_it() {
    let pair = prepared("fold-missing");
    // Green diverges: a row blue will update is gone.
    pair.green
        .psql("app", "DELETE FROM plain WHERE id = 77")
        .expect("diverge");
    pair.blue
        .psql(
            "app",
            "DO $$ BEGIN
               FOR i IN 1..40 LOOP
                 INSERT INTO plain VALUES (5000 + i, 'x', i);
                 UPDATE plain SET n = -1 WHERE id = i;
                 -- the 20th, in a group with those after it, large enough to be folded
                 IF i = 20 THEN
                   UPDATE plain SET n = -2 WHERE id BETWEEN 100 AND 130;
                   UPDATE plain SET v = 'gone on green' WHERE id = 77;
                 END IF;
                 COMMIT;
               END LOOP;
             END $$",
        )
        .expect("backlog");
    let mut sync = pair.spawn_env("sync", &["--workers", "2"], &log_env());
    let status = sync.exited(Duration::from_secs(60));
    let log = sync.log_text();
    assert!(!status.success(), "sync stopped:\n{log}");
    assert!(
        log.contains("public.plain") && log.contains("found no matching row on green"),
        "the error names the table and the cause:\n{log}"
    );
    assert!(
        log.contains("folded group failed; applying it again in blue's order"),
        "the folded group failed first, then the row path named the row:\n{log}"
    );
    // Transactions before the 20th may have committed in earlier groups; nothing of the 20th
    // (its insert of 5020) nor after it did.
    let after = pair
        .green
        .psql(
            "app",
            "SELECT count(*) FILTER (WHERE id >= 5020), count(*) FILTER (WHERE id BETWEEN 20 AND 40 AND n = -1), count(*) FILTER (WHERE n = -2) FROM plain",
        )
        .expect("rows");
    let fields: Vec<&str> = after.split('|').collect();
    assert_eq!(
        fields[0], "0",
        "nothing of the failing group committed:\n{log}"
    );
    assert_eq!(
        fields[1], "0",
        "nothing of the failing group committed:\n{log}"
    );
    assert_eq!(
        fields[2], "0",
        "nothing of the failing group committed:\n{log}"
    );
}

#[test]
fn killed_with_a_set_statement_in_flight() {
    let pair = prepared("fold-kill");
    for i in 0..6u32 {
        pair.blue.psql("app", &backlog(i)).expect("backlog");
        let spec = format!("set-statement=kill@{}", 1 + (i * 5) % 11);
        let mut sync = pair.spawn_env(
            "sync",
            &["--workers", "2"],
            &[("BLUESHIFT_FAILPOINTS", spec.as_str()), log_env()[0]],
        );
        sync.killed_at(&spec, Duration::from_secs(120));
    }
    let mut sync = pair.sync(&["--workers", "2"]);
    pair.converge(TABLES, Duration::from_secs(180));
    assert!(sync.terminate());
    // Every change to `trig` reached green's trigger exactly once: none was lost with a killed
    // group, none applied twice when it was sent again.
    assert_eq!(
        pair.green
            .psql("app", "SELECT count(*) FROM trig_log")
            .expect("trigger log"),
        (6 * TRIG_CHANGES_PER_ROUND).to_string()
    );
}

#[test]
fn a_randomized_workload_converges_folded() {
    let pair = Pair::new("fold-random");
    pair.schema(
        "CREATE TABLE r (id int PRIMARY KEY, a int, b text);
         CREATE TABLE r2 (k1 int, k2 text, v int, PRIMARY KEY (k1, k2));",
    );
    pair.blue
        .psql("app", "CREATE PUBLICATION pub FOR ALL TABLES")
        .expect("publication");
    let mut sync = pair.sync(&[]);
    assert!(sync.terminate());
    // Random inserts, updates, deletes and reinserts over a few keys, many per key, in small
    // transactions; the seed is printed so that a failure can be replayed.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 1_000_000;
    eprintln!("seed {seed}");
    pair.blue
        .psql(
            "app",
            &format!(
                "SELECT setseed({seed} / 1000000.0);
                 DO $$ DECLARE k int; c int; BEGIN
                   FOR i IN 1..3000 LOOP
                     k := (random() * 40)::int; c := (random() * 3)::int;
                     IF c = 0 THEN
                       INSERT INTO r VALUES (k, i, 'r' || i) ON CONFLICT (id) DO UPDATE SET a = EXCLUDED.a;
                     ELSIF c = 1 THEN
                       UPDATE r SET a = a + 1, b = CASE WHEN random() < 0.5 THEN b ELSE 'u' || i END WHERE id = k;
                     ELSE
                       DELETE FROM r WHERE id = k;
                     END IF;
                     IF random() < 0.3 THEN
                       INSERT INTO r2 VALUES (k % 5, 'k' || (k % 3), i) ON CONFLICT (k1, k2) DO UPDATE SET v = EXCLUDED.v;
                     ELSIF random() < 0.2 THEN
                       DELETE FROM r2 WHERE k1 = k % 5;
                     END IF;
                     IF random() < 0.4 THEN COMMIT; END IF;
                   END LOOP;
                 END $$"
            ),
        )
        .expect("random workload");
    let mut sync = pair.spawn_env("sync", &["--workers", "3"], &log_env());
    pair.converge(&["r", "r2"], Duration::from_secs(120));
    let log = sync.log_text();
    assert!(sync.terminate());
    assert!(
        log.contains("changes folded into set statements"),
        "seed {seed}: nothing was folded:\n{log}"
    );
}
