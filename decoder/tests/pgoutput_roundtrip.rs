//! Property tests: arbitrary `pgoutput` messages survive encode → decode unchanged, inside and
//! outside streamed blocks, with and without `streaming 'parallel'`; and any bytes the decoder
//! accepts encode back to exactly those bytes.
//!
//! Formats: <https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html>.

use blueshift_decoder::pgoutput::{
    decode_message, encode, AbortInfo, BeginBody, BeginPrepareBody, ColumnValue, CommitBody,
    CommitPreparedBody, DecodeContext, DeleteBody, InsertBody, LogicalMessageBody, OldTuple,
    OriginBody, PgOutputMessage, PgTimestamp, PrepareBody, ProtocolVersion, RelationBody,
    RelationColumn, ReplicaIdentity, RollbackPreparedBody, StreamAbortBody, StreamCommitBody,
    StreamStartBody, TruncateBody, TupleData, TypeBody, UpdateBody,
};
use blueshift_decoder::{Lsn, Oid, Xid};
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use PgOutputMessage as M;

fn lsn() -> impl Strategy<Value = Lsn> {
    any::<u64>().prop_map(Lsn)
}
fn ts() -> impl Strategy<Value = PgTimestamp> {
    any::<i64>().prop_map(PgTimestamp)
}
fn xid() -> impl Strategy<Value = Xid> {
    any::<u32>().prop_map(Xid)
}
fn oid() -> impl Strategy<Value = Oid> {
    any::<u32>().prop_map(Oid)
}
/// A protocol string: any UTF-8 without NUL.
fn name() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,12}"
}
fn bytes() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}
fn stream_xid(in_stream: bool) -> BoxedStrategy<Option<Xid>> {
    if in_stream {
        xid().prop_map(Some).boxed()
    } else {
        Just(None).boxed()
    }
}

fn column_value() -> impl Strategy<Value = ColumnValue> {
    prop_oneof![
        Just(ColumnValue::Null),
        Just(ColumnValue::UnchangedToast),
        bytes().prop_map(ColumnValue::Text),
        bytes().prop_map(ColumnValue::Binary),
    ]
}
fn tuple() -> impl Strategy<Value = TupleData> {
    prop::collection::vec(column_value(), 0..6).prop_map(|columns| TupleData { columns })
}
fn old_tuple() -> impl Strategy<Value = OldTuple> {
    prop_oneof![
        tuple().prop_map(OldTuple::Key),
        tuple().prop_map(OldTuple::Full)
    ]
}
fn identity() -> impl Strategy<Value = ReplicaIdentity> {
    prop_oneof![
        Just(ReplicaIdentity::Default),
        Just(ReplicaIdentity::Nothing),
        Just(ReplicaIdentity::Full),
        Just(ReplicaIdentity::Index),
    ]
}
fn relation_column() -> impl Strategy<Value = RelationColumn> {
    (any::<bool>(), name(), oid(), any::<i32>()).prop_map(
        |(is_key, name, type_oid, type_modifier)| RelationColumn {
            is_key,
            name,
            type_oid,
            type_modifier,
        },
    )
}

