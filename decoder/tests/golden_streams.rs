//! Golden frames of streamed transactions (protocol versions 2 to 4): Stream Start/Stop/
//! Commit/Abort/Prepare captured from real PostgreSQL 15 and 18 servers by
//! `scripts/capture-golden`, decoded field by field; see `golden_frames.rs` for the rest.
//! Format reference:
//! <https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html>.

mod golden_support;

use blueshift_decoder::pgoutput::{
    decode_message, AbortInfo, ColumnValue, DecodeErrorKind, PgOutputMessage, PgTimestamp,
    ProtocolVersion, ReplicaIdentity,
};
use blueshift_decoder::{Lsn, Xid};
use golden_support::{assert_recent, col, decode, load, relation, tags, Decoded, INT4};

use PgOutputMessage as M;

/// One streamed block: its Stream Start and the changes up to its Stream Stop.
struct Block<'a> {
    xid: Xid,
    first_segment: bool,
    changes: Vec<&'a PgOutputMessage>,
}

/// Splits a capture into streamed blocks and the messages between them, checking that every
/// message inside a block carries an xid and nothing outside does.
fn blocks(d: &[Decoded]) -> (Vec<Block<'_>>, Vec<&PgOutputMessage>) {
    let mut blocks = Vec::new();
    let mut outside = Vec::new();
    let mut current: Option<Block<'_>> = None;
    for x in d {
        match (&x.message, current.as_mut()) {
            (M::StreamStart(s), None) => {
                assert!(!x.ctx.in_stream);
                current = Some(Block {
                    xid: s.xid,
                    first_segment: s.first_segment,
                    changes: Vec::new(),
                });
            }
            (M::StreamStop, Some(_)) => blocks.push(current.take().unwrap()),
            (m, Some(block)) => {
                assert!(x.ctx.in_stream);
                assert!(m.stream_xid().is_some(), "{m:?} in a block without an xid");
                block.changes.push(m);
            }
            (m, None) => {
                assert!(!x.ctx.in_stream);
                assert_eq!(m.stream_xid(), None);
                outside.push(m);
            }
        }
    }
    assert!(current.is_none(), "unterminated streamed block");
    (blocks, outside)
}

/// The `(xid, id)` of each single-column insert of `big`, in order.
fn big_inserts(changes: &[&PgOutputMessage]) -> Vec<(Xid, i32)> {
    changes
        .iter()
        .filter_map(|m| match m {
            M::Insert(i) => {
                let [ColumnValue::Text(v)] = i.new.columns.as_slice() else {
                    panic!("{i:?}")
                };
                Some((
                    i.xid.unwrap(),
                    std::str::from_utf8(v).unwrap().parse().unwrap(),
                ))
            }
            M::Relation(r) => {
                relation(
                    m,
                    r.xid,
                    "big",
                    ReplicaIdentity::Default,
                    vec![col(true, "id", INT4, -1)],
                );
                None
            }
            other => panic!("unexpected {other:?} in a streamed block"),
        })
        .collect()
}

#[test]
fn v3_stream_commit() {
    let d = decode(&load("v3_stream_commit"));
    let (blocks, outside) = blocks(&d);
    assert!(
        blocks.len() >= 2,
        "the transaction exceeds logical_decoding_work_mem"
    );
    let xid = blocks[0].xid;
    for (n, b) in blocks.iter().enumerate() {
        assert_eq!((b.xid, b.first_segment), (xid, n == 0));
    }
    let changes: Vec<_> = blocks
        .iter()
        .flat_map(|b| b.changes.iter().copied())
        .collect();
    let inserts = big_inserts(&changes);
    assert_eq!(inserts, (1..=600).map(|id| (xid, id)).collect::<Vec<_>>());
    let [M::StreamCommit(c)] = outside.as_slice() else {
        panic!("{outside:?}")
    };
    assert_eq!((c.xid, c.flags), (xid, 0));
    assert!(c.end_lsn > c.commit_lsn);
    assert_recent(c.commit_time);
}

#[test]
fn v3_stream_abort_of_a_subtransaction_and_of_a_transaction() {
    let d = decode(&load("v3_stream_abort"));
    let tags = tags(&d);
    let (blocks, outside) = blocks(&d);
    let [M::StreamAbort(sub), M::StreamCommit(c), M::StreamAbort(top)] = outside.as_slice() else {
        panic!("{outside:?}")
    };
    // First transaction: inserts 2001..=2600, a subtransaction 3001.. rolled back after being
    // partly streamed, then 4001 in a new subtransaction, committed.
    let xid = blocks[0].xid;
    assert_eq!((sub.xid, sub.parallel), (xid, None));
    assert_ne!(sub.subxid, xid);
    assert_eq!((c.xid, c.flags), (xid, 0));
    assert!(c.end_lsn > c.commit_lsn);
    let abort_at = tags.find('A').unwrap();
    let commit_at = tags.find('c').unwrap();
    let first: Vec<_> = blocks.iter().filter(|b| b.xid == xid).collect();
    assert!(first[0].first_segment && first[1..].iter().all(|b| !b.first_segment));
    let changes: Vec<_> = first
        .iter()
        .flat_map(|b| b.changes.iter().copied())
        .collect();
    let inserts = big_inserts(&changes);
    let (top_rows, rest): (Vec<_>, Vec<_>) = inserts.iter().partition(|(x, _)| *x == xid);
    assert_eq!(
        top_rows,
        (2001..=2600).map(|id| (xid, id)).collect::<Vec<_>>()
    );
    let (sub_rows, last): (Vec<_>, Vec<_>) = rest.iter().partition(|(x, _)| *x == sub.subxid);
    assert!(!sub_rows.is_empty());
    assert_eq!(
        sub_rows,
        (3001..3001 + sub_rows.len() as i32)
            .map(|id| (sub.subxid, id))
            .collect::<Vec<_>>()
    );
    let [(new_sub, 4001)] = last.as_slice() else {
        panic!("{last:?}")
    };
    assert!(![xid, sub.subxid].contains(new_sub));
    assert!(abort_at < commit_at);

    // Second transaction: streamed, then rolled back whole (subxid == xid).
    let second = blocks.last().unwrap();
    assert_ne!(second.xid, xid);
    assert_eq!(
        (top.xid, top.subxid, top.parallel),
        (second.xid, second.xid, None)
    );
    let second_rows = big_inserts(&second.changes);
    assert_eq!(
        second_rows,
        (5001..5001 + second_rows.len() as i32)
            .map(|id| (second.xid, id))
            .collect::<Vec<_>>()
    );
}

