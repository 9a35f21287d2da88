//! Unit tests of the assembler: one per rule, in memory and spilled.

use std::path::Path;

use blueshift_applier::{Change, Changes};
use blueshift_decoder::pgoutput::{
    BeginBody, BeginPrepareBody, ColumnValue, CommitBody, CommitPreparedBody, InsertBody,
    OriginBody, PgOutputMessage, PgTimestamp, RelationBody, RelationColumn, ReplicaIdentity,
    StreamAbortBody, StreamCommitBody, StreamStartBody, TupleData,
};
use blueshift_decoder::{Lsn, Oid, Xid};
use bytes::Bytes;

use super::*;

pub(super) fn relation(oid: u32, columns: usize, xid: Option<u32>) -> PgOutputMessage {
    PgOutputMessage::Relation(RelationBody {
        xid: xid.map(Xid),
        oid: Oid(oid),
        namespace: "public".to_owned(),
        name: format!("t{oid}"),
        replica_identity: ReplicaIdentity::Default,
        columns: (0..columns)
            .map(|i| RelationColumn {
                is_key: i == 0,
                name: format!("c{i}"),
                type_oid: Oid(25),
                type_modifier: -1,
            })
            .collect(),
    })
}

fn text(v: &str) -> ColumnValue {
    ColumnValue::Text(Bytes::copy_from_slice(v.as_bytes()))
}

pub(super) fn insert(xid: Option<u32>, oid: u32, value: &str) -> PgOutputMessage {
    PgOutputMessage::Insert(InsertBody {
        xid: xid.map(Xid),
        relation: Oid(oid),
        new: TupleData {
            columns: vec![text(value)],
        },
    })
}

pub(super) fn begin(xid: u32, lsn: u64) -> PgOutputMessage {
    PgOutputMessage::Begin(BeginBody {
        final_lsn: Lsn(lsn),
        commit_time: PgTimestamp(7),
        xid: Xid(xid),
    })
}

pub(super) fn commit(lsn: u64) -> PgOutputMessage {
    PgOutputMessage::Commit(CommitBody {
        flags: 0,
        commit_lsn: Lsn(lsn),
        end_lsn: Lsn(lsn + 8),
        commit_time: PgTimestamp(7),
    })
}

pub(super) fn start(xid: u32, first: bool) -> PgOutputMessage {
    PgOutputMessage::StreamStart(StreamStartBody {
        xid: Xid(xid),
        first_segment: first,
    })
}

pub(super) fn stream_commit(xid: u32, lsn: u64) -> PgOutputMessage {
    PgOutputMessage::StreamCommit(StreamCommitBody {
        xid: Xid(xid),
        flags: 0,
        commit_lsn: Lsn(lsn),
        end_lsn: Lsn(lsn + 8),
        commit_time: PgTimestamp(9),
    })
}

pub(super) fn abort(xid: u32, subxid: u32) -> PgOutputMessage {
    PgOutputMessage::StreamAbort(StreamAbortBody {
        xid: Xid(xid),
        subxid: Xid(subxid),
        parallel: None,
    })
}

fn origin(name: &str) -> PgOutputMessage {
    PgOutputMessage::Origin(OriginBody {
        commit_lsn: Lsn(0xAB),
        name: name.to_owned(),
    })
}

fn assembler(dir: &Path, max_memory: usize) -> TxAssembler {
    TxAssembler::new(AssemblerOptions {
        max_memory,
        spill_dir: dir.to_owned(),
        skip_origin_prefix: Some("blueshift_".to_owned()),
    })
    .expect("assembler")
}

pub(super) fn assembler_sharing(dir: &Path, budget: MemoryBudget) -> TxAssembler {
    TxAssembler::sharing(
        AssemblerOptions {
            max_memory: 0,
            spill_dir: dir.to_owned(),
            skip_origin_prefix: Some("blueshift_".to_owned()),
        },
        budget,
    )
    .expect("assembler")
}

