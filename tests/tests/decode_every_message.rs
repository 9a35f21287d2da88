//! The decoder against real servers: a workload that makes PostgreSQL send every `pgoutput`
//! message type, streamed through our own replication connection, and the decoded messages
//! checked field by field. Runs on PostgreSQL 14 to 18 (protocol 2, 3, 4 and 4 and 4).
//!
//! Workload, one transaction each (see `WORKLOAD`): inserts with a TOASTed value; an update
//! leaving that value unchanged (`u`); a key change (`K` old tuple); insert, update and delete
//! under `REPLICA IDENTITY FULL` (`O`); a delete; `TRUNCATE … CASCADE` and `RESTART IDENTITY`;
//! transactional and non-transactional `pg_logical_emit_message`; a user-defined enum (Type); a
//! transaction larger than `logical_decoding_work_mem` (Stream Start/Stop/Commit); a large
//! rolled-back transaction and a rolled-back large subtransaction (Stream Abort); two-phase
//! commit and rollback, small and large (Begin Prepare, Prepare, Commit Prepared, Rollback
//! Prepared, Stream Prepare; PostgreSQL 15+); a transaction replayed under a replication
//! origin (Origin); then a marker row.

use std::collections::HashMap;
use std::time::Duration;

use blueshift_decoder::config::ConnectConfig;
use blueshift_decoder::connection::{CreateSlotOptions, ReplicationConnection, SnapshotAction};
use blueshift_decoder::pgoutput::{
    ColumnValue, OldTuple, PgOutputDecoder, PgOutputMessage, ProtocolVersion, ReplicaIdentity,
    TupleData,
};
use blueshift_decoder::relation::RelationCache;
use blueshift_decoder::stream::{ReplicationFrame, StartOptions, StatusOptions, Streaming};
use blueshift_decoder::{Lsn, Oid, Xid};
use blueshift_tests::{Cluster, ClusterOptions, PgBinaries};
use bytes::Bytes;

const SCHEMA: &str = "
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE items (id int PRIMARY KEY, name text, big text);
ALTER TABLE items ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE TABLE full_t (id int, v text);
ALTER TABLE full_t REPLICA IDENTITY FULL;
CREATE TABLE parent (id int PRIMARY KEY);
CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent);
CREATE TABLE seq_t (id serial PRIMARY KEY, v text);
CREATE TABLE moods (id int PRIMARY KEY, m mood);
CREATE TABLE done (id int PRIMARY KEY);
CREATE PUBLICATION every_pub FOR ALL TABLES;
SELECT pg_replication_origin_create('remote_blue');
";

/// The TOASTed value: 4000 bytes, stored out of line (`STORAGE EXTERNAL`, no compression).
fn big_value() -> String {
    "0123456789abcdef".repeat(250)
}