#[test]
fn v3_stream_prepare() {
    let d = decode(&load("v3_stream_prepare"));
    let (blocks, outside) = blocks(&d);
    let xid = blocks[0].xid;
    assert!(blocks.len() >= 2);
    let changes: Vec<_> = blocks
        .iter()
        .flat_map(|b| b.changes.iter().copied())
        .collect();
    assert_eq!(
        big_inserts(&changes),
        (6001..=6600).map(|id| (xid, id)).collect::<Vec<_>>()
    );
    let [M::StreamPrepare(p), M::CommitPrepared(k)] = outside.as_slice() else {
        panic!("{outside:?}")
    };
    assert_eq!((p.flags, p.xid, p.gid.as_str()), (0, xid, "bs-stream"));
    assert!(p.end_lsn > p.prepare_lsn);
    assert_recent(p.prepare_time);
    assert_eq!((k.flags, k.xid, k.gid.as_str()), (0, xid, "bs-stream"));
    assert!(k.commit_lsn >= p.end_lsn && k.end_lsn > k.commit_lsn);
    assert!(k.commit_time >= p.prepare_time);
}

/// A v4 capture: blocks of `big` inserts, a subtransaction's Stream Abort, a Stream Commit.
fn v4_subtransaction_abort(
    name: &str,
    parallel: bool,
) -> (Xid, Xid, Option<AbortInfo>, Lsn, PgTimestamp) {
    let capture = load(name);
    assert_eq!(
        (capture.version, capture.parallel),
        (ProtocolVersion::V4, parallel)
    );
    let d = decode(&capture);
    let (blocks, outside) = blocks(&d);
    let [M::StreamAbort(a), M::StreamCommit(c)] = outside.as_slice() else {
        panic!("{outside:?}")
    };
    let xid = blocks[0].xid;
    assert!(blocks.iter().all(|b| b.xid == xid));
    assert_eq!((a.xid, c.xid, c.flags), (xid, xid, 0));
    assert_ne!(a.subxid, xid);
    let changes: Vec<_> = blocks
        .iter()
        .flat_map(|b| b.changes.iter().copied())
        .collect();
    let inserts = big_inserts(&changes);
    assert!(
        inserts.iter().any(|(x, _)| *x == a.subxid),
        "the subtransaction was streamed"
    );
    assert!(c.end_lsn > c.commit_lsn);
    (xid, a.subxid, a.parallel, c.commit_lsn, c.commit_time)
}

#[test]
fn v4_parallel_stream_abort_carries_lsn_and_timestamp() {
    let (_, _, info, commit_lsn, commit_time) = v4_subtransaction_abort("v4_parallel_abort", true);
    let info = info.expect("abort LSN and timestamp under streaming 'parallel'");
    assert!(info.abort_lsn > Lsn(0) && info.abort_lsn <= commit_lsn);
    assert!(info.abort_time <= commit_time);
    assert_recent(info.abort_time);
}

#[test]
fn v4_stream_abort_without_parallel_has_no_abort_info() {
    let (_, _, info, _, _) = v4_subtransaction_abort("v4_stream_abort", false);
    assert_eq!(info, None);
}

#[test]
fn stream_abort_needs_the_right_parallel_setting() {
    let frame_of = |name: &str| {
        let d = decode(&load(name));
        d.into_iter().find(|x| x.message.tag() == b'A').unwrap()
    };
    // A parallel Stream Abort read without parallel streaming has 16 bytes too many …
    let parallel = frame_of("v4_parallel_abort");
    let mut ctx = parallel.ctx;
    ctx.parallel_streaming = false;
    let err = decode_message(parallel.frame.clone(), ctx).unwrap_err();
    assert_eq!(*err.kind(), DecodeErrorKind::TrailingBytes { count: 16 });
    assert_eq!(err.offset(), 9);
    // … and a plain one read with parallel streaming lacks the abort LSN.
    let plain = frame_of("v4_stream_abort");
    let mut ctx = plain.ctx;
    ctx.parallel_streaming = true;
    let err = decode_message(plain.frame.clone(), ctx).unwrap_err();
    assert_eq!(
        *err.kind(),
        DecodeErrorKind::Truncated {
            field: "abort LSN",
            needed: 8,
            remaining: 0
        }
    );
    assert_eq!(err.offset(), 9);
}