/// Pushes every message; returns the outputs.
fn run(a: &mut TxAssembler, messages: Vec<PgOutputMessage>) -> Vec<Assembled> {
    messages
        .into_iter()
        .filter_map(|m| a.push(m).expect("push"))
        .collect()
}

pub(super) fn transaction(out: Assembled) -> Transaction {
    match out {
        Assembled::Transaction(t) => t,
        skipped @ Assembled::Skipped { .. } => panic!("skipped: {skipped:?}"),
    }
}

/// The first column of each insert, as text.
pub(super) fn values(changes: Changes) -> Vec<String> {
    collect_changes(changes)
        .expect("read back")
        .into_iter()
        .map(|c| match c {
            Change::Insert { new, .. } => match &new.columns[0] {
                ColumnValue::Text(b) => String::from_utf8(b.to_vec()).expect("utf8"),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        })
        .collect()
}

pub(super) fn files(dir: &Path) -> usize {
    std::fs::read_dir(dir).expect("read dir").count()
}

#[test]
fn plain_transaction_comes_out_whole_at_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = assembler(dir.path(), usize::MAX);
    assert!(!a.in_transaction());
    assert!(a.push(begin(5, 100)).unwrap().is_none());
    assert!(a.in_transaction());
    assert!(a.push(relation(1, 1, None)).unwrap().is_none());
    assert!(a.push(insert(None, 1, "a")).unwrap().is_none());
    assert!(a.push(insert(None, 1, "b")).unwrap().is_none());
    assert!(a.stats().buffered_bytes > 0);
    assert_eq!(a.stats().open_transactions, 1);
    let t = transaction(a.push(commit(100)).unwrap().expect("a transaction"));
    assert_eq!(
        (t.xid, t.commit_lsn, t.end_lsn, t.commit_time),
        (Xid(5), Lsn(100), Lsn(108), PgTimestamp(7))
    );
    assert_eq!(t.origin, None);
    assert_eq!(values(t.changes), ["a", "b"]);
    assert_eq!(a.stats().buffered_bytes, 0);
    assert_eq!(a.stats().open_transactions, 0);
    assert!(!a.in_transaction());
    assert_eq!(a.relations().len(), 1);
}

#[test]
fn commit_of_another_transaction_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = assembler(dir.path(), usize::MAX);
    a.push(begin(5, 100)).unwrap();
    let err = a.push(commit(200)).unwrap_err();
    assert!(matches!(
        err,
        AssembleError::CommitLsnMismatch { xid: Xid(5), .. }
    ));
    assert!(err.to_string().contains("0/64"), "{err}");
    assert!(err.to_string().contains("0/C8"), "{err}");
}