async fn run_every_message(major: u32) {
    let bins = PgBinaries::major(major).expect("PostgreSQL binaries");
    let cluster = Cluster::start(
        ClusterOptions::new(bins)
            .name(&format!("decode{major}"))
            .setting("logical_decoding_work_mem", "64kB"),
    )
    .expect("start cluster");
    cluster.create_database("every").expect("create db");
    cluster.psql("every", SCHEMA).expect("schema");

    let config =
        ConnectConfig::from_conninfo_with_env(&cluster.uri("every"), |_| None).expect("conninfo");
    let two_phase = major >= 15;
    let mut conn = ReplicationConnection::connect(&config)
        .await
        .expect("replication connection");
    assert_eq!(conn.server_major(), major);
    let system = conn.identify_system().await.expect("IDENTIFY_SYSTEM");
    assert_eq!(system.dbname.as_deref(), Some("every"));
    let slot = conn
        .create_slot(
            "every_slot",
            CreateSlotOptions {
                temporary: false,
                snapshot: SnapshotAction::NoExport,
                two_phase,
            },
        )
        .await
        .expect("create slot");
    let bin_slot = conn
        .create_slot("every_bin", CreateSlotOptions::default())
        .await
        .expect("create binary slot");
    conn.close().await.expect("close");
    assert!(slot.consistent_point <= bin_slot.consistent_point);

    run_workload(&cluster, two_phase);

    // Text values, every option the server has.
    let streaming = if major >= 16 {
        Streaming::Parallel
    } else {
        Streaming::On
    };
    let options = StartOptions {
        publication_names: vec!["every_pub".into()],
        proto_version: None,
        binary: false,
        messages: true,
        streaming,
        origin: None,
        two_phase,
    };
    let messages = collect(&config, "every_slot", options).await;
    let expected_version = match major {
        14 => 2,
        15 => 3,
        _ => 4,
    };
    check_every_message(&messages, major, expected_version);

    // Binary values on the second slot: the first insert's key arrives as int4 send format.
    let options = StartOptions {
        publication_names: vec!["every_pub".into()],
        binary: true,
        ..StartOptions::default()
    };
    let binary = collect(&config, "every_bin", options).await;
    let first = binary
        .iter()
        .find_map(|(_, m)| match m {
            PgOutputMessage::Insert(i) => Some(i),
            _ => None,
        })
        .expect("an insert in binary mode");
    assert_eq!(
        first.new.columns[0],
        ColumnValue::Binary(Bytes::from_static(&[0, 0, 0, 1]))
    );
    assert_eq!(
        first.new.columns[1],
        ColumnValue::Binary(Bytes::from_static(b"a"))
    );
}

/// Runs the workload; each `psql` call is one or more transactions in autocommit mode.
fn run_workload(cluster: &Cluster, two_phase: bool) {
    let sql = |s: &str| {
        cluster
            .psql("every", s)
            .unwrap_or_else(|e| panic!("{s}: {e:#}"));
    };
    let big = big_value();
    // 1: two inserts, one with an out-of-line value.
    sql(&format!(
        "INSERT INTO items VALUES (1, 'a', '{big}'), (2, 'b', 'small')"
    ));
    // 2: an update that leaves the TOASTed value alone.
    sql("UPDATE items SET name = 'a2' WHERE id = 1");
    // 3: a key change.
    sql("UPDATE items SET id = 20 WHERE id = 2");
    // 4: REPLICA IDENTITY FULL: insert, update, delete in one transaction.
    sql(
        "BEGIN; INSERT INTO full_t VALUES (1, 'x'); UPDATE full_t SET v = 'y' WHERE id = 1; \
         DELETE FROM full_t WHERE id = 1; COMMIT",
    );
    // 5: a delete by key.
    sql("DELETE FROM items WHERE id = 20");
    // 6, 7, 8: TRUNCATE … CASCADE.
    sql("INSERT INTO parent VALUES (1)");
    sql("INSERT INTO child VALUES (1, 1)");
    sql("TRUNCATE parent CASCADE");
    // 8, 9: TRUNCATE … RESTART IDENTITY.
    sql("INSERT INTO seq_t (v) VALUES ('s')");
    sql("TRUNCATE seq_t RESTART IDENTITY");
    // 10: a transactional logical message beside an insert; 11: a non-transactional one.
    sql("BEGIN; INSERT INTO items VALUES (3, 'm', NULL); \
         SELECT pg_logical_emit_message(true, 'blueshift', 'hello'); COMMIT");
    sql("SELECT pg_logical_emit_message(false, 'blueshift-nt', 'now')");
    // 12: a user-defined type.
    sql("INSERT INTO moods VALUES (1, 'happy')");
    // 13: larger than logical_decoding_work_mem: streamed.
    sql("INSERT INTO items SELECT g, 'bulk', NULL FROM generate_series(1000, 5999) g");
    // 14: large and rolled back: streamed, then aborted.
    sql(
        "BEGIN; INSERT INTO items SELECT g, 'gone', NULL FROM generate_series(10000, 14999) g; \
         ROLLBACK",
    );
    // 15: a large subtransaction rolled back inside a committed transaction.
    sql("BEGIN; INSERT INTO items SELECT g, 'kept', NULL FROM generate_series(20000, 24999) g; \
         SAVEPOINT s1; INSERT INTO items SELECT g, 'undone', NULL FROM generate_series(30000, 34999) g; \
         ROLLBACK TO SAVEPOINT s1; COMMIT");
    if two_phase {
        // 16, 17: prepared and committed; 18, 19: prepared and rolled back.
        sql("BEGIN; INSERT INTO items VALUES (40, '2pc', NULL); PREPARE TRANSACTION 'gid-commit'");
        sql("COMMIT PREPARED 'gid-commit'");
        sql(
            "BEGIN; INSERT INTO items VALUES (41, '2pc', NULL); PREPARE TRANSACTION 'gid-rollback'",
        );
        sql("ROLLBACK PREPARED 'gid-rollback'");
        // 20, 21: a large prepared transaction: streamed, then Stream Prepare.
        sql("BEGIN; INSERT INTO items SELECT g, 'big2pc', NULL FROM generate_series(50000, 54999) g; \
             PREPARE TRANSACTION 'gid-big'");
        sql("COMMIT PREPARED 'gid-big'");
    }
    // 22: replayed under a replication origin.
    sql(
        "SELECT pg_replication_origin_session_setup('remote_blue'); \
         BEGIN; SELECT pg_replication_origin_xact_setup('0/ABCDEF', '2026-01-02 03:04:05+00'); \
         INSERT INTO items VALUES (60, 'from-origin', NULL); COMMIT; \
         SELECT pg_replication_origin_session_reset()",
    );
    // 23: the marker.
    sql("INSERT INTO done VALUES (1)");
}

