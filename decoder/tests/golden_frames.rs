//! Golden frames: `pgoutput` messages captured from real PostgreSQL 15 and 18 servers by
//! `scripts/capture-golden`, decoded field by field. This file: properties of every capture and
//! the plain (not streamed) transactions; `golden_streams.rs` has the streamed ones.
//!
//! Values the workload fixes (names, columns, key flags, text values, flags, prefixes, GIDs,
//! the origin LSN and timestamp) are asserted exactly; LSNs, xids, OIDs and timestamps the
//! server chose are asserted to be consistent with each other. Every frame must encode back to
//! the same bytes. Format reference:
//! <https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html>.

mod golden_support;

use blueshift_decoder::pgoutput::{
    decode_message, encode, ColumnValue, InsertBody, OldTuple, PgOutputMessage, ProtocolVersion,
    ReplicaIdentity, TupleData,
};
use blueshift_decoder::relation::RelationCache;
use blueshift_decoder::{Lsn, Oid};
use bytes::{Bytes, BytesMut};
use golden_support::{
    assert_begin_commit, assert_recent, col, decode, kv_columns, load, names, relation, tags, text,
    tuple, INT4, NUMERIC, TEXT, VARCHAR,
};

use PgOutputMessage as M;

#[test]
fn every_golden_frame_encodes_back_to_its_bytes() {
    let mut frames = 0;
    for name in names() {
        let capture = load(&name);
        for (i, d) in decode(&capture).iter().enumerate() {
            let mut out = BytesMut::new();
            encode(&d.message, d.ctx.in_stream, &mut out)
                .unwrap_or_else(|e| panic!("{name} frame {i}: {e}"));
            assert_eq!(out.freeze(), d.frame, "{name} frame {i}");
            // The stateless decoder gives the same message in the same context.
            assert_eq!(decode_message(d.frame.clone(), d.ctx).unwrap(), d.message);
            frames += 1;
        }
    }
    assert!(frames > 4000, "only {frames} golden frames");
}

#[test]
fn captures_cover_every_message_type_and_both_servers() {
    let mut seen = std::collections::BTreeSet::new();
    for name in names() {
        let capture = load(&name);
        let major = if capture.version == ProtocolVersion::V4 {
            "PostgreSQL 18."
        } else {
            "PostgreSQL 15."
        };
        assert!(
            capture.server.starts_with(major),
            "{name}: {}",
            capture.server
        );
        seen.extend(decode(&capture).iter().map(|d| d.message.name()));
    }
    let all = [
        "Begin",
        "Message",
        "Commit",
        "Origin",
        "Relation",
        "Type",
        "Insert",
        "Update",
        "Delete",
        "Truncate",
        "Stream Start",
        "Stream Stop",
        "Stream Commit",
        "Stream Abort",
        "Begin Prepare",
        "Prepare",
        "Commit Prepared",
        "Rollback Prepared",
        "Stream Prepare",
    ];
    for name in all {
        assert!(seen.contains(name), "no golden {name} message");
    }
    assert_eq!(seen.len(), all.len());
}

#[test]
fn changes_refer_to_described_relations_with_matching_column_counts() {
    for name in names() {
        let capture = load(&name);
        let mut cache = RelationCache::new();
        for (i, d) in decode(&capture).iter().enumerate() {
            cache.observe(&d.message);
            let (oid, tuples): (Oid, Vec<&TupleData>) = match &d.message {
                M::Insert(m) => (m.relation, vec![&m.new]),
                M::Update(m) => (
                    m.relation,
                    m.old.iter().map(OldTuple::tuple).chain([&m.new]).collect(),
                ),
                M::Delete(m) => (m.relation, vec![m.old.tuple()]),
                M::Truncate(m) => {
                    for oid in &m.relations {
                        cache.require(*oid).unwrap();
                    }
                    continue;
                }
                _ => continue,
            };
            let info = cache
                .require(oid)
                .unwrap_or_else(|e| panic!("{name} frame {i}: {e}"));
            for t in tuples {
                assert_eq!(t.columns.len(), info.columns().len(), "{name} frame {i}");
            }
        }
    }
}