#[test]
fn malformed_sequences_are_errors_naming_the_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = assembler(dir.path(), usize::MAX);
    let err = a.push(commit(100)).unwrap_err();
    assert!(matches!(err, AssembleError::CommitWithoutBegin { .. }));
    assert!(err.to_string().contains("0/64"), "{err}");

    a.push(relation(1, 1, None)).unwrap();
    let err = a.push(insert(None, 1, "x")).unwrap_err();
    assert!(matches!(
        err,
        AssembleError::OutsideTransaction {
            message: "Insert",
            ..
        }
    ));

    let err = a.push(origin("elsewhere")).unwrap_err();
    assert!(matches!(
        err,
        AssembleError::OutsideTransaction {
            message: "Origin",
            ..
        }
    ));

    let err = a.push(PgOutputMessage::StreamStop).unwrap_err();
    assert!(matches!(err, AssembleError::StreamStopOutsideBlock));

    let err = a.push(stream_commit(77, 300)).unwrap_err();
    assert!(matches!(
        err,
        AssembleError::UnknownStreamedTransaction { xid: Xid(77), .. }
    ));
    assert!(err.to_string().contains("77"), "{err}");
    let err = a.push(abort(77, 78)).unwrap_err();
    assert!(matches!(
        err,
        AssembleError::UnknownStreamedTransaction { .. }
    ));
    let err = a.push(start(77, false)).unwrap_err();
    assert!(matches!(
        err,
        AssembleError::UnknownStreamedTransaction { .. }
    ));

    a.push(begin(5, 100)).unwrap();
    let err = a.push(begin(6, 200)).unwrap_err();
    assert!(matches!(
        err,
        AssembleError::BeginInsideTransaction {
            xid: Xid(6),
            open: Xid(5),
            ..
        }
    ));
    let err = a.push(start(9, true)).unwrap_err();
    assert!(matches!(
        err,
        AssembleError::StreamMisplaced { open: Xid(5), .. }
    ));
    let err = a.push(insert(Some(5), 1, "x")).unwrap_err();
    assert!(matches!(err, AssembleError::StreamXidPrefix { .. }));
    let err = a.push(insert(None, 999, "x")).unwrap_err();
    assert!(matches!(
        err,
        AssembleError::UnknownRelation { xid: Xid(5), .. }
    ));
    assert!(std::error::Error::source(&err).is_some());
    a.push(commit(100)).unwrap();

    a.push(start(9, true)).unwrap();
    let err = a.push(insert(None, 1, "x")).unwrap_err();
    assert!(matches!(
        err,
        AssembleError::StreamXidPrefix { xid: Xid(9), .. }
    ));
    let err = a.push(begin(6, 200)).unwrap_err();
    assert!(matches!(
        err,
        AssembleError::BeginInsideTransaction { open: Xid(9), .. }
    ));
    let err = a.push(stream_commit(9, 300)).unwrap_err();
    assert!(matches!(err, AssembleError::StreamMisplaced { .. }));
    a.push(PgOutputMessage::StreamStop).unwrap();
    let err = a.push(start(9, true)).unwrap_err();
    assert!(matches!(
        err,
        AssembleError::StreamRestarted { xid: Xid(9) }
    ));
}

#[test]
fn two_phase_messages_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = assembler(dir.path(), usize::MAX);
    let err = a
        .push(PgOutputMessage::BeginPrepare(BeginPrepareBody {
            prepare_lsn: Lsn(1),
            end_lsn: Lsn(2),
            prepare_time: PgTimestamp(0),
            xid: Xid(3),
            gid: "g1".to_owned(),
        }))
        .unwrap_err();
    assert!(matches!(
        err,
        AssembleError::TwoPhaseNotRequested { xid: Xid(3), .. }
    ));
    assert!(err.to_string().contains("two_phase"), "{err}");
    let err = a
        .push(PgOutputMessage::CommitPrepared(CommitPreparedBody {
            flags: 0,
            commit_lsn: Lsn(1),
            end_lsn: Lsn(2),
            commit_time: PgTimestamp(0),
            xid: Xid(4),
            gid: "g2".to_owned(),
        }))
        .unwrap_err();
    assert!(err.to_string().contains("g2"), "{err}");
}

#[test]
fn skipped_origin_is_dropped_and_its_end_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = assembler(dir.path(), usize::MAX);
    let out = run(
        &mut a,
        vec![
            begin(5, 100),
            origin("blueshift_green"),
            relation(1, 1, None),
            insert(None, 1, "loop"),
            commit(100),
        ],
    );
    let [Assembled::Skipped {
        xid,
        commit_lsn,
        end_lsn,
        origin: dropped_for,
        ..
    }] = out.as_slice()
    else {
        panic!("{out:?}")
    };
    assert_eq!((*xid, *commit_lsn, *end_lsn), (Xid(5), Lsn(100), Lsn(108)));
    assert_eq!(dropped_for.name, "blueshift_green");
    assert_eq!(a.stats().skipped_transactions_total, 1);
    assert_eq!(a.stats().buffered_bytes, 0);
    // The Relation inside the dropped transaction still counts.
    assert!(a.relations().get(Oid(1)).is_some());

    let out = run(
        &mut a,
        vec![
            begin(6, 200),
            origin("remote"),
            insert(None, 1, "kept"),
            commit(200),
        ],
    );
    let t = transaction(out.into_iter().next().expect("one"));
    assert_eq!(
        t.origin,
        Some(Origin {
            name: "remote".to_owned(),
            lsn: Lsn(0xAB)
        })
    );
    assert_eq!(values(t.changes), ["kept"]);
}