/// Streams `slot` until the marker transaction commits; returns every decoded message with the
/// start LSN of its frame.
async fn collect(
    config: &ConnectConfig,
    slot: &str,
    options: StartOptions,
) -> Vec<(Lsn, PgOutputMessage)> {
    let parallel = options.streaming == Streaming::Parallel;
    let conn = ReplicationConnection::connect(config)
        .await
        .expect("connect");
    let mut stream = conn
        .start_replication(
            slot,
            Lsn::INVALID,
            options,
            StatusOptions {
                interval: Duration::from_secs(1),
            },
        )
        .await
        .expect("START_REPLICATION");
    let version = ProtocolVersion::try_from(stream.proto_version()).expect("version");
    let mut decoder = PgOutputDecoder::new(version).with_parallel_streaming(parallel);
    let mut relations = RelationCache::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let frame = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("the marker arrives within 2 minutes")
            .expect("stream")
            .expect("the stream stays open");
        let ReplicationFrame::XLogData {
            wal_start, data, ..
        } = frame
        else {
            continue;
        };
        let message = decoder.decode(data).expect("decode");
        relations.observe(&message);
        let end = match &message {
            PgOutputMessage::Commit(c) => Some(c.end_lsn),
            _ => None,
        };
        out.push((wal_start, message));
        if let Some(end) = end {
            if last_relation(&out, &relations).as_deref() == Some("public.done") {
                stream.feedback().set_flushed(end);
                break;
            }
        }
    }
    stream.close().await.expect("close stream");
    out
}

/// The relation of the last change before the final Commit.
fn last_relation(out: &[(Lsn, PgOutputMessage)], relations: &RelationCache) -> Option<String> {
    out.iter().rev().find_map(|(_, m)| {
        let oid = match m {
            PgOutputMessage::Insert(i) => i.relation,
            _ => return None,
        };
        relations.get(oid).map(|r| r.name().to_string())
    })
}

