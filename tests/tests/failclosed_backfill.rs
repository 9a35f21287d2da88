//! Fail closed around the copy (issue 10, points 4–6), against real clusters and the real
//! `blueshift` binary: row-level security never filters a copy silently, a sequence blueshift
//! may not read stops the backfill naming it and the GRANT, and a table added to the publication
//! (while sync runs, while it is down, and with a `kill -9` in the middle of its copy) gets its
//! existing rows copied consistently with the stream.

#[path = "support/sync.rs"]
mod support;

use std::time::Duration;

use blueshift_tests::eventually;
use support::{Pair, Sync};

/// Waits (bounded) for `run` to exit and returns whether it exited 0.
fn exit_status(run: &mut Sync, within: Duration) -> bool {
    eventually(within, || {
        anyhow::ensure!(!run.running(), "still running");
        Ok(())
    })
    .unwrap_or_else(|e| panic!("blueshift did not stop: {e:#}\n{}", run.log_text()));
    run.wait()
}

/// A role for blue that is neither superuser nor BYPASSRLS: it may replicate and read the
/// tables named, nothing more.
fn reader_role(pair: &Pair, tables: &str) {
    pair.blue
        .psql(
            "app",
            &format!(
                "CREATE ROLE bs_reader LOGIN REPLICATION NOSUPERUSER NOBYPASSRLS; \
                 GRANT USAGE ON SCHEMA public TO bs_reader; \
                 GRANT SELECT ON {tables} TO bs_reader"
            ),
        )
        .expect("role");
}

/// A policy on a published table hides 901 of its 1001 rows from the role blueshift uses: the
/// backfill refuses, naming the table and the fix, and copies nothing (before: 100 rows copied
/// and sync went on). With BYPASSRLS granted, the next run copies every row.
#[test]
fn row_level_security_on_blue_refuses_the_copy_naming_the_table() {
    let pair = Pair::new("fcrls");
    let schema = "CREATE TABLE secrets (id int PRIMARY KEY, v text); \
                  CREATE TABLE plain (id int PRIMARY KEY, v text)";
    pair.schema(schema);
    pair.blue
        .psql(
            "app",
            "INSERT INTO secrets SELECT g, 's' || g FROM generate_series(1, 1001) g; \
             INSERT INTO plain SELECT g, 'p' || g FROM generate_series(1, 50) g; \
             ALTER TABLE secrets ENABLE ROW LEVEL SECURITY; \
             CREATE POLICY only_some ON secrets USING (id <= 100); \
             CREATE PUBLICATION pub FOR TABLE secrets, plain",
        )
        .unwrap();
    reader_role(&pair, "secrets, plain");

    let mut sync = pair.spawn_as("sync", "bs_reader", &[]);
    assert!(
        !exit_status(&mut sync, Duration::from_secs(60)),
        "sync must stop"
    );
    let log = sync.log_text();
    assert!(
        log.contains("table \"public\".\"secrets\" on blue has row-level security")
            && log.contains("ALTER ROLE \"bs_reader\" BYPASSRLS"),
        "{log}"
    );
    assert!(!log.contains("\"public\".\"plain\" on blue has"), "{log}");
    for t in ["secrets", "plain"] {
        assert_eq!(
            pair.green
                .psql("app", &format!("SELECT count(*) FROM {t}"))
                .unwrap(),
            "0",
            "nothing copied into {t}"
        );
    }

    pair.blue
        .psql("app", "ALTER ROLE bs_reader BYPASSRLS")
        .unwrap();
    let mut sync = pair.spawn_as("sync", "bs_reader", &[]);
    pair.converge(&["secrets", "plain"], Duration::from_secs(60));
    assert_eq!(
        pair.green
            .psql("app", "SELECT count(*) FROM secrets")
            .unwrap(),
        "1001"
    );
    assert!(sync.terminate());
}