#[test]
fn streamed_skipped_origin_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = assembler(dir.path(), 0);
    let out = run(
        &mut a,
        vec![
            start(9, true),
            origin("blueshift_x"),
            relation(1, 1, Some(9)),
            insert(Some(9), 1, "a"),
            PgOutputMessage::StreamStop,
            start(9, false),
            insert(Some(9), 1, "b"),
            PgOutputMessage::StreamStop,
            stream_commit(9, 500),
        ],
    );
    assert!(matches!(out.as_slice(), [Assembled::Skipped { end_lsn, .. }] if *end_lsn == Lsn(508)));
    assert_eq!(a.stats().spilled_transactions_total, 0);
    assert_eq!(files(dir.path()), 0);
}

#[test]
fn interleaved_streams_with_subtransaction_and_whole_aborts() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = assembler(dir.path(), usize::MAX);
    let first = run(
        &mut a,
        vec![
            start(10, true),
            relation(1, 1, Some(10)),
            insert(Some(10), 1, "10a"),
            insert(Some(11), 1, "11a"),
        ],
    );
    assert!(first.is_empty());
    assert!(a.in_transaction(), "inside a streamed block");
    let mut out = run(
        &mut a,
        vec![
            PgOutputMessage::StreamStop,
            start(20, true),
            relation(1, 1, Some(20)),
            insert(Some(20), 1, "20a"),
            PgOutputMessage::StreamStop,
            // A plain transaction between the blocks.
            begin(30, 250),
            insert(None, 1, "30a"),
            commit(250),
            start(10, false),
            insert(Some(12), 1, "12a"),
            insert(Some(10), 1, "10b"),
            insert(Some(11), 1, "11b"),
            PgOutputMessage::StreamStop,
            abort(10, 11),
            abort(20, 20),
            start(10, false),
            insert(Some(10), 1, "10c"),
            PgOutputMessage::StreamStop,
        ],
    );
    assert!(!a.in_transaction(), "between blocks");
    assert_eq!(a.stats().open_transactions, 1);
    out.extend(run(&mut a, vec![stream_commit(10, 400)]));
    assert_eq!(out.len(), 2);
    let mut out = out.into_iter().map(transaction);
    let plain = out.next().unwrap();
    assert_eq!(plain.xid, Xid(30));
    assert_eq!(values(plain.changes), ["30a"]);
    let streamed = out.next().unwrap();
    assert_eq!((streamed.xid, streamed.commit_lsn), (Xid(10), Lsn(400)));
    assert_eq!(values(streamed.changes), ["10a", "12a", "10b", "10c"]);
    assert_eq!(a.stats().buffered_bytes, 0);
    assert_eq!(a.stats().open_transactions, 0);
    // Transaction 20 is gone: committing it now is an error.
    assert!(a.push(stream_commit(20, 500)).is_err());
}