/// A transaction as the test sees it: what opened it, the messages inside, what closed it.
#[derive(Debug)]
struct Txn<'a> {
    /// Begin, Begin Prepare, or the first Stream Start (for streamed ones).
    messages: Vec<&'a PgOutputMessage>,
}

impl Txn<'_> {
    fn kinds(&self) -> Vec<&'static str> {
        self.messages.iter().map(|m| m.name()).collect()
    }
}

/// Groups the stream into units: transactions (Begin … Commit/Prepare), streamed transactions
/// (Stream Start … Stream Commit/Abort/Prepare of one xid, blocks merged), lone messages
/// (non-transactional logical messages, Commit Prepared, Rollback Prepared).
fn group(messages: &[(Lsn, PgOutputMessage)]) -> Vec<Txn<'_>> {
    let mut units: Vec<Txn<'_>> = Vec::new();
    let mut open: Option<Vec<&PgOutputMessage>> = None;
    let mut streamed: HashMap<Xid, usize> = HashMap::new();
    let mut current_stream: Option<Xid> = None;
    for (_, m) in messages {
        match m {
            PgOutputMessage::Begin(_) | PgOutputMessage::BeginPrepare(_) => {
                assert!(open.is_none(), "Begin inside a transaction");
                open = Some(vec![m]);
            }
            PgOutputMessage::Commit(_) | PgOutputMessage::Prepare(_) => {
                let mut txn = open
                    .take()
                    .expect("Commit/Prepare closes an open transaction");
                txn.push(m);
                units.push(Txn { messages: txn });
            }
            PgOutputMessage::StreamStart(s) => {
                current_stream = Some(s.xid);
                let at = *streamed.entry(s.xid).or_insert_with(|| {
                    units.push(Txn {
                        messages: Vec::new(),
                    });
                    units.len() - 1
                });
                units[at].messages.push(m);
            }
            PgOutputMessage::StreamStop => {
                let xid = current_stream
                    .take()
                    .expect("Stream Stop after Stream Start");
                units[streamed[&xid]].messages.push(m);
            }
            PgOutputMessage::StreamCommit(c) => units[streamed[&c.xid]].messages.push(m),
            PgOutputMessage::StreamAbort(a) => units[streamed[&a.xid]].messages.push(m),
            PgOutputMessage::StreamPrepare(p) => units[streamed[&p.xid]].messages.push(m),
            _ => match (&mut open, current_stream) {
                (Some(txn), None) => txn.push(m),
                (None, Some(xid)) => units[streamed[&xid]].messages.push(m),
                (None, None) => units.push(Txn { messages: vec![m] }),
                (Some(_), Some(_)) => panic!("a transaction inside a stream block"),
            },
        }
    }
    assert!(open.is_none(), "the stream ends inside a transaction");
    units
}

fn text(v: &str) -> ColumnValue {
    ColumnValue::Text(Bytes::copy_from_slice(v.as_bytes()))
}

fn row(values: &[Option<&str>]) -> TupleData {
    TupleData {
        columns: values
            .iter()
            .map(|v| v.map_or(ColumnValue::Null, text))
            .collect(),
    }
}