/// A sequence the role may not read: the backfill refuses before copying, naming every such
/// sequence and the GRANT for each (before: `pg_sequences` showed NULL, the sequence was left at
/// 1 on green and the backfill succeeded). Once granted, a sequence green cannot take blue's
/// value into stops the end of the copy, named with the fix; once fixed, a new run sets every
/// sequence of the published tables and their schemas — serial, identity, standalone, a
/// negative increment, one never called — to blue's state exactly.
#[test]
fn sequences_blueshift_cannot_read_are_named_with_the_grant() {
    let pair = Pair::new("fcseq");
    pair.schema(
        "CREATE TABLE a (id serial PRIMARY KEY, v text); \
         CREATE TABLE b (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text); \
         CREATE SEQUENCE invoice_no; \
         CREATE SEQUENCE countdown INCREMENT -5 START 1000 MINVALUE -100000 MAXVALUE 1000; \
         CREATE SEQUENCE never_called START 42",
    );
    // Green's `small` stops short of blue's value.
    pair.blue.psql("app", "CREATE SEQUENCE small").unwrap();
    pair.green
        .psql("app", "CREATE SEQUENCE small MAXVALUE 5")
        .unwrap();
    pair.blue
        .psql(
            "app",
            "INSERT INTO a (v) SELECT 'a' FROM generate_series(1, 30); \
             INSERT INTO b (v) SELECT 'b' FROM generate_series(1, 17); \
             SELECT nextval('invoice_no') FROM generate_series(1, 7); \
             SELECT nextval('countdown') FROM generate_series(1, 3); \
             SELECT nextval('small') FROM generate_series(1, 9); \
             CREATE PUBLICATION pub FOR TABLE a, b",
        )
        .unwrap();
    reader_role(&pair, "a, b");
    pair.blue
        .psql(
            "app",
            "GRANT SELECT ON SEQUENCE a_id_seq, countdown, never_called, small TO bs_reader",
        )
        .unwrap();

    let mut backfill = pair.spawn_as("backfill", "bs_reader", &[]);
    assert!(
        !exit_status(&mut backfill, Duration::from_secs(60)),
        "the backfill must fail"
    );
    let log = backfill.log_text();
    for missing in ["\"public\".\"b_id_seq\"", "\"public\".\"invoice_no\""] {
        assert!(
            log.contains(&format!(
                "GRANT SELECT ON SEQUENCE {missing} TO \"bs_reader\""
            )),
            "{missing} named with its GRANT:\n{log}"
        );
    }
    assert!(
        !log.contains("ON SEQUENCE \"public\".\"a_id_seq\""),
        "{log}"
    );
    assert_eq!(
        pair.green.psql("app", "SELECT count(*) FROM a").unwrap(),
        "0",
        "refused before copying"
    );

    pair.blue
        .psql(
            "app",
            "GRANT SELECT ON SEQUENCE b_id_seq, invoice_no TO bs_reader",
        )
        .unwrap();
    let mut backfill = pair.spawn_as("backfill", "bs_reader", &[]);
    assert!(
        !exit_status(&mut backfill, Duration::from_secs(60)),
        "green's small cannot take 9"
    );
    let log = backfill.log_text();
    assert!(
        log.contains("1 sequence not synced to green")
            && log.contains("sequence \"public\".\"small\": green refused it")
            && log.contains("ALTER SEQUENCE"),
        "{log}"
    );
    assert_eq!(
        pair.green.psql("app", "SELECT count(*) FROM a").unwrap(),
        "30",
        "the rows are copied; only the sequences wait"
    );
    pair.green
        .psql("app", "ALTER SEQUENCE small MAXVALUE 1000")
        .unwrap();

    let mut backfill = pair.spawn_as("backfill", "bs_reader", &[]);
    assert!(
        exit_status(&mut backfill, Duration::from_secs(60)),
        "{}",
        backfill.log_text()
    );
    let state = |c: &blueshift_tests::Cluster| {
        c.psql(
            "app",
            "SELECT string_agg(s, ',') FROM ( \
               SELECT 'a=' || last_value || '/' || is_called AS s FROM a_id_seq UNION ALL \
               SELECT 'b=' || last_value || '/' || is_called FROM b_id_seq UNION ALL \
               SELECT 'invoice=' || last_value || '/' || is_called FROM invoice_no UNION ALL \
               SELECT 'countdown=' || last_value || '/' || is_called FROM countdown UNION ALL \
               SELECT 'never=' || last_value || '/' || is_called FROM never_called UNION ALL \
               SELECT 'small=' || last_value || '/' || is_called FROM small) x",
        )
        .unwrap()
    };
    assert_eq!(
        state(&pair.blue),
        "a=30/true,b=17/true,invoice=7/true,countdown=990/true,never=42/false,small=9/true"
    );
    assert_eq!(state(&pair.green), state(&pair.blue));
    // What green hands out next is what blue would.
    assert_eq!(
        pair.green
            .psql(
                "app",
                "SELECT nextval('countdown') || ',' || nextval('never_called')"
            )
            .unwrap(),
        "985,42"
    );
}

