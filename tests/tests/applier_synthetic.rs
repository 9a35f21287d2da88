//! The applier against a real green server, with transactions built by hand from Relation
//! descriptions: every DML kind, batching, unchanged TOAST, REPLICA IDENTITY FULL (duplicates,
//! NULLs, a type without `=`) and USING INDEX, TRUNCATE flags, hostile identifiers and a column
//! added mid-stream.

#[path = "support/applier.rs"]
mod support;

use std::sync::Arc;

use blueshift_applier::{ApplyError, Change, ErrorClass};
use blueshift_decoder::pgoutput::ReplicaIdentity;
use blueshift_decoder::Lsn;
use support::{applier, delete, full, green, insert, key, relation, tx, update, TOAST};

#[tokio::test]
async fn every_dml_kind_with_batching_and_unchanged_toast() {
    let (green, config) = green(
        "applier-dml",
        "dml",
        "CREATE TABLE items (id int PRIMARY KEY, name text, big text);
         CREATE TABLE nopk (n int, v text);",
    );
    let items = relation(
        16400,
        "public",
        "items",
        ReplicaIdentity::Default,
        &[("id", true), ("name", false), ("big", false)],
    );
    let nopk = relation(
        16401,
        "public",
        "nopk",
        ReplicaIdentity::Default,
        &[("n", false), ("v", false)],
    );
    let mut applier = applier(&config, "blueshift_dml_0").await;
    assert_eq!(applier.progress(), Lsn::INVALID);

    // 1000 inserts into a table without a key (batched: 256-row statements and the rest in
    // powers of two), interleaved with keyed inserts that break the batch.
    let big = "0123456789abcdef".repeat(500);
    let mut changes = Vec::new();
    for n in 0..1000 {
        let n = n.to_string();
        changes.push(insert(&nopk, &[Some(&n), Some("v")]));
        if n == "500" {
            changes.push(insert(&items, &[Some("1"), Some("a"), Some(&big)]));
            changes.push(insert(&items, &[Some("2"), Some("b"), None]));
        }
    }
    changes.push(insert(&items, &[Some("3"), Some("c"), Some("small")]));
    let outcome = applier
        .apply(&mut tx(0x1000, changes))
        .await
        .expect("inserts");
    assert!(!outcome.skipped);
    assert_eq!(outcome.rows.inserted, 1003);
    assert!(outcome.green_lsn.is_some_and(|l| !l.is_invalid()));
    assert_eq!(applier.progress(), Lsn(0x1000));

    // Update leaving the TOASTed value out; a key change (old key); a NULL; a delete.
    let changes = vec![
        update(&items, None, &[Some("1"), Some("a2"), TOAST]),
        update(
            &items,
            Some(key(&[Some("2"), None, None])),
            &[Some("20"), Some("b2"), None],
        ),
        update(&items, None, &[Some("3"), None, Some("small2")]),
        delete(&items, key(&[Some("20"), None, None])),
    ];
    let outcome = applier.apply(&mut tx(0x2000, changes)).await.expect("dml");
    assert_eq!(
        (
            outcome.rows.updated,
            outcome.rows.deleted,
            outcome.rows.inserted
        ),
        (3, 1, 0)
    );
    assert_eq!(
        green
            .psql("dml", "SELECT id, name, md5(big) = md5(repeat('0123456789abcdef', 500)) FROM items ORDER BY id")
            .unwrap(),
        "1|a2|t\n3||f"
    );
    assert_eq!(
        green
            .psql("dml", "SELECT big FROM items WHERE id = 3")
            .unwrap(),
        "small2"
    );
    assert_eq!(
        green
            .psql(
                "dml",
                "SELECT count(*), count(DISTINCT n), min(n), max(n) FROM nopk"
            )
            .unwrap(),
        "1000|1000|0|999"
    );
    applier.close().await;
}