/// Field-by-field checks of every unit of the workload, in order.
fn check_every_message(messages: &[(Lsn, PgOutputMessage)], major: u32, version: u32) {
    let two_phase = major >= 15;
    let mut relations = RelationCache::new();
    for (_, m) in messages {
        relations.observe(m);
    }
    let oid_of = |name: &str| -> Oid {
        messages
            .iter()
            .find_map(|(_, m)| match m {
                PgOutputMessage::Relation(r) if r.name == name => Some(r.oid),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no Relation message for {name}"))
    };
    let units = group(messages);
    let kinds: Vec<_> = units.iter().map(Txn::kinds).collect();
    let mut units = units.iter();
    let mut next = |what: &str| {
        units
            .next()
            .unwrap_or_else(|| panic!("missing unit: {what}; saw {kinds:#?}"))
    };

    // Every plain transaction: Begin's final LSN and time match the Commit; end > commit.
    for (_, m) in messages {
        if let PgOutputMessage::Commit(c) = m {
            assert_eq!(c.flags, 0);
            assert!(c.end_lsn > c.commit_lsn, "{c:?}");
        }
    }
    let check_txn = |t: &Txn<'_>| {
        let (PgOutputMessage::Begin(b), Some(PgOutputMessage::Commit(c))) =
            (t.messages[0], t.messages.last().copied())
        else {
            panic!("not a Begin … Commit transaction: {:?}", t.kinds());
        };
        assert_eq!(b.final_lsn, c.commit_lsn);
        assert_eq!(b.commit_time, c.commit_time);
        assert!(b.xid.0 > 0);
    };

    // 1: Relation(items), Insert ×2.
    let t = next("inserts");
    check_txn(t);
    assert_eq!(
        t.kinds(),
        ["Begin", "Relation", "Insert", "Insert", "Commit"]
    );
    let PgOutputMessage::Relation(items) = t.messages[1] else {
        unreachable!()
    };
    assert_eq!(
        (items.namespace.as_str(), items.name.as_str()),
        ("public", "items")
    );
    assert_eq!(items.xid, None);
    assert_eq!(items.replica_identity, ReplicaIdentity::Default);
    let cols: Vec<_> = items
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.type_oid.0, c.type_modifier, c.is_key))
        .collect();
    assert_eq!(
        cols,
        [
            ("id", 23, -1, true),
            ("name", 25, -1, false),
            ("big", 25, -1, false)
        ]
    );
    let big = big_value();
    let PgOutputMessage::Insert(i) = t.messages[2] else {
        unreachable!()
    };
    assert_eq!((i.relation, i.xid), (items.oid, None));
    assert_eq!(i.new, row(&[Some("1"), Some("a"), Some(&big)]));
    let PgOutputMessage::Insert(i) = t.messages[3] else {
        unreachable!()
    };
    assert_eq!(i.new, row(&[Some("2"), Some("b"), Some("small")]));

    // 2: the TOASTed value is unchanged and not sent.
    let t = next("toast update");
    check_txn(t);
    assert_eq!(t.kinds(), ["Begin", "Update", "Commit"]);
    let PgOutputMessage::Update(u) = t.messages[1] else {
        unreachable!()
    };
    assert_eq!((u.relation, &u.old), (items.oid, &None));
    assert_eq!(
        u.new.columns,
        [text("1"), text("a2"), ColumnValue::UnchangedToast]
    );

    // 3: a key change carries the old key (K): key column set, the others NULL.
    let t = next("key change");
    check_txn(t);
    let PgOutputMessage::Update(u) = t.messages[1] else {
        panic!("{:?}", t.kinds())
    };
    assert_eq!(u.old, Some(OldTuple::Key(row(&[Some("2"), None, None]))));
    assert_eq!(u.new, row(&[Some("20"), Some("b"), Some("small")]));

    // 4: REPLICA IDENTITY FULL: the whole old row (O).
    let t = next("replica identity full");
    check_txn(t);
    assert_eq!(
        t.kinds(),
        ["Begin", "Relation", "Insert", "Update", "Delete", "Commit"]
    );
    let PgOutputMessage::Relation(full) = t.messages[1] else {
        unreachable!()
    };
    assert_eq!(full.name, "full_t");
    assert_eq!(full.replica_identity, ReplicaIdentity::Full);
    assert!(
        full.columns.iter().all(|c| c.is_key),
        "FULL: every column is key"
    );
    let PgOutputMessage::Update(u) = t.messages[3] else {
        unreachable!()
    };
    assert_eq!(u.old, Some(OldTuple::Full(row(&[Some("1"), Some("x")]))));
    assert_eq!(u.new, row(&[Some("1"), Some("y")]));
    let PgOutputMessage::Delete(d) = t.messages[4] else {
        unreachable!()
    };
    assert_eq!((d.relation, d.xid), (full.oid, None));
    assert_eq!(d.old, OldTuple::Full(row(&[Some("1"), Some("y")])));

    // 5: delete by key.
    let t = next("delete");
    check_txn(t);
    let PgOutputMessage::Delete(d) = t.messages[1] else {
        panic!("{:?}", t.kinds())
    };
    assert_eq!(d.relation, items.oid);
    assert_eq!(d.old, OldTuple::Key(row(&[Some("20"), None, None])));

    // 6, 7: TRUNCATE parent CASCADE names both tables.
    for what in ["parent insert", "child insert"] {
        let t = next(what);
        check_txn(t);
        assert_eq!(
            t.kinds(),
            ["Begin", "Relation", "Insert", "Commit"],
            "{what}"
        );
    }
    let t = next("truncate cascade");
    check_txn(t);
    let PgOutputMessage::Truncate(tr) = t.messages[t.messages.len() - 2] else {
        panic!("{:?}", t.kinds())
    };
    let mut truncated = tr.relations.clone();
    truncated.sort();
    let mut want = vec![oid_of("parent"), oid_of("child")];
    want.sort();
    assert_eq!(truncated, want);
    assert!(tr.cascade && !tr.restart_identity, "{tr:?}");

    // 8, 9: TRUNCATE … RESTART IDENTITY.
    let t = next("seq insert");
    check_txn(t);
    let PgOutputMessage::Insert(i) = t.messages[2] else {
        panic!("{:?}", t.kinds())
    };
    assert_eq!(i.new, row(&[Some("1"), Some("s")]));
    let t = next("truncate restart identity");
    check_txn(t);
    let PgOutputMessage::Truncate(tr) = t.messages[t.messages.len() - 2] else {
        panic!("{:?}", t.kinds())
    };
    assert_eq!(tr.relations, [oid_of("seq_t")]);
    assert!(!tr.cascade && tr.restart_identity, "{tr:?}");

    // 10: a transactional message inside the transaction.
    let t = next("transactional message");
    check_txn(t);
    assert_eq!(t.kinds(), ["Begin", "Insert", "Message", "Commit"]);
    let PgOutputMessage::Message(m) = t.messages[2] else {
        unreachable!()
    };
    assert!(m.transactional);
    assert_eq!(
        (m.prefix.as_str(), &m.content[..]),
        ("blueshift", &b"hello"[..])
    );
    assert_eq!(m.xid, None);
    assert!(m.lsn > Lsn::INVALID);
    // 11: a non-transactional message stands alone.
    let t = next("non-transactional message");
    assert_eq!(t.kinds(), ["Message"]);
    let PgOutputMessage::Message(m) = t.messages[0] else {
        unreachable!()
    };
    assert!(!m.transactional);
    assert_eq!(
        (m.prefix.as_str(), &m.content[..]),
        ("blueshift-nt", &b"now"[..])
    );

    // 12: Type before the Relation that uses it.
    let t = next("enum type");
    check_txn(t);
    assert_eq!(t.kinds(), ["Begin", "Type", "Relation", "Insert", "Commit"]);
    let PgOutputMessage::Type(ty) = t.messages[1] else {
        unreachable!()
    };
    assert_eq!(
        (ty.namespace.as_str(), ty.name.as_str(), ty.xid),
        ("public", "mood", None)
    );
    let PgOutputMessage::Relation(moods) = t.messages[2] else {
        unreachable!()
    };
    assert_eq!(moods.columns[1].type_oid, ty.oid);
    assert_eq!(
        relations
            .type_name(ty.oid)
            .map(|n| n.to_string())
            .as_deref(),
        Some("public.mood")
    );
    let PgOutputMessage::Insert(i) = t.messages[3] else {
        unreachable!()
    };
    assert_eq!(i.new, row(&[Some("1"), Some("happy")]));

    // 13: streamed and committed: 5000 inserts, all carrying the stream's xid.
    let t = next("streamed commit");
    let xid = check_streamed(t, 5000, "bulk");
    let Some(PgOutputMessage::StreamCommit(c)) = t.messages.last() else {
        panic!("streamed transaction ends with {:?}", t.kinds().last())
    };
    assert_eq!(c.xid, xid);
    assert!(c.end_lsn > c.commit_lsn);

    // 14: streamed and rolled back: Stream Abort of the top-level xid. PostgreSQL 18 no
    // longer streams a transaction it already knows aborted, so there it sends nothing.
    let gone_streamed = messages.iter().any(|(_, m)| match m {
        PgOutputMessage::Insert(i) => i.new.columns.get(1) == Some(&text("gone")),
        _ => false,
    });
    assert!(
        gone_streamed || major >= 18,
        "PostgreSQL {major} streams the rolled-back transaction"
    );
    if gone_streamed {
        let t = next("streamed abort");
        let xid = check_streamed(t, 0, "gone");
        let Some(PgOutputMessage::StreamAbort(a)) = t.messages.last() else {
            panic!("streamed rollback ends with {:?}", t.kinds().last())
        };
        assert_eq!((a.xid, a.subxid), (xid, xid));
        assert_eq!(a.parallel.is_some(), version >= 4, "{a:?}");
        if let Some(info) = &a.parallel {
            assert!(info.abort_lsn > Lsn::INVALID);
        }
    }

    // 15: a rolled-back subtransaction: Stream Abort of the subxid, then Stream Commit.
    let t = next("streamed subtransaction abort");
    let kinds = t.kinds();
    let sub_abort = t
        .messages
        .iter()
        .find_map(|m| match m {
            PgOutputMessage::StreamAbort(a) => Some(a),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Stream Abort in {kinds:?}"));
    assert_ne!(sub_abort.xid, sub_abort.subxid);
    assert_eq!(sub_abort.parallel.is_some(), version >= 4, "{sub_abort:?}");
    if let Some(info) = &sub_abort.parallel {
        assert!(info.abort_lsn > Lsn::INVALID);
        assert!(info.abort_time.to_system_time().is_some());
    }
    let Some(PgOutputMessage::StreamCommit(c)) = t.messages.last() else {
        panic!("ends with {:?}", kinds.last())
    };
    assert_eq!(c.xid, sub_abort.xid);

    if two_phase {
        // 16, 17: prepare, then commit prepared.
        let t = next("prepare");
        assert_eq!(t.kinds(), ["Begin Prepare", "Insert", "Prepare"]);
        let (PgOutputMessage::BeginPrepare(b), PgOutputMessage::Prepare(p)) =
            (t.messages[0], t.messages[2])
        else {
            unreachable!()
        };
        assert_eq!(
            (b.gid.as_str(), p.gid.as_str()),
            ("gid-commit", "gid-commit")
        );
        assert_eq!(
            (b.xid, b.prepare_lsn, b.end_lsn),
            (p.xid, p.prepare_lsn, p.end_lsn)
        );
        assert_eq!(b.prepare_time, p.prepare_time);
        let t = next("commit prepared");
        let PgOutputMessage::CommitPrepared(cp) = t.messages[0] else {
            panic!("{:?}", t.kinds())
        };
        assert_eq!((cp.gid.as_str(), cp.xid), ("gid-commit", p.xid));
        assert!(
            cp.commit_lsn >= p.end_lsn && cp.end_lsn > cp.commit_lsn,
            "{cp:?} {p:?}"
        );

        // 18, 19: prepare, then rollback prepared.
        let t = next("prepare for rollback");
        let PgOutputMessage::Prepare(p) = t.messages[2] else {
            panic!("{:?}", t.kinds())
        };
        assert_eq!(p.gid, "gid-rollback");
        let t = next("rollback prepared");
        let PgOutputMessage::RollbackPrepared(rp) = t.messages[0] else {
            panic!("{:?}", t.kinds())
        };
        assert_eq!((rp.gid.as_str(), rp.xid), ("gid-rollback", p.xid));
        assert_eq!(rp.prepare_end_lsn, p.end_lsn);
        assert_eq!(rp.prepare_time, p.prepare_time);
        assert!(rp.rollback_end_lsn > rp.prepare_end_lsn);

        // 20, 21: a large prepared transaction: streamed, Stream Prepare, then Commit Prepared.
        let t = next("stream prepare");
        let xid = check_streamed(t, 5000, "big2pc");
        let Some(PgOutputMessage::StreamPrepare(sp)) = t.messages.last() else {
            panic!("ends with {:?}", t.kinds().last())
        };
        assert_eq!((sp.gid.as_str(), sp.xid), ("gid-big", xid));
        let t = next("commit prepared (streamed)");
        let PgOutputMessage::CommitPrepared(cp) = t.messages[0] else {
            panic!("{:?}", t.kinds())
        };
        assert_eq!((cp.gid.as_str(), cp.xid), ("gid-big", xid));
    }

    // 22: Origin right after Begin, with the origin's name and LSN.
    let t = next("origin");
    check_txn(t);
    assert_eq!(t.kinds(), ["Begin", "Origin", "Insert", "Commit"]);
    let PgOutputMessage::Origin(o) = t.messages[1] else {
        unreachable!()
    };
    assert_eq!(
        (o.name.as_str(), o.commit_lsn),
        ("remote_blue", Lsn(0xAB_CDEF))
    );
    let PgOutputMessage::Begin(b) = t.messages[0] else {
        unreachable!()
    };
    assert_eq!(b.commit_time.to_string(), "2026-01-02T03:04:05.000000Z");

    // 23: the marker, and nothing after it.
    let t = next("marker");
    check_txn(t);
    assert!(units.next().is_none(), "units after the marker");
}

/// Checks a streamed transaction: Stream Start (first segment first) … Stream Stop blocks, every
/// change carrying the stream's xid, `inserts` inserts whose `name` is `name` (when non-zero);
/// returns the xid.
fn check_streamed(t: &Txn<'_>, inserts: usize, name: &str) -> Xid {
    let PgOutputMessage::StreamStart(first) = t.messages[0] else {
        panic!("a streamed transaction starts with {:?}", t.kinds().first())
    };
    assert!(first.first_segment);
    let xid = first.xid;
    let mut starts = 0;
    let mut stops = 0;
    let mut count = 0;
    for m in &t.messages {
        match m {
            PgOutputMessage::StreamStart(s) => {
                assert_eq!(s.xid, xid);
                assert_eq!(s.first_segment, starts == 0);
                starts += 1;
            }
            PgOutputMessage::StreamStop => stops += 1,
            PgOutputMessage::Insert(i) => {
                assert_eq!(i.xid, Some(xid));
                assert_eq!(i.new.columns[1], text(name));
                count += 1;
            }
            PgOutputMessage::Relation(r) => assert_eq!(r.xid, Some(xid)),
            other => assert_eq!(other.stream_xid(), None, "{other:?}"),
        }
    }
    assert!(
        starts >= 1 && starts == stops,
        "{starts} starts, {stops} stops"
    );
    if inserts > 0 {
        assert_eq!(count, inserts);
    }
    xid
}

#[tokio::test]
async fn every_message_postgres_14() {
    run_every_message(14).await;
}

#[tokio::test]
async fn every_message_postgres_15() {
    run_every_message(15).await;
}

#[tokio::test]
async fn every_message_postgres_16() {
    run_every_message(16).await;
}

#[tokio::test]
async fn every_message_postgres_17() {
    run_every_message(17).await;
}

#[tokio::test]
async fn every_message_postgres_18() {
    run_every_message(18).await;
}