/// Blue's tables for the added-table tests: `base` published from the start, `late` (with rows,
/// a secondary index and a foreign key to `base`) added later.
fn added_pair(name: &str, late_rows: u32) -> Pair {
    let pair = Pair::new(name);
    pair.schema(
        "CREATE TABLE base (id int PRIMARY KEY, v int NOT NULL); \
         CREATE TABLE late (id int PRIMARY KEY, base int REFERENCES base, v int NOT NULL, \
                            note text); \
         CREATE INDEX late_v ON late (v)",
    );
    pair.blue
        .psql(
            "app",
            &format!(
                "INSERT INTO base SELECT g, 0 FROM generate_series(1, 100) g; \
                 INSERT INTO late SELECT g, g % 100 + 1, 0, repeat('n', 200) \
                   FROM generate_series(1, {late_rows}) g; \
                 CREATE PUBLICATION pub FOR TABLE base; ANALYZE"
            ),
        )
        .unwrap();
    pair
}

/// A writer on blue touching both tables: `late`'s existing rows updated and deleted, new ones
/// inserted, `base` updated.
fn writer(rounds: u32, late_rows: u32) -> String {
    format!(
        "DO $$ BEGIN FOR i IN 1..{rounds} LOOP
            UPDATE base SET v = v + 1 WHERE id = i % 100 + 1;
            UPDATE late SET v = v + 1 WHERE id = (i * 7) % {late_rows} + 1;
            DELETE FROM late WHERE id = (i * 13) % {late_rows} + 1;
            INSERT INTO late VALUES ({late_rows} + i, i % 100 + 1, i, 'new');
            COMMIT; PERFORM pg_sleep(0.002); END LOOP; END $$"
    )
}

/// `ALTER PUBLICATION … ADD TABLE` of a table with rows while sync runs and blue keeps writing
/// to it: sync copies the table consistently with the stream and goes on; green ends equal to
/// blue row for row (before: the 1000 existing rows were never copied).
#[test]
fn a_table_added_to_the_publication_mid_sync_is_copied_and_streams_on() {
    let pair = added_pair("fcadd", 1000);
    let mut sync = pair.sync(&["--workers", "2"]);
    pair.converge(&["base"], Duration::from_secs(60));
    let mut writer = pair.background_on_blue(&writer(2000, 1000));
    // Sync is applying the writer's changes to base when the table is added.
    eventually(Duration::from_secs(60), || {
        let moved = pair.green.psql("app", "SELECT sum(v) FROM base")?;
        anyhow::ensure!(moved.parse::<i64>().unwrap_or(0) > 50, "not yet");
        Ok(())
    })
    .unwrap();
    pair.blue
        .psql("app", "ALTER PUBLICATION pub ADD TABLE late")
        .unwrap();
    assert!(writer.wait().unwrap().success());
    pair.converge(&["base", "late"], Duration::from_secs(120));
    assert!(sync.running(), "sync goes on:\n{}", sync.log_text());
    // Streaming goes on for the added table.
    pair.blue
        .psql("app", "UPDATE late SET note = 'after' WHERE id <= 10")
        .unwrap();
    pair.converge(&["base", "late"], Duration::from_secs(60));
    let log = sync.log_text();
    assert!(log.contains("was added to the publication"), "{log}");
    // Its index and foreign key are there on green.
    assert_eq!(
        pair.green
            .psql(
                "app",
                "SELECT count(*) FROM pg_indexes WHERE tablename = 'late'; \
                 SELECT count(*) FROM pg_constraint WHERE conrelid = 'late'::regclass AND contype = 'f'",
            )
            .unwrap(),
        "2\n1"
    );
    assert!(sync.terminate());
}