#[test]
fn column_values_and_message_content_are_slices_of_the_frame() {
    for name in ["v3_dml", "v3_message", "v3_binary"] {
        for d in decode(&load(name)) {
            let range = d.frame.as_ptr_range();
            let mut values: Vec<&Bytes> = Vec::new();
            match &d.message {
                M::Insert(m) => values.extend(m.new.columns.iter().filter_map(ColumnValue::bytes)),
                M::Message(m) => values.push(&m.content),
                _ => {}
            }
            for v in values {
                assert!(range.contains(&v.as_ptr()), "{name}: value copied");
            }
        }
    }
}

#[test]
fn v1_dml() {
    let capture = load("v1_dml");
    assert_eq!(capture.version, ProtocolVersion::V1);
    let d = decode(&capture);
    assert_eq!(tags(&d), "BRIUDC");
    assert_begin_commit(&d[0].message, &d[5].message);
    let kv = relation(
        &d[1].message,
        None,
        "kv",
        ReplicaIdentity::Default,
        kv_columns(),
    );
    assert_eq!(
        d[2].message,
        M::Insert(InsertBody {
            xid: None,
            relation: kv,
            new: tuple(vec![text("40"), text("v1")]),
        })
    );
    let M::Update(u) = &d[3].message else {
        panic!()
    };
    assert_eq!((u.xid, u.relation, &u.old), (None, kv, &None));
    assert_eq!(u.new, tuple(vec![text("40"), text("one")]));
    let M::Delete(del) = &d[4].message else {
        panic!()
    };
    assert_eq!((del.xid, del.relation), (None, kv));
    assert_eq!(
        del.old,
        OldTuple::Key(tuple(vec![text("40"), ColumnValue::Null]))
    );
    let M::Begin(b) = &d[0].message else { panic!() };
    assert_recent(b.commit_time);
}

