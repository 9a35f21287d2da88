//! Exactly-once and atomicity of the applier against a real green server: re-delivery to a new
//! applier on the same origin is skipped; a transaction that fails mid-way (missing table or
//! key column, row not found, constraint, bad value, malformed row, spill read error) leaves green
//! and the origin's progress untouched; a spilled transaction is applied, and read only once;
//! binary values go in the binary format.

#[path = "support/applier.rs"]
mod support;

use std::sync::Arc;

use blueshift_applier::{Applier, ApplierOptions, ApplyError, Change, Changes, ErrorClass};
use blueshift_decoder::pgoutput::{ColumnValue, ReplicaIdentity, TupleData};
use blueshift_decoder::Lsn;
use bytes::Bytes;
use support::{applier, green, insert, relation, tx, update};

/// A failing transaction and the check of its error.
type Failing = (Vec<Change>, fn(&ApplyError) -> bool);

#[tokio::test]
async fn exactly_once_and_failed_transactions() {
    let (green, config) = green(
        "applier-once",
        "once",
        "CREATE TABLE t (id int PRIMARY KEY, v text);",
    );
    let t = relation(
        16900,
        "public",
        "t",
        ReplicaIdentity::Default,
        &[("id", true), ("v", false)],
    );
    let t_more = relation(
        16900,
        "public",
        "t",
        ReplicaIdentity::Default,
        // A key column green lacks (a non-key one would simply not be carried).
        &[("id", true), ("v", false), ("missing", true)],
    );
    let gone = relation(
        16901,
        "public",
        "gone",
        ReplicaIdentity::Default,
        &[("id", true)],
    );
    let origin = "blueshift_once_0";

    let mut first = applier(&config, origin).await;
    let outcome = first
        .apply(&mut tx(0x100, vec![insert(&t, &[Some("1"), Some("a")])]))
        .await
        .expect("apply");
    assert!(!outcome.skipped);
    first.close().await;

    // A new applier with the same origin: the transaction is already on green.
    let mut second = applier(&config, origin).await;
    assert_eq!(second.progress(), Lsn(0x100));
    assert_eq!(second.origin_progress().await.unwrap(), Lsn(0x100));
    for lsn in [0x100, 0x80] {
        let outcome = second
            .apply(&mut tx(lsn, vec![insert(&t, &[Some("1"), Some("a")])]))
            .await
            .expect("skipped, not a duplicate key");
        assert!(outcome.skipped);
        assert_eq!(outcome.green_lsn, None);
        assert_eq!(outcome.rows.rows(), 0);
    }

    // Failures mid-way: green keeps nothing of the transaction; progress does not move.
    let failing: Vec<Failing> = vec![
        (
            vec![
                insert(&t, &[Some("2"), Some("b")]),
                insert(&t_more, &[Some("3"), Some("c"), None]),
            ],
            |e| matches!(e, ApplyError::MissingKeyColumn { column, table } if column.as_str() == "missing" && table.as_str() == "public.t"),
        ),
        (
            vec![
                insert(&t, &[Some("2"), Some("b")]),
                insert(&gone, &[Some("1")]),
            ],
            |e| matches!(e, ApplyError::MissingTable { table } if table.as_str() == "public.gone"),
        ),
        (
            vec![
                insert(&t, &[Some("2"), Some("b")]),
                update(&t, None, &[Some("99"), Some("x")]),
            ],
            |e| matches!(e, ApplyError::RowNotFound { .. }),
        ),
        (
            vec![
                insert(&t, &[Some("2"), Some("b")]),
                insert(&t, &[Some("1"), Some("dup")]),
            ],
            |e| e.sqlstate() == Some("23505") && e.class() == ErrorClass::Definite,
        ),
        (vec![insert(&t, &[Some("not a number"), Some("b")])], |e| {
            e.sqlstate() == Some("22P02")
        }),
        // Pipelined: the first failure in blue's order is reported, not the statements after
        // it that failed only because the transaction was aborted.
        (
            vec![
                update(&t, None, &[Some("99"), Some("x")]),
                update(&t, None, &[Some("1"), Some("y")]),
                insert(&t, &[Some("5"), Some("e")]),
                update(&t, None, &[Some("5"), Some("f")]),
            ],
            |e| matches!(e, ApplyError::RowNotFound { .. }),
        ),
        (
            vec![
                update(&t, None, &[Some("1"), Some("y")]),
                insert(&t, &[Some("1"), Some("dup")]),
                update(&t, None, &[Some("1"), Some("z")]),
                insert(&t, &[Some("6"), Some("f")]),
            ],
            |e| e.sqlstate() == Some("23505"),
        ),
        (vec![insert(&t, &[Some("2")])], |e| {
            matches!(
                e,
                ApplyError::RowShape {
                    expected: 2,
                    got: 1,
                    ..
                }
            )
        }),
    ];
    for (n, (changes, expected)) in failing.into_iter().enumerate() {
        let err = second
            .apply(&mut tx(0x200 + n as u64, changes))
            .await
            .expect_err("fails");
        assert!(expected(&err), "case {n}: {err:?}");
        assert!(!err.to_string().is_empty());
        assert_eq!(second.progress(), Lsn(0x100), "case {n}");
        assert_eq!(second.origin_progress().await.unwrap(), Lsn(0x100));
        assert_eq!(
            green
                .psql("once", "SELECT id, v FROM t ORDER BY id")
                .unwrap(),
            "1|a"
        );
    }

    // The applier is still usable, and begin_and_apply + rollback leaves nothing.
    let staged = second
        .begin_and_apply(&mut tx(0x300, vec![insert(&t, &[Some("3"), Some("c")])]))
        .await
        .expect("staged");
    assert!(!staged.skipped);
    assert_eq!(staged.rows.inserted, 1);
    assert!(matches!(
        second.begin_and_apply(&mut tx(0x301, vec![])).await,
        Err(ApplyError::Misuse(_))
    ));
    second.rollback().await.expect("rollback");
    assert!(matches!(second.commit().await, Err(ApplyError::Misuse(_))));
    assert_eq!(second.origin_progress().await.unwrap(), Lsn(0x100));
    second
        .begin_and_apply(&mut tx(0x300, vec![insert(&t, &[Some("3"), Some("c")])]))
        .await
        .expect("staged again");
    let outcome = second.commit().await.expect("commit");
    assert_eq!(outcome.rows.inserted, 1);
    assert_eq!(second.origin_progress().await.unwrap(), Lsn(0x300));
    assert_eq!(
        green
            .psql("once", "SELECT id, v FROM t ORDER BY id")
            .unwrap(),
        "1|a\n3|c"
    );
    // The origin's progress is green's own record.
    assert_eq!(
        green
            .psql(
                "once",
                "SELECT pg_replication_origin_progress('blueshift_once_0', true)"
            )
            .unwrap(),
        "0/300"
    );

    // Two appliers cannot share one origin at the same time.
    let err = Applier::connect(&config, ApplierOptions::new(origin))
        .await
        .expect_err("origin in use");
    assert_eq!(err.sqlstate(), Some("55006"), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Transient);
    let err = Applier::connect(&config, ApplierOptions::new("x".repeat(64)))
        .await
        .expect_err("name too long");
    assert!(err.to_string().contains("64 bytes"), "{err}");
}

