//! Fail closed when a loaded table on blue stops being the table green was loaded from (issue
//! 10): dropped and created again under the same name, or taken out of the publication and put
//! back (the changes in between are never streamed). Against real clusters and the real
//! `blueshift` binary: sync stops naming the table, the cause and the fix (exit 5), green forgets
//! that it holds the table, and once the operator empties it on green the next start copies it
//! afresh — green ends equal to blue row for row.

#[path = "support/sync.rs"]
mod support;

use std::time::Duration;

use support::Pair;

fn pair(name: &str, publication: &str) -> Pair {
    let pair = Pair::new(name);
    pair.schema(
        "CREATE TABLE base (id int PRIMARY KEY, v int NOT NULL); \
         CREATE TABLE late (id int PRIMARY KEY, v int NOT NULL)",
    );
    pair.blue
        .psql(
            "app",
            &format!(
                "INSERT INTO base SELECT g, 0 FROM generate_series(1, 100) g; \
                 INSERT INTO late SELECT g, 0 FROM generate_series(1, 200) g; \
                 CREATE PUBLICATION pub {publication}"
            ),
        )
        .unwrap();
    pair
}

fn count(pair: &Pair, table: &str) -> String {
    pair.green
        .psql("app", &format!("SELECT count(*) FROM {table}"))
        .unwrap()
}

/// `DROP TABLE late; CREATE TABLE late …` on blue while sync runs (a `FOR ALL TABLES`
/// publication takes the new table at once): before, the new table's rows were applied on top of
/// the old one's 200 rows on green. Now sync stops at the new table's first change, naming it;
/// after `TRUNCATE late` on green the next start copies the new table, and blue and green are
/// equal.
#[test]
fn a_table_recreated_under_the_same_name_stops_sync_until_green_is_emptied() {
    let pair = pair("fcrecreate", "FOR ALL TABLES");
    let mut sync = pair.sync(&[]);
    pair.converge(&["base", "late"], Duration::from_secs(60));
    pair.blue
        .psql(
            "app",
            "BEGIN; DROP TABLE late; CREATE TABLE late (id int PRIMARY KEY, v int NOT NULL); \
             COMMIT; INSERT INTO late VALUES (1000, 1), (1001, 2); UPDATE base SET v = 1",
        )
        .unwrap();
    let code = sync.exit_code_within(Duration::from_secs(60));
    let log = sync.log_text();
    assert_eq!(code, 5, "a data stop:\n{log}");
    assert!(
        log.contains("table \"public\".\"late\" was dropped and created again on blue")
            && log.contains("TRUNCATE"),
        "{log}"
    );
    // Nothing of the new table reached green's old one.
    assert_eq!(count(&pair, "late"), "200");
    // Starting again without the fix refuses: green's table still has the old rows.
    let mut again = pair.spawn("sync", &[]);
    let code = again.exit_code_within(Duration::from_secs(60));
    assert_ne!(code, 0, "{}", again.log_text());
    assert!(
        again.log_text().contains("\"public\".\"late\""),
        "{}",
        again.log_text()
    );

    pair.green.psql("app", "TRUNCATE late").unwrap();
    let mut sync = pair.sync(&[]);
    pair.blue
        .psql("app", "INSERT INTO late VALUES (1002, 3)")
        .unwrap();
    pair.converge(&["base", "late"], Duration::from_secs(60));
    assert_eq!(count(&pair, "late"), "3");
    assert!(sync.terminate());
}

/// `ALTER PUBLICATION pub DROP TABLE late`, writes to `late`, `ADD TABLE late` — first while
/// sync is down (refused at start), then while it runs (stopped within seconds, with no change
/// to the table in the stream at all). Before, both resumed and green silently missed the
/// updates made in between.
#[test]
fn a_table_taken_out_of_the_publication_and_put_back_stops_sync() {
    let pair = pair("fcrepub", "FOR TABLE base, late");
    let mut sync = pair.sync(&[]);
    pair.converge(&["base", "late"], Duration::from_secs(60));
    assert!(sync.terminate());
    // Three transactions: the update commits while the table is out of the publication.
    let out_and_back = |pair: &Pair| {
        for sql in [
            "ALTER PUBLICATION pub DROP TABLE late",
            "UPDATE late SET v = v + 1 WHERE id <= 10",
            "ALTER PUBLICATION pub ADD TABLE late",
            "UPDATE base SET v = v + 1",
        ] {
            pair.blue.psql("app", sql).unwrap();
        }
    };

    // While sync is down: refused at start.
    out_and_back(&pair);
    let mut refused = pair.spawn("sync", &[]);
    let code = refused.exit_code_within(Duration::from_secs(60));
    let log = refused.log_text();
    assert_eq!(code, 5, "{log}");
    assert!(
        log.contains("table \"public\".\"late\" left the publication and was added back"),
        "{log}"
    );
    pair.green.psql("app", "TRUNCATE late").unwrap();
    let mut sync = pair.sync(&[]);
    pair.converge(&["base", "late"], Duration::from_secs(60));

    // While sync runs: nothing of `late` is in the stream, the periodic check finds it.
    out_and_back(&pair);
    let code = sync.exit_code_within(Duration::from_secs(60));
    let log = sync.log_text();
    assert_eq!(code, 5, "{log}");
    assert!(
        log.contains("table \"public\".\"late\" left the publication and was added back"),
        "{log}"
    );
    pair.green.psql("app", "TRUNCATE late").unwrap();
    let mut sync = pair.sync(&[]);
    pair.converge(&["base", "late"], Duration::from_secs(60));
    assert_eq!(
        pair.green
            .psql("app", "SELECT sum(v) FROM late WHERE id <= 10")
            .unwrap(),
        "20"
    );

    // Taken out for good: sync stops saying green's copy no longer follows blue.
    pair.blue
        .psql("app", "ALTER PUBLICATION pub DROP TABLE late")
        .unwrap();
    let code = sync.exit_code_within(Duration::from_secs(60));
    let log = sync.log_text();
    assert_eq!(code, 5, "{log}");
    assert!(
        log.contains("table \"public\".\"late\" is no longer in the publication"),
        "{log}"
    );
    // The rest goes on.
    let mut sync = pair.sync(&[]);
    pair.blue.psql("app", "UPDATE base SET v = 9").unwrap();
    pair.converge(&["base"], Duration::from_secs(60));
    assert!(sync.terminate());
}