#[test]
fn large_plain_transaction_spills_and_reads_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = assembler(dir.path(), 4096);
    let mut messages = vec![begin(5, 100), relation(1, 1, None)];
    let expected: Vec<String> = (0..1000).map(|i| format!("value {i}")).collect();
    messages.extend(expected.iter().map(|v| insert(None, 1, v)));
    messages.push(commit(100));
    let out = run(&mut a, messages);
    let stats = a.stats();
    assert_eq!(stats.spilled_transactions_total, 1);
    assert!(stats.spilled_bytes_total > 1000 * 10, "{stats:?}");
    assert_eq!(stats.buffered_bytes, 0);
    let t = transaction(out.into_iter().next().unwrap());
    let Changes::Spilled(reader) = &t.changes else {
        panic!("not spilled")
    };
    assert_eq!(reader.len(), 1000);
    assert_eq!(files(dir.path()), 1);
    assert_eq!(values(t.changes), expected);
    assert_eq!(
        files(dir.path()),
        0,
        "the spill file is deleted with its reader"
    );
}

#[test]
fn memory_stays_within_the_limit_while_spilling() {
    let dir = tempfile::tempdir().unwrap();
    let limit = 10_000;
    let mut a = assembler(dir.path(), limit);
    a.push(relation(1, 1, None)).unwrap();
    // Three interleaved streamed transactions; the limit is checked after every change.
    for xid in [10u32, 20, 30] {
        a.push(start(xid, true)).unwrap();
        a.push(PgOutputMessage::StreamStop).unwrap();
    }
    for round in 0..200 {
        for xid in [10u32, 20, 30] {
            a.push(start(xid, false)).unwrap();
            a.push(insert(Some(xid), 1, &format!("{xid}-{round}")))
                .unwrap();
            a.push(PgOutputMessage::StreamStop).unwrap();
            assert!(a.stats().buffered_bytes <= limit, "{:?}", a.stats());
        }
    }
    assert!(a.stats().spilled_transactions_total >= 2, "{:?}", a.stats());
    for (i, xid) in [10u32, 20, 30].into_iter().enumerate() {
        let t = transaction(
            a.push(stream_commit(xid, 1000 + i as u64))
                .unwrap()
                .unwrap(),
        );
        let expected: Vec<String> = (0..200).map(|r| format!("{xid}-{r}")).collect();
        assert_eq!(values(t.changes), expected);
    }
    assert_eq!(a.stats().buffered_bytes, 0);
    assert_eq!(files(dir.path()), 0);
}

#[test]
fn aborting_a_spilled_transaction_deletes_its_file_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = assembler(dir.path(), 0);
    run(
        &mut a,
        vec![
            start(10, true),
            relation(1, 1, Some(10)),
            insert(Some(10), 1, "a"),
            PgOutputMessage::StreamStop,
        ],
    );
    assert_eq!(files(dir.path()), 1);
    a.push(abort(10, 10)).unwrap();
    assert_eq!(files(dir.path()), 0);
}

#[test]
fn spilled_subtransaction_abort_skips_only_its_earlier_records() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = assembler(dir.path(), 0);
    let out = run(
        &mut a,
        vec![
            start(10, true),
            relation(1, 1, Some(10)),
            insert(Some(10), 1, "top1"),
            insert(Some(11), 1, "sub11"),
            insert(Some(12), 1, "sub12"),
            insert(Some(13), 1, "nested13"),
            PgOutputMessage::StreamStop,
            abort(10, 13),
            abort(10, 11),
            start(10, false),
            insert(Some(10), 1, "top2"),
            PgOutputMessage::StreamStop,
            stream_commit(10, 400),
        ],
    );
    let t = transaction(out.into_iter().next().unwrap());
    let Changes::Spilled(reader) = &t.changes else {
        panic!("not spilled")
    };
    assert_eq!(reader.len(), 3);
    assert_eq!(values(t.changes), ["top1", "sub12", "top2"]);
}