#[test]
fn v3_dml_insert_update_key_change_delete() {
    let d = decode(&load("v3_dml"));
    assert_eq!(tags(&d), "BRIIUUDC");
    assert_begin_commit(&d[0].message, &d[7].message);
    let kv = relation(
        &d[1].message,
        None,
        "kv",
        ReplicaIdentity::Default,
        kv_columns(),
    );
    let inserts: Vec<_> = d[2..4]
        .iter()
        .map(|x| match &x.message {
            M::Insert(i) if i.relation == kv && i.xid.is_none() => i.new.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        inserts,
        [
            tuple(vec![text("1"), text("one")]),
            tuple(vec![text("2"), ColumnValue::Null])
        ]
    );
    // A non-key update: no old tuple.
    let M::Update(u) = &d[4].message else {
        panic!()
    };
    assert_eq!((u.xid, u.relation, &u.old), (None, kv, &None));
    assert_eq!(u.new, tuple(vec![text("1"), text("uno")]));
    // The key changed: the old key comes as `K`, non-key columns NULL.
    let M::Update(u) = &d[5].message else {
        panic!()
    };
    assert_eq!((u.xid, u.relation), (None, kv));
    assert_eq!(
        u.old,
        Some(OldTuple::Key(tuple(vec![text("2"), ColumnValue::Null])))
    );
    assert_eq!(u.new, tuple(vec![text("10"), ColumnValue::Null]));
    let M::Delete(del) = &d[6].message else {
        panic!()
    };
    assert_eq!((del.xid, del.relation), (None, kv));
    assert_eq!(
        del.old,
        OldTuple::Key(tuple(vec![text("10"), ColumnValue::Null]))
    );
}

#[test]
fn v3_identity_full_index_and_nothing() {
    let d = decode(&load("v3_identity"));
    assert_eq!(tags(&d), "BRIUDRIUDRIC");
    assert_begin_commit(&d[0].message, &d[11].message);
    let mut cache = RelationCache::new();
    d.iter().for_each(|x| cache.observe(&x.message));

    // REPLICA IDENTITY FULL: every column is flagged as key; old rows come whole as `O`.
    let full = relation(
        &d[1].message,
        None,
        "full_row",
        ReplicaIdentity::Full,
        vec![
            col(true, "id", INT4, -1),
            col(true, "v", VARCHAR, 20 + 4),
            col(true, "amount", NUMERIC, ((10 << 16) | 2) + 4),
        ],
    );
    assert_eq!(cache.get(full).unwrap().key_columns(), &[0, 1, 2]);
    let row_a = tuple(vec![text("1"), text("a"), text("12.50")]);
    let row_b = tuple(vec![text("1"), text("b"), text("12.50")]);
    let M::Insert(i) = &d[2].message else {
        panic!()
    };
    assert_eq!((i.xid, i.relation, &i.new), (None, full, &row_a));
    let M::Update(u) = &d[3].message else {
        panic!()
    };
    assert_eq!((u.xid, u.relation), (None, full));
    assert_eq!(u.old, Some(OldTuple::Full(row_a)));
    assert_eq!(u.new, row_b);
    let M::Delete(del) = &d[4].message else {
        panic!()
    };
    assert_eq!((del.xid, del.relation), (None, full));
    assert_eq!(del.old, OldTuple::Full(row_b));

    // REPLICA IDENTITY USING INDEX: only the index column is key; old keys as `K`.
    let uniq = relation(
        &d[5].message,
        None,
        "uniq",
        ReplicaIdentity::Index,
        vec![col(false, "id", INT4, -1), col(true, "code", TEXT, -1)],
    );
    assert_eq!(cache.get(uniq).unwrap().key_columns(), &[1]);
    let M::Insert(i) = &d[6].message else {
        panic!()
    };
    assert_eq!(
        (i.relation, &i.new),
        (uniq, &tuple(vec![text("1"), text("x")]))
    );
    let M::Update(u) = &d[7].message else {
        panic!()
    };
    assert_eq!(u.relation, uniq);
    assert_eq!(
        u.old,
        Some(OldTuple::Key(tuple(vec![ColumnValue::Null, text("x")])))
    );
    assert_eq!(u.new, tuple(vec![text("1"), text("y")]));
    let M::Delete(del) = &d[8].message else {
        panic!()
    };
    assert_eq!(del.relation, uniq);
    assert_eq!(
        del.old,
        OldTuple::Key(tuple(vec![ColumnValue::Null, text("y")]))
    );

    // REPLICA IDENTITY NOTHING: no key columns.
    let keyless = relation(
        &d[9].message,
        None,
        "keyless",
        ReplicaIdentity::Nothing,
        vec![col(false, "a", INT4, -1), col(false, "b", TEXT, -1)],
    );
    assert!(cache.get(keyless).unwrap().key_columns().is_empty());
    let M::Insert(i) = &d[10].message else {
        panic!()
    };
    assert_eq!(
        (i.relation, &i.new),
        (keyless, &tuple(vec![text("7"), text("nothing")]))
    );
}

#[test]
fn v3_toast_unchanged_column() {
    let d = decode(&load("v3_toast"));
    assert_eq!(tags(&d), "BRUC");
    assert_begin_commit(&d[0].message, &d[3].message);
    let doc = relation(
        &d[1].message,
        None,
        "doc",
        ReplicaIdentity::Default,
        vec![
            col(true, "id", INT4, -1),
            col(false, "body", TEXT, -1),
            col(false, "title", TEXT, -1),
        ],
    );
    let M::Update(u) = &d[2].message else {
        panic!()
    };
    assert_eq!((u.xid, u.relation, &u.old), (None, doc, &None));
    assert_eq!(
        u.new,
        tuple(vec![
            text("1"),
            ColumnValue::UnchangedToast,
            text("new title")
        ])
    );
}

#[test]
fn v3_truncate_flags_and_relations() {
    let d = decode(&load("v3_truncate"));
    assert_eq!(tags(&d), "BRRTCBRTCBRTCBRRTC");
    for (b, c) in [(0, 4), (5, 8), (9, 12), (13, 17)] {
        assert_begin_commit(&d[b].message, &d[c].message);
    }
    let id = || col(true, "id", INT4, -1);
    let parent = relation(
        &d[1].message,
        None,
        "parent",
        ReplicaIdentity::Default,
        vec![id()],
    );
    let child = relation(
        &d[2].message,
        None,
        "child",
        ReplicaIdentity::Default,
        vec![id(), col(false, "parent_id", INT4, -1)],
    );
    let counter_cols = || vec![id(), col(false, "v", TEXT, -1)];
    let counter = relation(
        &d[6].message,
        None,
        "counter",
        ReplicaIdentity::Default,
        counter_cols(),
    );
    let kv = relation(
        &d[10].message,
        None,
        "kv",
        ReplicaIdentity::Default,
        kv_columns(),
    );
    let keyless = relation(
        &d[14].message,
        None,
        "keyless",
        ReplicaIdentity::Nothing,
        vec![col(false, "a", INT4, -1), col(false, "b", TEXT, -1)],
    );
    assert_eq!(
        relation(
            &d[15].message,
            None,
            "counter",
            ReplicaIdentity::Default,
            counter_cols()
        ),
        counter
    );
    let truncate = |i: usize| match &d[i].message {
        M::Truncate(t) => {
            assert_eq!(t.xid, None);
            (t.cascade, t.restart_identity, t.relations.clone())
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(truncate(3), (true, false, vec![parent, child]));
    assert_eq!(truncate(7), (false, true, vec![counter]));
    assert_eq!(truncate(11), (false, false, vec![kv]));
    assert_eq!(truncate(16), (true, true, vec![keyless, counter]));
}

#[test]
fn v3_logical_messages() {
    let d = decode(&load("v3_message"));
    assert_eq!(tags(&d), "MBMRIC");
    let M::Message(nt) = &d[0].message else {
        panic!()
    };
    assert_eq!(nt.xid, None);
    assert!(!nt.transactional);
    assert_eq!(nt.prefix, "blueshift-nt");
    assert_eq!(nt.content, Bytes::from_static(&[0x00, 0xff, 0x01]));
    assert_begin_commit(&d[1].message, &d[5].message);
    let M::Message(t) = &d[2].message else {
        panic!()
    };
    assert_eq!(t.xid, None);
    assert!(t.transactional);
    assert_eq!(t.prefix, "blueshift");
    assert_eq!(t.content, Bytes::from_static(b"hello, world"));
    let M::Commit(c) = &d[5].message else {
        panic!()
    };
    assert!(
        nt.lsn < t.lsn && t.lsn < c.commit_lsn,
        "message LSNs in WAL order"
    );
    let kv = relation(
        &d[3].message,
        None,
        "kv",
        ReplicaIdentity::Default,
        kv_columns(),
    );
    let M::Insert(i) = &d[4].message else {
        panic!()
    };
    assert_eq!(
        (i.relation, &i.new),
        (kv, &tuple(vec![text("3"), text("three")]))
    );
}

#[test]
fn v3_type_message_for_an_enum_column() {
    let d = decode(&load("v3_type"));
    assert_eq!(tags(&d), "BYRIC");
    assert_begin_commit(&d[0].message, &d[4].message);
    let M::Type(t) = &d[1].message else { panic!() };
    assert_eq!(
        (t.xid, t.namespace.as_str(), t.name.as_str()),
        (None, "public", "mood")
    );
    assert!(t.oid.0 >= 16384);
    let person = relation(
        &d[2].message,
        None,
        "person",
        ReplicaIdentity::Default,
        vec![
            col(true, "id", INT4, -1),
            col(false, "name", TEXT, -1),
            col(false, "current_mood", t.oid.0, -1),
        ],
    );
    let M::Insert(i) = &d[3].message else {
        panic!()
    };
    assert_eq!(
        (i.relation, &i.new),
        (person, &tuple(vec![text("1"), text("ann"), text("happy")]))
    );
    let mut cache = RelationCache::new();
    d.iter().for_each(|x| cache.observe(&x.message));
    assert_eq!(cache.type_name(t.oid).unwrap().to_string(), "public.mood");
}

#[test]
fn v3_binary_columns() {
    let d = decode(&load("v3_binary"));
    assert_eq!(tags(&d), "BRIC");
    assert_begin_commit(&d[0].message, &d[3].message);
    let kv = relation(
        &d[1].message,
        None,
        "kv",
        ReplicaIdentity::Default,
        kv_columns(),
    );
    let M::Insert(i) = &d[2].message else {
        panic!()
    };
    assert_eq!(i.relation, kv);
    assert_eq!(
        i.new,
        tuple(vec![
            ColumnValue::Binary(Bytes::from_static(&[0, 0, 0, 4])),
            ColumnValue::Binary(Bytes::from_static(b"four")),
        ])
    );
}

#[test]
fn v3_origin() {
    let d = decode(&load("v3_origin"));
    assert_eq!(tags(&d), "BORIC");
    assert_begin_commit(&d[0].message, &d[4].message);
    let M::Begin(b) = &d[0].message else { panic!() };
    // The commit timestamp of a replayed transaction is the one given to
    // pg_replication_origin_xact_setup.
    assert_eq!(b.commit_time.to_string(), "2026-01-02T03:04:05.678901Z");
    let M::Origin(o) = &d[1].message else {
        panic!()
    };
    assert_eq!(
        (o.commit_lsn, o.name.as_str()),
        (Lsn(0xAB_CDEF), "upstream")
    );
    let kv = relation(
        &d[2].message,
        None,
        "kv",
        ReplicaIdentity::Default,
        kv_columns(),
    );
    let M::Insert(i) = &d[3].message else {
        panic!()
    };
    assert_eq!(
        (i.relation, &i.new),
        (kv, &tuple(vec![text("30"), text("from upstream")]))
    );
}

#[test]
fn v3_two_phase_commit_and_rollback() {
    let d = decode(&load("v3_two_phase"));
    assert_eq!(tags(&d), "bRIPKbIPr");
    let (M::BeginPrepare(bp), M::Prepare(p), M::CommitPrepared(k)) =
        (&d[0].message, &d[3].message, &d[4].message)
    else {
        panic!()
    };
    assert_eq!(bp.gid, "bs-commit");
    assert_eq!(
        (
            p.flags,
            p.prepare_lsn,
            p.end_lsn,
            p.prepare_time,
            p.xid,
            p.gid.as_str()
        ),
        (
            0,
            bp.prepare_lsn,
            bp.end_lsn,
            bp.prepare_time,
            bp.xid,
            "bs-commit"
        )
    );
    assert!(p.end_lsn > p.prepare_lsn);
    assert_recent(p.prepare_time);
    assert_eq!((k.flags, k.xid, k.gid.as_str()), (0, p.xid, "bs-commit"));
    assert!(k.commit_lsn >= p.end_lsn && k.end_lsn > k.commit_lsn);
    assert!(k.commit_time >= p.prepare_time);
    let kv = relation(
        &d[1].message,
        None,
        "kv",
        ReplicaIdentity::Default,
        kv_columns(),
    );
    let M::Insert(i) = &d[2].message else {
        panic!()
    };
    assert_eq!(
        (i.relation, &i.new),
        (kv, &tuple(vec![text("20"), text("prepared")]))
    );

    let (M::BeginPrepare(bp2), M::Prepare(p2), M::RollbackPrepared(r)) =
        (&d[5].message, &d[7].message, &d[8].message)
    else {
        panic!()
    };
    assert_eq!(bp2.gid, "bs-rollback");
    assert_ne!(bp2.xid, bp.xid);
    assert_eq!(
        (
            p2.flags,
            p2.prepare_lsn,
            p2.end_lsn,
            p2.prepare_time,
            p2.xid,
            p2.gid.as_str()
        ),
        (
            0,
            bp2.prepare_lsn,
            bp2.end_lsn,
            bp2.prepare_time,
            bp2.xid,
            "bs-rollback"
        )
    );
    assert!(p2.prepare_lsn > k.end_lsn);
    assert_eq!(
        (
            r.flags,
            r.prepare_end_lsn,
            r.prepare_time,
            r.xid,
            r.gid.as_str()
        ),
        (0, p2.end_lsn, p2.prepare_time, p2.xid, "bs-rollback")
    );
    assert!(r.rollback_end_lsn > r.prepare_end_lsn);
    assert!(r.rollback_time >= r.prepare_time);
    let M::Insert(i) = &d[6].message else {
        panic!()
    };
    assert_eq!(
        (i.relation, &i.new),
        (kv, &tuple(vec![text("21"), text("rolled back")]))
    );
}