/// Messages that may come inside or outside a streamed block.
fn anywhere(in_stream: bool) -> BoxedStrategy<PgOutputMessage> {
    let x = || stream_xid(in_stream);
    prop_oneof![
        (x(), any::<bool>(), lsn(), name(), bytes()).prop_map(
            |(xid, transactional, lsn, prefix, content)| M::Message(LogicalMessageBody {
                xid,
                transactional,
                lsn,
                prefix,
                content
            })
        ),
        (lsn(), name()).prop_map(|(commit_lsn, name)| M::Origin(OriginBody { commit_lsn, name })),
        (
            x(),
            oid(),
            name(),
            name(),
            identity(),
            prop::collection::vec(relation_column(), 0..5)
        )
            .prop_map(|(xid, oid, namespace, name, replica_identity, columns)| {
                M::Relation(RelationBody {
                    xid,
                    oid,
                    namespace,
                    name,
                    replica_identity,
                    columns,
                })
            }),
        (x(), oid(), name(), name()).prop_map(|(xid, oid, namespace, name)| M::Type(TypeBody {
            xid,
            oid,
            namespace,
            name
        })),
        (x(), oid(), tuple()).prop_map(|(xid, relation, new)| M::Insert(InsertBody {
            xid,
            relation,
            new
        })),
        (x(), oid(), prop::option::of(old_tuple()), tuple()).prop_map(
            |(xid, relation, old, new)| M::Update(UpdateBody {
                xid,
                relation,
                old,
                new
            })
        ),
        (x(), oid(), old_tuple()).prop_map(|(xid, relation, old)| M::Delete(DeleteBody {
            xid,
            relation,
            old
        })),
        (
            x(),
            any::<bool>(),
            any::<bool>(),
            prop::collection::vec(oid(), 0..5)
        )
            .prop_map(|(xid, cascade, restart_identity, relations)| {
                M::Truncate(TruncateBody {
                    xid,
                    cascade,
                    restart_identity,
                    relations,
                })
            }),
    ]
    .boxed()
}

/// Messages that only come outside a streamed block.
fn outside(parallel: bool) -> BoxedStrategy<PgOutputMessage> {
    let abort_info = if parallel {
        (lsn(), ts())
            .prop_map(|(abort_lsn, abort_time)| {
                Some(AbortInfo {
                    abort_lsn,
                    abort_time,
                })
            })
            .boxed()
    } else {
        Just(None).boxed()
    };
    let prepare = || {
        (any::<u8>(), lsn(), lsn(), ts(), xid(), name()).prop_map(
            |(flags, prepare_lsn, end_lsn, prepare_time, xid, gid)| PrepareBody {
                flags,
                prepare_lsn,
                end_lsn,
                prepare_time,
                xid,
                gid,
            },
        )
    };
    prop_oneof![
        (lsn(), ts(), xid()).prop_map(|(final_lsn, commit_time, xid)| M::Begin(BeginBody {
            final_lsn,
            commit_time,
            xid
        })),
        (any::<u8>(), lsn(), lsn(), ts()).prop_map(|(flags, commit_lsn, end_lsn, commit_time)| {
            M::Commit(CommitBody {
                flags,
                commit_lsn,
                end_lsn,
                commit_time,
            })
        }),
        (xid(), any::<bool>()).prop_map(|(xid, first_segment)| M::StreamStart(StreamStartBody {
            xid,
            first_segment
        })),
        (xid(), any::<u8>(), lsn(), lsn(), ts()).prop_map(
            |(xid, flags, commit_lsn, end_lsn, commit_time)| M::StreamCommit(StreamCommitBody {
                xid,
                flags,
                commit_lsn,
                end_lsn,
                commit_time
            })
        ),
        (xid(), xid(), abort_info).prop_map(|(xid, subxid, parallel)| M::StreamAbort(
            StreamAbortBody {
                xid,
                subxid,
                parallel
            }
        )),
        (lsn(), lsn(), ts(), xid(), name()).prop_map(
            |(prepare_lsn, end_lsn, prepare_time, xid, gid)| M::BeginPrepare(BeginPrepareBody {
                prepare_lsn,
                end_lsn,
                prepare_time,
                xid,
                gid
            })
        ),
        prepare().prop_map(M::Prepare),
        prepare().prop_map(M::StreamPrepare),
        (any::<u8>(), lsn(), lsn(), ts(), xid(), name()).prop_map(
            |(flags, commit_lsn, end_lsn, commit_time, xid, gid)| {
                M::CommitPrepared(CommitPreparedBody {
                    flags,
                    commit_lsn,
                    end_lsn,
                    commit_time,
                    xid,
                    gid,
                })
            }
        ),
        (any::<u8>(), lsn(), lsn(), ts(), ts(), xid(), name()).prop_map(
            |(flags, prepare_end_lsn, rollback_end_lsn, prepare_time, rollback_time, xid, gid)| {
                M::RollbackPrepared(RollbackPreparedBody {
                    flags,
                    prepare_end_lsn,
                    rollback_end_lsn,
                    prepare_time,
                    rollback_time,
                    xid,
                    gid,
                })
            }
        ),
    ]
    .boxed()
}

