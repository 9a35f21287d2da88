//! Generated `pgoutput` frames of a TPC-B workload (what `pgbench` writes), for benchmarks that
//! must not depend on a running server.

use bytes::{Bytes, BytesMut};

use blueshift_decoder::pgoutput::{
    encode, BeginBody, ColumnValue, CommitBody, InsertBody, PgOutputMessage, PgTimestamp,
    RelationBody, RelationColumn, ReplicaIdentity, TupleData, UpdateBody,
};
use blueshift_decoder::{Lsn, Oid, Xid};

const ACCOUNTS: Oid = Oid(16_390);
const TELLERS: Oid = Oid(16_387);
const BRANCHES: Oid = Oid(16_393);
const HISTORY: Oid = Oid(16_384);
const INT4: Oid = Oid(23);
const BPCHAR: Oid = Oid(1042);
const TIMESTAMP: Oid = Oid(1114);

/// The frames of `transactions` TPC-B transactions followed by one transaction inserting
/// `big_rows` history rows: Relation messages first, then Begin … Commit for each.
pub fn backlog_frames(transactions: u32, big_rows: u32) -> Vec<Bytes> {
    let mut out = BytesMut::new();
    let mut frames = Vec::new();
    let mut push = |m: PgOutputMessage, out: &mut BytesMut| {
        encode(&m, false, out).expect("generated messages encode");
        frames.push(out.split().freeze());
    };
    for relation in relations() {
        push(PgOutputMessage::Relation(relation), &mut out);
    }
    let mut lsn = 0x1_0000_0000u64;
    let mut next = |step: u64| {
        lsn += step;
        Lsn(lsn)
    };
    let time = PgTimestamp(848_000_000_000_000);
    for i in 0..transactions {
        let aid = i.wrapping_mul(7919) % 5_000_000 + 1;
        let tid = i % 500 + 1;
        let bid = i % 50 + 1;
        let delta = i64::from(i % 10_000) - 5_000;
        let commit = next(560);
        push(
            PgOutputMessage::Begin(BeginBody {
                final_lsn: commit,
                commit_time: time,
                xid: Xid(1000 + i),
            }),
            &mut out,
        );
        let filler = " ".repeat(84);
        for (rel, key, balance) in [
            (ACCOUNTS, aid, delta * 3),
            (TELLERS, tid, delta * 2),
            (BRANCHES, bid, delta),
        ] {
            push(
                PgOutputMessage::Update(UpdateBody {
                    xid: None,
                    relation: rel,
                    old: None,
                    new: tuple(&[
                        &key.to_string(),
                        &bid.to_string(),
                        &balance.to_string(),
                        &filler,
                    ]),
                }),
                &mut out,
            );
        }
        push(
            PgOutputMessage::Insert(InsertBody {
                xid: None,
                relation: HISTORY,
                new: tuple(&[
                    &tid.to_string(),
                    &bid.to_string(),
                    &aid.to_string(),
                    &delta.to_string(),
                    "2026-11-24 02:28:05.123456",
                ]),
            }),
            &mut out,
        );
        push(
            PgOutputMessage::Commit(CommitBody {
                flags: 0,
                commit_lsn: commit,
                end_lsn: next(48),
                commit_time: time,
            }),
            &mut out,
        );
    }
    let commit = next(u64::from(big_rows) * 80);
    push(
        PgOutputMessage::Begin(BeginBody {
            final_lsn: commit,
            commit_time: time,
            xid: Xid(1000 + transactions),
        }),
        &mut out,
    );
    for i in 0..big_rows {
        push(
            PgOutputMessage::Insert(InsertBody {
                xid: None,
                relation: HISTORY,
                new: tuple(&[
                    &(i % 500 + 1).to_string(),
                    &(i % 50 + 1).to_string(),
                    &(i + 1).to_string(),
                    "17",
                    "2026-11-24 02:28:05.123456",
                ]),
            }),
            &mut out,
        );
    }
    push(
        PgOutputMessage::Commit(CommitBody {
            flags: 0,
            commit_lsn: commit,
            end_lsn: next(48),
            commit_time: time,
        }),
        &mut out,
    );
    frames
}

fn tuple(values: &[&str]) -> TupleData {
    TupleData {
        columns: values
            .iter()
            .map(|v| ColumnValue::Text(Bytes::copy_from_slice(v.as_bytes())))
            .collect(),
    }
}

fn relations() -> Vec<RelationBody> {
    let col = |name: &str, type_oid: Oid, type_modifier: i32, is_key: bool| RelationColumn {
        is_key,
        name: name.to_owned(),
        type_oid,
        type_modifier,
    };
    let table = |oid: Oid, name: &str, id: &str, filler: i32| RelationBody {
        xid: None,
        oid,
        namespace: "public".to_owned(),
        name: name.to_owned(),
        replica_identity: ReplicaIdentity::Default,
        columns: vec![
            col(id, INT4, -1, true),
            col("bid", INT4, -1, false),
            col(&format!("{}balance", &id[..1]), INT4, -1, false),
            col("filler", BPCHAR, filler, false),
        ],
    };
    vec![
        table(ACCOUNTS, "pgbench_accounts", "aid", 88),
        table(TELLERS, "pgbench_tellers", "tid", 88),
        table(BRANCHES, "pgbench_branches", "bid", 92),
        RelationBody {
            xid: None,
            oid: HISTORY,
            namespace: "public".to_owned(),
            name: "pgbench_history".to_owned(),
            replica_identity: ReplicaIdentity::Full,
            columns: vec![
                col("tid", INT4, -1, false),
                col("bid", INT4, -1, false),
                col("aid", INT4, -1, false),
                col("delta", INT4, -1, false),
                col("mtime", TIMESTAMP, -1, false),
            ],
        },
    ]
}