#[test]
fn relation_changes_mid_transaction_survive_the_spill() {
    for limit in [usize::MAX, 0] {
        let dir = tempfile::tempdir().unwrap();
        let mut a = assembler(dir.path(), limit);
        let out = run(
            &mut a,
            vec![
                begin(5, 100),
                relation(1, 1, None),
                insert(None, 1, "one column"),
                relation(2, 1, None),
                insert(None, 2, "other table"),
                relation(1, 3, None),
                PgOutputMessage::Insert(InsertBody {
                    xid: None,
                    relation: Oid(1),
                    new: TupleData {
                        columns: vec![text("three columns"), ColumnValue::Null, text("c")],
                    },
                }),
                commit(100),
            ],
        );
        let t = transaction(out.into_iter().next().unwrap());
        assert_eq!(t.changes.in_memory().is_none(), limit == 0);
        let columns: Vec<(u32, usize)> = collect_changes(t.changes)
            .unwrap()
            .iter()
            .map(|c| match c {
                Change::Insert { relation, .. } => (relation.oid().0, relation.columns().len()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(columns, [(1, 1), (2, 1), (1, 3)], "limit {limit}");
    }
}

#[test]
fn leftover_spill_files_are_removed_at_start_and_others_kept() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(spill::file_name(Xid(3), 0)), b"old").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
    let _a = assembler(dir.path(), 0);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["notes.txt"]);
    // A missing folder is created.
    let nested = dir.path().join("a/b");
    let _b = assembler(&nested, 0);
    assert!(nested.is_dir());
}

#[test]
fn reset_and_drop_delete_open_spill_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = assembler(dir.path(), 0);
    let open = vec![
        start(10, true),
        relation(1, 1, Some(10)),
        insert(Some(10), 1, "a"),
        PgOutputMessage::StreamStop,
    ];
    run(&mut a, open.clone());
    assert_eq!(files(dir.path()), 1);
    a.reset();
    assert_eq!(files(dir.path()), 0);
    assert!(a.relations().is_empty());
    run(&mut a, open);
    assert_eq!(files(dir.path()), 1);
    drop(a);
    assert!(!dir.path().exists(), "the files and the folder are gone");
}

#[test]
fn a_damaged_spill_file_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = assembler(dir.path(), 0);
    let mut messages = vec![begin(5, 100), relation(1, 1, None)];
    messages.extend((0..100).map(|i| insert(None, 1, &format!("v{i}"))));
    messages.push(commit(100));
    let t = transaction(run(&mut a, messages).into_iter().next().unwrap());
    let Changes::Spilled(mut reader) = t.changes else {
        panic!("not spilled")
    };
    let path = std::fs::read_dir(dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let full = std::fs::metadata(&path).unwrap().len();
    // Cut the file in the middle of a record (the reader has buffered nothing yet).
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(full / 2 + 3)
        .unwrap();
    let mut read = 0;
    let err = loop {
        match reader.next_change() {
            Ok(Some(_)) => read += 1,
            Ok(None) => panic!("a cut file read to its end"),
            Err(e) => break e,
        }
    };
    assert!(read < 100);
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData
        ),
        "{err}"
    );
}

#[test]
fn the_assembler_and_its_outputs_move_between_threads() {
    fn send<T: Send>() {}
    send::<TxAssembler>();
    send::<Assembled>();
    send::<AssembleError>();
    send::<SpillReader>();
}

#[test]
fn spill_files_are_private_and_the_folder_goes_away() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("blueshift_spill_s");
    // An existing folder open to everyone is narrowed to 0700.
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut a = assembler(&dir, 1);
    assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
    a.push(begin(5, 100)).unwrap();
    a.push(relation(1, 1, None)).unwrap();
    a.push(insert(None, 1, "secret row")).unwrap();
    let spilled: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(spilled.len(), 1, "the transaction spilled to one file");
    assert_eq!(
        std::fs::metadata(&spilled[0]).unwrap().mode() & 0o777,
        0o600
    );
    drop(a);
    assert!(!dir.exists(), "the spill folder outlived its assembler");

    // A folder of another user, or a symlink, is refused.
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    let err = TxAssembler::new(AssemblerOptions {
        max_memory: 1,
        spill_dir: dir.clone(),
        skip_origin_prefix: None,
    })
    .unwrap_err();
    assert!(matches!(err, AssembleError::SpillDir { .. }), "{err}");
    std::fs::remove_dir(&dir).unwrap();
    std::os::unix::fs::symlink(parent.path(), &dir).unwrap();
    assert!(TxAssembler::new(AssemblerOptions {
        max_memory: 1,
        spill_dir: dir.clone(),
        skip_origin_prefix: None,
    })
    .is_err());
}