/// A table added while sync was down is copied when it starts. `--no-backfill` first stops with
/// the command that copies it, copying nothing.
#[test]
fn a_table_added_while_sync_was_down_is_copied_at_start() {
    let pair = added_pair("fcdown", 1000);
    let mut sync = pair.sync(&[]);
    pair.converge(&["base"], Duration::from_secs(60));
    assert!(sync.terminate());
    pair.blue
        .psql(
            "app",
            "ALTER PUBLICATION pub ADD TABLE late; \
             UPDATE late SET v = 5 WHERE id <= 300; DELETE FROM late WHERE id > 900; \
             INSERT INTO late VALUES (5000, 1, 1, 'while down'); UPDATE base SET v = 9",
        )
        .unwrap();

    let mut refused = pair.spawn("sync", &["--no-backfill"]);
    assert!(!exit_status(&mut refused, Duration::from_secs(60)));
    let log = refused.log_text();
    assert!(
        log.contains("\"public\".\"late\"") && log.contains("without --no-backfill"),
        "{log}"
    );
    assert_eq!(
        pair.green.psql("app", "SELECT count(*) FROM late").unwrap(),
        "0"
    );

    let mut sync = pair.sync(&[]);
    pair.converge(&["base", "late"], Duration::from_secs(60));
    pair.blue
        .psql(
            "app",
            "DELETE FROM late WHERE id <= 10; UPDATE base SET v = 10",
        )
        .unwrap();
    pair.converge(&["base", "late"], Duration::from_secs(60));
    assert!(sync.terminate());
}

/// A table whose changes blue's stream carries (it was published when they were made) but that
/// is no longer published when sync copies: sync stops naming it and the command that fixes it;
/// once it is published again, sync copies it and green ends equal to blue.
#[test]
fn a_table_published_then_dropped_from_the_publication_is_refused_with_the_fix() {
    let pair = added_pair("fcunpub", 1000);
    let mut sync = pair.sync(&[]);
    pair.converge(&["base"], Duration::from_secs(60));
    assert!(sync.terminate());
    pair.blue
        .psql(
            "app",
            "ALTER PUBLICATION pub ADD TABLE late; UPDATE late SET v = 7 WHERE id <= 10; \
             ALTER PUBLICATION pub DROP TABLE late; UPDATE base SET v = 1",
        )
        .unwrap();
    let mut refused = pair.spawn("sync", &[]);
    assert!(!exit_status(&mut refused, Duration::from_secs(60)));
    let log = refused.log_text();
    assert!(
        log.contains("table \"public\".\"late\" appears in blue's stream")
            && log.contains("ALTER PUBLICATION \"pub\" ADD TABLE \"public\".\"late\""),
        "{log}"
    );
    assert_eq!(
        pair.green.psql("app", "SELECT count(*) FROM late").unwrap(),
        "0"
    );

    pair.blue
        .psql("app", "ALTER PUBLICATION pub ADD TABLE late")
        .unwrap();
    let mut sync = pair.sync(&[]);
    pair.blue
        .psql("app", "UPDATE late SET v = 8 WHERE id <= 5")
        .unwrap();
    pair.converge(&["base", "late"], Duration::from_secs(60));
    assert!(sync.terminate());
}

/// `kill -9` in the middle of the copy of a table added mid-sync, while blue writes to it: the
/// next run finishes the copy under a new snapshot, reconciles it with the stream, and green
/// ends equal to blue.
#[test]
fn kill_9_while_copying_an_added_table_resumes_and_converges() {
    let rows = 150_000;
    let pair = added_pair("fcaddkill", rows);
    let args = [
        "--copy-workers",
        "2",
        "--chunk-size",
        "256KiB",
        "--workers",
        "2",
    ];
    let mut sync = pair.sync(&args);
    let mut writer = pair.background_on_blue(&writer(4000, rows));
    pair.blue
        .psql("app", "ALTER PUBLICATION pub ADD TABLE late")
        .unwrap();
    let done = |pair: &Pair| -> (i64, i64) {
        let text = pair
            .green
            .psql(
                "app",
                "SELECT count(*) FILTER (WHERE generation IS NOT NULL) || ',' || count(*) \
                   FROM blueshift.backfill_chunk WHERE target_table = 'late'",
            )
            .unwrap_or_default();
        let mut parts = text.split(',').map(|n| n.parse().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
    };
    eventually(Duration::from_secs(120), || {
        anyhow::ensure!(sync.running(), "sync exited:\n{}", sync.log_text());
        anyhow::ensure!(done(&pair).0 >= 3, "not enough chunks of late yet");
        Ok(())
    })
    .unwrap();
    sync.kill9();
    let (finished, total) = done(&pair);
    assert!(finished < total, "killed in the middle: {finished}/{total}");

    let mut sync = pair.spawn("sync", &args);
    assert!(writer.wait().unwrap().success());
    pair.converge(&["base", "late"], Duration::from_secs(180));
    assert!(sync.running(), "sync goes on:\n{}", sync.log_text());
    let (finished, total) = done(&pair);
    assert_eq!(finished, total);
    assert!(sync.terminate());
}