/// A spill file stand-in: changes read back one by one, once, optionally failing at the end.
#[derive(Debug)]
struct Spill {
    all: Vec<Change>,
    changes: std::vec::IntoIter<Change>,
    len: u64,
    fail_at_end: bool,
}

impl Spill {
    fn boxed(changes: Vec<Change>, fail_at_end: bool) -> Changes {
        Changes::Spilled(Box::new(Spill {
            len: changes.len() as u64,
            all: changes.clone(),
            changes: changes.into_iter(),
            fail_at_end,
        }))
    }
}

impl blueshift_applier::SpilledChanges for Spill {
    fn next_change(&mut self) -> std::io::Result<Option<Change>> {
        match self.changes.next() {
            None if self.fail_at_end => Err(std::io::Error::other("disk on fire")),
            next => Ok(next),
        }
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn rewind(&mut self) -> std::io::Result<()> {
        self.changes = self.all.clone().into_iter();
        Ok(())
    }

    fn relations(&self) -> Vec<std::sync::Arc<blueshift_decoder::relation::RelationInfo>> {
        blueshift_applier::Changes::InMemory(self.changes.clone().collect()).relations()
    }
}

#[tokio::test]
async fn spilled_transactions_and_binary_values() {
    let (green, config) = green(
        "applier-spill",
        "spill",
        "CREATE TABLE t (id int PRIMARY KEY, v text);",
    );
    let t = relation(
        17000,
        "public",
        "t",
        ReplicaIdentity::Default,
        &[("id", true), ("v", false)],
    );
    let mut applier = applier(&config, "blueshift_spill_0").await;

    let mut changes: Vec<Change> = (1..=600)
        .map(|n| insert(&t, &[Some(&n.to_string()), Some("spilled")]))
        .collect();
    changes.push(update(&t, None, &[Some("1"), Some("first")]));
    let mut spilled = tx(0x10, vec![]);
    spilled.changes = Spill::boxed(changes, false);
    let outcome = applier.apply(&mut spilled).await.expect("spilled apply");
    // A spilled transaction is folded: row 1's insert and update are one insert of its last
    // image (the rows below show `first`).
    assert_eq!((outcome.rows.inserted, outcome.rows.updated), (600, 0));

    // A spill read error: nothing of the transaction stays.
    let mut broken = tx(0x20, vec![]);
    broken.changes = Spill::boxed(vec![insert(&t, &[Some("700"), Some("x")])], true);
    let err = applier.apply(&mut broken).await.expect_err("spill error");
    assert!(matches!(err, ApplyError::Spill { .. }), "{err:?}");
    assert!(err.to_string().contains("0/20"), "{err}");

    // A spill is read once: applying it again after a rollback is refused, not half-applied.
    let mut once = tx(0x30, vec![]);
    once.changes = Spill::boxed(vec![insert(&t, &[Some("800"), Some("x")])], false);
    applier
        .begin_and_apply(&mut once)
        .await
        .expect("first read");
    applier.rollback().await.expect("rollback");
    let err = applier
        .begin_and_apply(&mut once)
        .await
        .expect_err("second read");
    assert!(matches!(err, ApplyError::Spill { .. }), "{err:?}");

    // Binary values (blue and green types equal): int4 and text send formats.
    let binary = |bytes: &[u8]| ColumnValue::Binary(Bytes::copy_from_slice(bytes));
    let mut tx_binary = tx(
        0x40,
        vec![
            Change::Insert {
                relation: Arc::clone(&t),
                new: TupleData {
                    columns: vec![binary(&[0, 0, 3, 0xe8]), binary(b"binary")],
                },
            },
            Change::Update {
                relation: Arc::clone(&t),
                old: None,
                new: TupleData {
                    columns: vec![binary(&[0, 0, 0, 2]), ColumnValue::Null],
                },
            },
        ],
    );
    applier.apply(&mut tx_binary).await.expect("binary apply");
    assert_eq!(
        green
            .psql(
                "spill",
                "SELECT count(*), min(id), max(id), count(v) FILTER (WHERE v = 'spilled') FROM t"
            )
            .unwrap(),
        "601|1|1000|598"
    );
    assert_eq!(
        green
            .psql(
                "spill",
                "SELECT id, coalesce(v, 'NULL') FROM t WHERE id IN (1, 2, 1000) ORDER BY id"
            )
            .unwrap(),
        "1|first\n2|NULL\n1000|binary"
    );
    assert_eq!(applier.origin_progress().await.unwrap(), Lsn(0x40));
}

/// A transaction with more UPDATEs and DELETEs than one round trip takes (a catch-up group)
/// sends them plain and reads their row counts before its COMMIT: a row green lacks still fails
/// the whole transaction, wherever it is in it, and nothing of it lands.
#[tokio::test]
async fn large_transactions_check_every_row_before_their_commit() {
    use support::{delete, key};
    let (green, config) = green(
        "applier-twotrip",
        "twotrip",
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 20) g;",
    );
    let t = relation(
        16910,
        "public",
        "t",
        ReplicaIdentity::Default,
        &[("id", true), ("v", false)],
    );
    let mut applier = applier(&config, "blueshift_twotrip_0").await;
    let updates = |ids: std::ops::RangeInclusive<u32>| -> Vec<Change> {
        ids.map(|id| {
            let id = id.to_string();
            update(&t, None, &[Some(id.as_str()), Some("new")])
        })
        .collect()
    };
    let before = green
        .psql(
            "twotrip",
            "SELECT string_agg(id || '=' || v, ',' ORDER BY id) FROM t",
        )
        .unwrap();
    let failing: Vec<Vec<Change>> = vec![
        // The missing row last, first, and a DELETE of one.
        {
            let mut c = updates(1..=8);
            c.extend(updates(99..=99));
            c
        },
        {
            let mut c = updates(99..=99);
            c.extend(updates(1..=8));
            c
        },
        {
            let mut c = updates(1..=8);
            c.push(delete(&t, key(&[Some("98"), None])));
            c.extend(updates(9..=10));
            c
        },
    ];
    for (n, changes) in failing.into_iter().enumerate() {
        let err = applier
            .apply(&mut tx(0x100 + n as u64, changes))
            .await
            .expect_err("a row green lacks");
        assert!(
            matches!(err, ApplyError::RowNotFound { .. }),
            "case {n}: {err:?}"
        );
        assert_eq!(err.class(), ErrorClass::Definite);
        assert_eq!(applier.progress(), Lsn::INVALID, "case {n}");
        assert_eq!(applier.origin_progress().await.unwrap(), Lsn::INVALID);
        assert_eq!(
            green
                .psql(
                    "twotrip",
                    "SELECT string_agg(id || '=' || v, ',' ORDER BY id) FROM t"
                )
                .unwrap(),
            before,
            "case {n}: nothing of the transaction landed"
        );
    }
    // The same shapes with every row there: committed, counted, recorded.
    let mut changes = updates(1..=12);
    changes.push(delete(&t, key(&[Some("20"), None])));
    changes.push(insert(&t, &[Some("21"), Some("added")]));
    let outcome = applier
        .apply(&mut tx(0x200, changes))
        .await
        .expect("applied");
    assert_eq!(
        (
            outcome.rows.updated,
            outcome.rows.deleted,
            outcome.rows.inserted
        ),
        (12, 1, 1)
    );
    assert!(outcome.green_lsn.is_some());
    assert_eq!(applier.origin_progress().await.unwrap(), Lsn(0x200));
    assert_eq!(
        green
            .psql(
                "twotrip",
                "SELECT count(*) FILTER (WHERE v = 'new') || '/' || count(*) FROM t"
            )
            .unwrap(),
        "12/20"
    );
    // Re-delivered: skipped, nothing twice.
    let again = applier
        .apply(&mut tx(0x200, updates(1..=6)))
        .await
        .expect("skipped");
    assert!(again.skipped);
    applier.close().await;
}
