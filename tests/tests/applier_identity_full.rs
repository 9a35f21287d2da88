//! REPLICA IDENTITY FULL against a real green (issue 15): an UPDATE or DELETE finds its row
//! through an index green has whose columns the old row covers, and matches the row by its exact
//! image, so that among rows equal but not identical (`1.0` and `1.00`, `0` and `-0`, `'A'` and
//! `'a'` under `citext`) it changes the one blue changed; among identical duplicates exactly one.

#[path = "support/applier.rs"]
mod support;

use std::time::Duration;

use blueshift_applier::ApplyError;
use blueshift_decoder::pgoutput::ReplicaIdentity;
use blueshift_tests::eventually;
use support::{applier, delete, full, green, relation, tx, update};

/// Green's counters of scans on `table` and on its index `index`: `seq|idx`.
fn scans(green: &blueshift_tests::Cluster, table: &str, index: &str) -> String {
    green
        .psql(
            "ri",
            &format!(
                "SELECT t.seq_scan || '|' || i.idx_scan FROM pg_stat_user_tables t, \
                 pg_stat_user_indexes i WHERE t.relname = '{table}' AND i.indexrelname = '{index}'"
            ),
        )
        .expect("statistics")
}

#[tokio::test]
async fn equal_but_not_identical_rows_and_duplicates_through_an_index() {
    let (green, config) = green(
        "applier-ri-full",
        "ri",
        "CREATE EXTENSION citext;
         CREATE TABLE m (k int, n numeric, f float8, c citext);
         CREATE INDEX m_k_c ON m (k, c);
         INSERT INTO m VALUES (1, 1.0, 0, 'a'), (1, 1.00, '-0', 'a'), (1, 1.0, 0, 'a'),
                              (2, 5, 1, 'A'), (2, 5, 1, 'a'), (NULL, 7, 2, 'z');
         CREATE TABLE plain (k int, v text);
         INSERT INTO plain VALUES (1, 'x'), (1, 'x');",
    );
    let m = relation(
        16600,
        "public",
        "m",
        ReplicaIdentity::Full,
        &[("k", true), ("n", true), ("f", true), ("c", true)],
    );
    let plain = relation(
        16601,
        "public",
        "plain",
        ReplicaIdentity::Full,
        &[("k", true), ("v", true)],
    );
    let before = scans(&green, "m", "m_k_c");
    let mut applier = applier(&config, "blueshift_ri_0").await;
    let changes = vec![
        // The row holding 1.00 and -0, not the first of the equal ones (1.0, 0).
        update(
            &m,
            Some(full(&[Some("1"), Some("1.00"), Some("-0"), Some("a")])),
            &[Some("1"), Some("1.00"), Some("-0"), Some("b")],
        ),
        // One of two identical rows, exactly one.
        delete(&m, full(&[Some("1"), Some("1.0"), Some("0"), Some("a")])),
        // 'a', not the 'A' citext holds equal to it.
        update(
            &m,
            Some(full(&[Some("2"), Some("5"), Some("1"), Some("a")])),
            &[Some("2"), Some("5"), Some("1"), Some("lower")],
        ),
        // A NULL in the index's column: found without the index, NULL matching NULL.
        update(
            &m,
            Some(full(&[None, Some("7"), Some("2"), Some("z")])),
            &[Some("3"), Some("7"), Some("2"), Some("z")],
        ),
        // A table without an index: the whole table is read, one duplicate changes.
        update(
            &plain,
            Some(full(&[Some("1"), Some("x")])),
            &[Some("1"), Some("y")],
        ),
    ];
    let outcome = applier.apply(&mut tx(0x10, changes)).await.expect("apply");
    assert_eq!((outcome.rows.updated, outcome.rows.deleted), (4, 1));
    assert_eq!(
        green
            .psql("ri", "SELECT k, v FROM plain ORDER BY v")
            .unwrap(),
        "1|x\n1|y"
    );
    // A row equal to one green holds but not identical to any (1.000) is not there: the
    // transaction fails and nothing of it stays.
    let err = applier
        .apply(&mut tx(
            0x20,
            vec![
                update(
                    &plain,
                    Some(full(&[Some("1"), Some("y")])),
                    &[Some("1"), Some("z")],
                ),
                delete(&m, full(&[Some("1"), Some("1.000"), Some("0"), Some("a")])),
            ],
        ))
        .await
        .expect_err("no identical row");
    assert!(matches!(err, ApplyError::RowNotFound { .. }), "{err}");
    assert_eq!(
        green
            .psql("ri", "SELECT k, v FROM plain ORDER BY v")
            .unwrap(),
        "1|x\n1|y",
        "rolled back whole"
    );
    applier.close().await;
    // The three changes to `m` whose index columns hold values went through the index (the
    // failed DELETE too); only the one with a NULL in them read the table. The counters reach
    // the statistics once the applier's backend has ended.
    let (seq_before, idx_before) = before.split_once('|').expect("seq|idx");
    let (seq_before, idx_before): (i64, i64) =
        (seq_before.parse().unwrap(), idx_before.parse().unwrap());
    eventually(Duration::from_secs(10), || {
        let now = scans(&green, "m", "m_k_c");
        let (seq, idx) = now.split_once('|').expect("seq|idx");
        let (seq, idx): (i64, i64) = (seq.parse()?, idx.parse()?);
        anyhow::ensure!(
            idx - idx_before >= 4 && seq - seq_before == 1,
            "scans on m: {seq_before}|{idx_before} before, {now} now"
        );
        Ok(())
    })
    .expect("the index finds the rows");
    assert_eq!(
        green
            .psql(
                "ri",
                "SELECT k, n::text, f::text, c FROM m ORDER BY k, n::text, f::text, c::text"
            )
            .unwrap(),
        "1|1.0|0|a\n1|1.00|-0|b\n2|5|1|A\n2|5|1|lower\n3|7|2|z"
    );
}