#[test]
fn one_process_at_a_time_claims_a_spill_folder() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let lock = parent.path().join("blueshift_spill_s.lock");
    let held = spill::claim(&lock).unwrap().expect("free at first");
    assert_eq!(
        std::fs::metadata(&lock).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Another open of the same file (as another process would) finds it held.
    assert!(spill::claim(&lock).unwrap().is_none(), "claimed twice");
    drop(held);
    let again = spill::claim(&lock).unwrap();
    assert!(again.is_some(), "free again once the holder let go");
    // A symlink planted at the lock's path is not followed.
    drop(again);
    std::fs::remove_file(&lock).unwrap();
    std::os::unix::fs::symlink(parent.path().join("elsewhere"), &lock).unwrap();
    assert!(spill::claim(&lock).is_err());
    assert!(!parent.path().join("elsewhere").exists());
}

/// A tapped streamed transaction hands out each change it keeps and each Stream Abort as they
/// arrive, in order — spilled or not — and nothing of untapped or plain transactions.
#[test]
fn a_tapped_stream_hands_out_its_changes_and_aborts_as_they_arrive() {
    for max_memory in [usize::MAX, 1] {
        let dir = tempfile::tempdir().unwrap();
        let mut a = assembler(dir.path(), max_memory);
        a.tap(Xid(10));
        let out = run(
            &mut a,
            vec![
                start(10, true),
                relation(1, 1, Some(10)),
                insert(Some(10), 1, "10a"),
                insert(Some(11), 1, "11a"),
                PgOutputMessage::StreamStop,
                start(20, true),
                relation(1, 1, Some(20)),
                insert(Some(20), 1, "20a"),
                PgOutputMessage::StreamStop,
                begin(30, 250),
                insert(None, 1, "30a"),
                commit(250),
                abort(10, 11),
                start(10, false),
                insert(Some(10), 1, "10b"),
                PgOutputMessage::StreamStop,
            ],
        );
        assert_eq!(out.len(), 1, "the plain transaction");
        let taps: Vec<String> = a
            .drain_tapped()
            .map(|t| match t {
                Tapped::Change {
                    xid,
                    subxid,
                    change: Change::Insert { new, .. },
                    size,
                } => {
                    assert!(size > 0);
                    let ColumnValue::Text(v) = &new.columns[0] else {
                        panic!("{new:?}")
                    };
                    format!("{}/{}:{}", xid.0, subxid.0, String::from_utf8_lossy(v))
                }
                Tapped::Abort { xid, subxid } => format!("abort {}/{}", xid.0, subxid.0),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            taps,
            ["10/10:10a", "10/11:11a", "abort 10/11", "10/10:10b"],
            "max_memory {max_memory}"
        );
        // Untapped from here: its commit still comes out whole, with its aborted part gone.
        a.untap(Xid(10));
        let committed = run(&mut a, vec![stream_commit(10, 400)]);
        assert_eq!(a.drain_tapped().count(), 0);
        let tx = transaction(committed.into_iter().next().unwrap());
        assert_eq!(values(tx.changes), ["10a", "10b"]);
        // A top-level abort of a tapped transaction is handed out too, once.
        a.tap(Xid(20));
        run(&mut a, vec![abort(20, 20)]);
        let taps: Vec<_> = a.drain_tapped().collect();
        assert!(
            matches!(
                taps.as_slice(),
                [Tapped::Abort {
                    xid: Xid(20),
                    subxid: Xid(20)
                }]
            ),
            "{taps:?}"
        );
    }
}