#[tokio::test]
async fn replica_identity_full_and_using_index() {
    let (green, config) = green(
        "applier-full",
        "full",
        "CREATE TABLE dup (a int, b text, j json);
         INSERT INTO dup VALUES (1, 'x', '{\"k\": 1}'), (1, 'x', '{\"k\": 1}'), (2, NULL, NULL),
                                (3, 'z', '[1, 2]');
         CREATE TABLE byidx (id int NOT NULL, code text NOT NULL, v text);
         CREATE UNIQUE INDEX byidx_code ON byidx (code);
         INSERT INTO byidx VALUES (1, 'A', 'one'), (2, 'B', 'two');",
    );
    let dup = relation(
        16500,
        "public",
        "dup",
        ReplicaIdentity::Full,
        &[("a", true), ("b", true), ("j", true)],
    );
    let byidx = relation(
        16501,
        "public",
        "byidx",
        ReplicaIdentity::Index,
        &[("id", false), ("code", true), ("v", false)],
    );
    let mut applier = applier(&config, "blueshift_full_0").await;
    let changes = vec![
        // One of two identical rows.
        delete(&dup, full(&[Some("1"), Some("x"), Some("{\"k\": 1}")])),
        // NULL-safe match.
        update(
            &dup,
            Some(full(&[Some("2"), None, None])),
            &[Some("2"), Some("y"), Some("{}")],
        ),
        // A json column compared as text, and an unchanged TOAST value skipped in the match.
        update(
            &dup,
            Some(full(&[Some("3"), TOAST, Some("[1, 2]")])),
            &[Some("3"), TOAST, Some("[3]")],
        ),
        update(
            &byidx,
            Some(key(&[None, Some("A"), None])),
            &[Some("1"), Some("AA"), Some("uno")],
        ),
        update(&byidx, None, &[Some("2"), Some("B"), Some("dos")]),
    ];
    let outcome = applier.apply(&mut tx(0x10, changes)).await.expect("apply");
    assert_eq!((outcome.rows.updated, outcome.rows.deleted), (4, 1));
    assert_eq!(
        green
            .psql("full", "SELECT a, b, j FROM dup ORDER BY a, b")
            .unwrap(),
        "1|x|{\"k\": 1}\n2|y|{}\n3|z|[3]"
    );
    assert_eq!(
        green
            .psql("full", "SELECT id, code, v FROM byidx ORDER BY id")
            .unwrap(),
        "1|AA|uno\n2|B|dos"
    );
    // The last duplicate, then a delete that matches nothing.
    applier
        .apply(&mut tx(
            0x20,
            vec![delete(
                &dup,
                full(&[Some("1"), Some("x"), Some("{\"k\": 1}")]),
            )],
        ))
        .await
        .expect("second duplicate");
    let err = applier
        .apply(&mut tx(
            0x30,
            vec![delete(
                &dup,
                full(&[Some("1"), Some("x"), Some("{\"k\": 1}")]),
            )],
        ))
        .await
        .expect_err("no row left");
    assert!(matches!(err, ApplyError::RowNotFound { .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Definite);
    let text = err.to_string();
    assert!(
        text.contains("\"public.dup\"") && text.contains("diverged"),
        "{text}"
    );
    assert!(!text.contains("{\"k\""), "no row values in errors: {text}");
    assert_eq!(applier.progress(), Lsn(0x20));
    assert_eq!(green.psql("full", "SELECT count(*) FROM dup").unwrap(), "2");
}

#[tokio::test]
async fn truncate_with_cascade_and_restart_identity() {
    let (green, config) = green(
        "applier-truncate",
        "trunc",
        "CREATE TABLE parent (id int PRIMARY KEY);
         CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent);
         CREATE TABLE seq_t (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text);
         CREATE TABLE other (id int);
         INSERT INTO parent VALUES (1); INSERT INTO child VALUES (1, 1);
         INSERT INTO seq_t (v) VALUES ('a'), ('b'); INSERT INTO other VALUES (1);",
    );
    let parent = relation(
        16600,
        "public",
        "parent",
        ReplicaIdentity::Default,
        &[("id", true)],
    );
    let seq_t = relation(
        16601,
        "public",
        "seq_t",
        ReplicaIdentity::Default,
        &[("id", true), ("v", false)],
    );
    let other = relation(
        16602,
        "public",
        "other",
        ReplicaIdentity::Default,
        &[("id", false)],
    );
    let child = relation(
        16603,
        "public",
        "child",
        ReplicaIdentity::Default,
        &[("id", true), ("parent_id", false)],
    );
    let mut applier = applier(&config, "blueshift_trunc_0").await;
    // Blue truncated parent with CASCADE but sent only parent: green never cascades to a table
    // blue did not name. Child's foreign key makes it a change green refuses, naming child.
    let err = applier
        .apply(&mut tx(
            0x30,
            vec![Change::Truncate {
                relations: vec![Arc::clone(&parent)],
                cascade: true,
                restart_identity: false,
            }],
        ))
        .await
        .expect_err("child references parent");
    assert!(
        matches!(&err, ApplyError::TruncateReferenced { referencing, .. }
            if referencing.len() == 1 && referencing[0].table == "public.child"
                && referencing[0].referenced == "public.parent"
                && referencing[0].constraint == "child_parent_id_fkey"),
        "{err:?}"
    );
    assert!(err.is_blocked(), "{err}");
    assert!(err.to_string().contains("never with CASCADE"), "{err}");
    assert_eq!(
        green
            .psql(
                "trunc",
                "SELECT (SELECT count(*) FROM parent), (SELECT count(*) FROM child)"
            )
            .unwrap(),
        "1|1",
        "nothing truncated"
    );
    let changes = vec![
        Change::Truncate {
            relations: vec![Arc::clone(&parent), Arc::clone(&child)],
            cascade: true,
            restart_identity: false,
        },
        Change::Truncate {
            relations: vec![Arc::clone(&seq_t), Arc::clone(&other)],
            cascade: false,
            restart_identity: true,
        },
        // Blue's identity value wins over green's GENERATED ALWAYS.
        insert(&seq_t, &[Some("7"), Some("seven")]),
    ];
    let outcome = applier.apply(&mut tx(0x40, changes)).await.expect("apply");
    assert_eq!((outcome.rows.truncated, outcome.rows.inserted), (4, 1));
    assert_eq!(
        green
            .psql(
                "trunc",
                "SELECT (SELECT count(*) FROM parent), (SELECT count(*) FROM child), \
                 (SELECT count(*) FROM other)"
            )
            .unwrap(),
        "0|0|0"
    );
    // RESTART IDENTITY: green's own next identity value starts over.
    assert_eq!(
        green
            .psql("trunc", "INSERT INTO seq_t (v) VALUES ('new') RETURNING id")
            .unwrap(),
        "1"
    );

    // Without RESTART IDENTITY, green's identity goes on.
    applier
        .apply(&mut tx(
            0x50,
            vec![Change::Truncate {
                relations: vec![Arc::clone(&seq_t)],
                cascade: false,
                restart_identity: false,
            }],
        ))
        .await
        .expect("apply");
    assert_eq!(
        green
            .psql(
                "trunc",
                "INSERT INTO seq_t (v) VALUES ('next') RETURNING id"
            )
            .unwrap(),
        "2"
    );
}

#[tokio::test]
async fn hostile_identifiers_are_quoted() {
    let (green, config) = green(
        "applier-hostile",
        "hostile",
        r#"CREATE SCHEMA "Sch""ema";
           CREATE TABLE "Sch""ema"."x; DROP TABLE y" ("Mixed Case" int PRIMARY KEY, "we""ird" text, "ünï cödé" text);
           CREATE TABLE y (id int);"#,
    );
    let hostile = relation(
        16700,
        "Sch\"ema",
        "x; DROP TABLE y",
        ReplicaIdentity::Default,
        &[
            ("Mixed Case", true),
            ("we\"ird", false),
            ("ünï cödé", false),
        ],
    );
    let mut applier = applier(&config, "blueshift_hostile_0").await;
    let changes = vec![
        insert(
            &hostile,
            &[Some("1"), Some("'); DROP TABLE y; --"), Some("ü")],
        ),
        insert(&hostile, &[Some("2"), Some("$1"), None]),
        update(&hostile, None, &[Some("1"), Some("\"quoted\""), Some("ß")]),
        delete(&hostile, key(&[Some("2"), None, None])),
    ];
    applier.apply(&mut tx(0x60, changes)).await.expect("apply");
    assert_eq!(
        green
            .psql("hostile", r#"SELECT * FROM "Sch""ema"."x; DROP TABLE y""#)
            .unwrap(),
        "1|\"quoted\"|ß"
    );
    assert_eq!(
        green.psql("hostile", "SELECT count(*) FROM y").unwrap(),
        "0",
        "table y survives"
    );
}

#[tokio::test]
async fn column_added_mid_stream() {
    let (green, config) = green(
        "applier-grow",
        "grow",
        "CREATE TABLE grow (id int PRIMARY KEY, a text, b text DEFAULT 'green default');",
    );
    let v1 = relation(
        16800,
        "public",
        "grow",
        ReplicaIdentity::Default,
        &[("id", true), ("a", false)],
    );
    let v2 = relation(
        16800,
        "public",
        "grow",
        ReplicaIdentity::Default,
        &[("id", true), ("a", false), ("b", false)],
    );
    let mut applier = applier(&config, "blueshift_grow_0").await;
    let changes = vec![
        insert(&v1, &[Some("1"), Some("one")]),
        insert(&v2, &[Some("2"), Some("two"), Some("b2")]),
        insert(&v1, &[Some("3"), Some("three")]),
        update(&v2, None, &[Some("1"), Some("uno"), None]),
    ];
    applier.apply(&mut tx(0x70, changes)).await.expect("apply");
    // A later transaction with equal but distinct descriptions (as a spill reads back).
    let v2_again = relation(
        16800,
        "public",
        "grow",
        ReplicaIdentity::Default,
        &[("id", true), ("a", false), ("b", false)],
    );
    applier
        .apply(&mut tx(
            0x80,
            vec![update(
                &v2_again,
                None,
                &[Some("3"), Some("tres"), Some("b3")],
            )],
        ))
        .await
        .expect("apply");
    assert_eq!(
        green
            .psql(
                "grow",
                "SELECT id, a, coalesce(b, 'NULL') FROM grow ORDER BY id"
            )
            .unwrap(),
        "1|uno|NULL\n2|two|b2\n3|tres|b3"
    );
}