/// A decoding context and a message that may be sent in it.
fn message_in_context() -> impl Strategy<Value = (DecodeContext, PgOutputMessage)> {
    (any::<bool>(), any::<bool>()).prop_flat_map(|(in_stream, parallel)| {
        let ctx = DecodeContext {
            protocol_version: ProtocolVersion::V4,
            in_stream,
            parallel_streaming: parallel,
        };
        let message = if in_stream {
            prop_oneof![4 => anywhere(true), 1 => Just(M::StreamStop)].boxed()
        } else {
            prop_oneof![anywhere(false), outside(parallel)].boxed()
        };
        (Just(ctx), message)
    })
}

/// The first protocol version that has this message.
fn required_version(message: &PgOutputMessage) -> ProtocolVersion {
    match message {
        M::StreamStart(_) | M::StreamStop | M::StreamCommit(_) | M::StreamAbort(_) => {
            ProtocolVersion::V2
        }
        M::BeginPrepare(_)
        | M::Prepare(_)
        | M::CommitPrepared(_)
        | M::RollbackPrepared(_)
        | M::StreamPrepare(_) => ProtocolVersion::V3,
        _ => ProtocolVersion::V1,
    }
}

fn encoded(message: &PgOutputMessage, in_stream: bool) -> Bytes {
    let mut out = BytesMut::new();
    encode(message, in_stream, &mut out).expect("generated messages are encodable");
    out.freeze()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn encode_then_decode_is_identity((ctx, message) in message_in_context()) {
        let frame = encoded(&message, ctx.in_stream);
        prop_assert_eq!(frame[0], message.tag());
        let decoded = decode_message(frame.clone(), ctx);
        prop_assert_eq!(decoded.as_ref(), Ok(&message));
        // Values stay slices of the frame.
        if let Ok(M::Insert(i)) = &decoded {
            for v in i.new.columns.iter().filter_map(ColumnValue::bytes).filter(|v| !v.is_empty()) {
                prop_assert!(frame.as_ptr_range().contains(&v.as_ptr()));
            }
        }
    }

    #[test]
    fn older_protocol_versions_refuse_newer_messages((ctx, message) in message_in_context()) {
        let frame = encoded(&message, ctx.in_stream);
        for version in [ProtocolVersion::V1, ProtocolVersion::V2, ProtocolVersion::V3] {
            let older = DecodeContext { protocol_version: version, ..ctx };
            let result = decode_message(frame.clone(), older);
            prop_assert_eq!(result.is_ok(), version >= required_version(&message));
        }
    }

    #[test]
    fn every_strict_prefix_fails((ctx, message) in message_in_context()) {
        let frame = encoded(&message, ctx.in_stream);
        for len in 0..frame.len() {
            prop_assert!(decode_message(frame.slice(..len), ctx).is_err());
        }
    }

    #[test]
    fn accepted_bytes_encode_back_exactly(
        tag in prop::sample::select(b"BMCORYIUDTSEcAbPKrpZ".to_vec()),
        body in prop::collection::vec(any::<u8>(), 0..48),
        in_stream in any::<bool>(),
        parallel in any::<bool>(),
    ) {
        let mut frame = vec![tag];
        frame.extend_from_slice(&body);
        let ctx = DecodeContext {
            protocol_version: ProtocolVersion::V4,
            in_stream,
            parallel_streaming: parallel,
        };
        if let Ok(message) = decode_message(Bytes::from(frame.clone()), ctx) {
            prop_assert_eq!(&encoded(&message, in_stream)[..], &frame[..]);
        }
    }
}
