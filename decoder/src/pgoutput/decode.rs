//! Decoding: [`decode_message`] (stateless) and [`PgOutputDecoder`] (the little state the
//! protocol needs).
//!
//! Implements <https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html>
//! for protocol versions 1 to 4. Two facts are not in the bytes of a frame and must come from
//! outside, in a [`DecodeContext`]:
//!
//! - whether the frame is inside a Stream Start … Stream Stop block: then Relation, Type,
//!   Insert, Update, Delete, Truncate and Message start with the xid of the streamed
//!   transaction;
//! - whether `streaming 'parallel'` was requested: then Stream Abort ends with the abort LSN and
//!   timestamp.
//!
//! [`PgOutputDecoder`] tracks the first from the Stream Start and Stream Stop messages it
//! decodes, and holds the second as an option.

use bytes::Bytes;

use super::error::{DecodeError, DecodeErrorKind};
use super::message::{
    AbortInfo, BeginBody, BeginPrepareBody, CommitBody, CommitPreparedBody, DeleteBody, InsertBody,
    LogicalMessageBody, OriginBody, PgOutputMessage, PrepareBody, ProtocolVersion, RelationBody,
    RelationColumn, ReplicaIdentity, RollbackPreparedBody, StreamAbortBody, StreamCommitBody,
    StreamStartBody, TruncateBody, TypeBody, UpdateBody,
};
use super::reader::Reader;
use super::tag;
use super::tuple::{read_tuple, OldTuple};
use crate::Xid;

/// What a frame's bytes do not say but its decoding depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeContext {
    /// The negotiated `proto_version`: messages of later versions are refused.
    pub protocol_version: ProtocolVersion,
    /// Whether the frame comes between a Stream Start and its Stream Stop.
    pub in_stream: bool,
    /// Whether `streaming 'parallel'` was requested (the server accepts it only with protocol
    /// version 4): Stream Abort then carries the abort LSN and timestamp.
    pub parallel_streaming: bool,
}

impl DecodeContext {
    /// A context for `protocol_version`, outside any streamed block, without parallel
    /// streaming.
    pub fn new(protocol_version: ProtocolVersion) -> Self {
        DecodeContext {
            protocol_version,
            in_stream: false,
            parallel_streaming: false,
        }
    }
}

/// Where in the stream a message may appear.
#[derive(Clone, Copy)]
enum Placement {
    /// Inside or outside a Stream Start … Stream Stop block.
    Anywhere,
    /// Only outside such a block (transaction boundaries, Stream Start itself).
    OutsideStream,
    /// Only inside such a block (Stream Stop).
    InsideStream,
}

/// Refuses a message of a later protocol version, or in a place it never appears.
fn check(
    ctx: DecodeContext,
    tag: u8,
    since: ProtocolVersion,
    placement: Placement,
) -> Result<(), DecodeError> {
    if ctx.protocol_version < since {
        return Err(DecodeError::new(
            0,
            DecodeErrorKind::TagNotInVersion {
                tag,
                required: since,
                negotiated: ctx.protocol_version,
            },
        ));
    }
    match (placement, ctx.in_stream) {
        (Placement::OutsideStream, true) => Err(DecodeError::new(
            0,
            DecodeErrorKind::NotAllowedInStream { tag },
        )),
        (Placement::InsideStream, false) => Err(DecodeError::new(
            0,
            DecodeErrorKind::NotAllowedOutsideStream { tag },
        )),
        _ => Ok(()),
    }
}

/// Decodes one `pgoutput` message (one `XLogData` payload, or one `data` value of
/// `pg_logical_slot_peek_binary_changes`) in the given context. Column values and message
/// content in the result are slices of `frame`.
///
/// The whole frame must be one message: bytes after it are a
/// [`DecodeErrorKind::TrailingBytes`] error.
pub fn decode_message(frame: Bytes, ctx: DecodeContext) -> Result<PgOutputMessage, DecodeError> {
    use PgOutputMessage as M;
    use Placement::{Anywhere, InsideStream, OutsideStream};
    use ProtocolVersion::{V1, V2, V3};

    let mut r = Reader::new(&frame);
    if r.remaining() == 0 {
        return Err(DecodeError::new(0, DecodeErrorKind::Empty));
    }
    let tag = r.u8("message tag")?;
    let body = |r: &mut Reader<'_>| -> Result<PgOutputMessage, DecodeError> {
        Ok(match tag {
            tag::BEGIN => {
                check(ctx, tag, V1, OutsideStream)?;
                M::Begin(read_begin(r)?)
            }
            tag::MESSAGE => {
                check(ctx, tag, V1, Anywhere)?;
                M::Message(read_logical_message(r, ctx)?)
            }
            tag::COMMIT => {
                check(ctx, tag, V1, OutsideStream)?;
                M::Commit(read_commit(r)?)
            }
            tag::ORIGIN => {
                check(ctx, tag, V1, Anywhere)?;
                M::Origin(read_origin(r)?)
            }
            tag::RELATION => {
                check(ctx, tag, V1, Anywhere)?;
                M::Relation(read_relation(r, ctx)?)
            }
            tag::TYPE => {
                check(ctx, tag, V1, Anywhere)?;
                M::Type(read_type(r, ctx)?)
            }
            tag::INSERT => {
                check(ctx, tag, V1, Anywhere)?;
                M::Insert(read_insert(r, ctx)?)
            }
            tag::UPDATE => {
                check(ctx, tag, V1, Anywhere)?;
                M::Update(read_update(r, ctx)?)
            }
            tag::DELETE => {
                check(ctx, tag, V1, Anywhere)?;
                M::Delete(read_delete(r, ctx)?)
            }
            tag::TRUNCATE => {
                check(ctx, tag, V1, Anywhere)?;
                M::Truncate(read_truncate(r, ctx)?)
            }
            tag::STREAM_START => {
                check(ctx, tag, V2, OutsideStream)?;
                M::StreamStart(read_stream_start(r)?)
            }
            tag::STREAM_STOP => {
                check(ctx, tag, V2, InsideStream)?;
                M::StreamStop
            }
            tag::STREAM_COMMIT => {
                check(ctx, tag, V2, OutsideStream)?;
                M::StreamCommit(read_stream_commit(r)?)
            }
            tag::STREAM_ABORT => {
                check(ctx, tag, V2, OutsideStream)?;
                M::StreamAbort(read_stream_abort(r, ctx)?)
            }
            tag::BEGIN_PREPARE => {
                check(ctx, tag, V3, OutsideStream)?;
                M::BeginPrepare(read_begin_prepare(r)?)
            }
            tag::PREPARE => {
                check(ctx, tag, V3, OutsideStream)?;
                M::Prepare(read_prepare(r)?)
            }
            tag::COMMIT_PREPARED => {
                check(ctx, tag, V3, OutsideStream)?;
                M::CommitPrepared(read_commit_prepared(r)?)
            }
            tag::ROLLBACK_PREPARED => {
                check(ctx, tag, V3, OutsideStream)?;
                M::RollbackPrepared(read_rollback_prepared(r)?)
            }
            tag::STREAM_PREPARE => {
                check(ctx, tag, V3, OutsideStream)?;
                M::StreamPrepare(read_prepare(r)?)
            }
            _ => return Err(DecodeError::new(0, DecodeErrorKind::UnknownTag { tag })),
        })
    };
    let message = body(&mut r).map_err(|e| e.in_message(tag))?;
    r.finish().map_err(|e| e.in_message(tag))?;
    Ok(message)
}

/// The xid prefix of a message that has one only inside a streamed block.
fn stream_xid(r: &mut Reader<'_>, ctx: DecodeContext) -> Result<Option<Xid>, DecodeError> {
    if ctx.in_stream {
        r.xid("xid of the streamed transaction").map(Some)
    } else {
        Ok(None)
    }
}

fn read_begin(r: &mut Reader<'_>) -> Result<BeginBody, DecodeError> {
    Ok(BeginBody {
        final_lsn: r.lsn("final LSN")?,
        commit_time: r.timestamp("commit timestamp")?,
        xid: r.xid("xid")?,
    })
}

fn read_logical_message(
    r: &mut Reader<'_>,
    ctx: DecodeContext,
) -> Result<LogicalMessageBody, DecodeError> {
    const FLAGS: &str = "message flags";
    let xid = stream_xid(r, ctx)?;
    let at = r.position();
    let transactional = match r.u8(FLAGS)? {
        0 => false,
        tag::MESSAGE_TRANSACTIONAL => true,
        value => {
            return Err(DecodeError::new(
                at,
                DecodeErrorKind::InvalidFlags {
                    field: FLAGS,
                    value,
                },
            ))
        }
    };
    Ok(LogicalMessageBody {
        xid,
        transactional,
        lsn: r.lsn("message LSN")?,
        prefix: r.string("message prefix")?,
        content: r.counted_bytes("message content")?,
    })
}

fn read_commit(r: &mut Reader<'_>) -> Result<CommitBody, DecodeError> {
    Ok(CommitBody {
        flags: r.u8("commit flags")?,
        commit_lsn: r.lsn("commit LSN")?,
        end_lsn: r.lsn("end LSN")?,
        commit_time: r.timestamp("commit timestamp")?,
    })
}

fn read_origin(r: &mut Reader<'_>) -> Result<OriginBody, DecodeError> {
    Ok(OriginBody {
        commit_lsn: r.lsn("origin commit LSN")?,
        name: r.string("origin name")?,
    })
}

fn read_relation(r: &mut Reader<'_>, ctx: DecodeContext) -> Result<RelationBody, DecodeError> {
    const COUNT: &str = "relation column count";
    const FLAGS: &str = "relation column flags";
    let xid = stream_xid(r, ctx)?;
    let oid = r.oid("relation OID")?;
    let namespace = r.string("relation namespace")?;
    let name = r.string("relation name")?;
    let at = r.position();
    let identity = r.u8("replica identity")?;
    let replica_identity = ReplicaIdentity::from_byte(identity).ok_or_else(|| {
        DecodeError::new(at, DecodeErrorKind::UnknownReplicaIdentity { identity })
    })?;
    let at = r.position();
    let count = usize::from(r.u16(COUNT)?);
    // Each column: flags (1), a name of at least its NUL (1), type OID (4), type modifier (4).
    let count = r.check_count(at, count, 10, COUNT)?;
    let mut columns = Vec::with_capacity(count);
    for _ in 0..count {
        let at = r.position();
        let is_key = match r.u8(FLAGS)? {
            0 => false,
            tag::COLUMN_IS_KEY => true,
            value => {
                return Err(DecodeError::new(
                    at,
                    DecodeErrorKind::InvalidFlags {
                        field: FLAGS,
                        value,
                    },
                ))
            }
        };
        columns.push(RelationColumn {
            is_key,
            name: r.string("column name")?,
            type_oid: r.oid("column type OID")?,
            type_modifier: r.i32("column type modifier")?,
        });
    }
    Ok(RelationBody {
        xid,
        oid,
        namespace,
        name,
        replica_identity,
        columns,
    })
}

fn read_type(r: &mut Reader<'_>, ctx: DecodeContext) -> Result<TypeBody, DecodeError> {
    Ok(TypeBody {
        xid: stream_xid(r, ctx)?,
        oid: r.oid("type OID")?,
        namespace: r.string("type namespace")?,
        name: r.string("type name")?,
    })
}

/// Reads a submessage byte and checks it is one of `allowed`.
fn submessage(
    r: &mut Reader<'_>,
    field: &'static str,
    allowed: &[u8],
    expected: &'static str,
) -> Result<u8, DecodeError> {
    let at = r.position();
    let found = r.u8(field)?;
    if allowed.contains(&found) {
        Ok(found)
    } else {
        Err(DecodeError::new(
            at,
            DecodeErrorKind::UnexpectedSubmessage {
                field,
                found,
                expected,
            },
        ))
    }
}

fn read_insert(r: &mut Reader<'_>, ctx: DecodeContext) -> Result<InsertBody, DecodeError> {
    let xid = stream_xid(r, ctx)?;
    let relation = r.oid("relation OID")?;
    submessage(r, "the new tuple", &[tag::TUPLE_NEW], "'N'")?;
    Ok(InsertBody {
        xid,
        relation,
        new: read_tuple(r)?,
    })
}

fn read_update(r: &mut Reader<'_>, ctx: DecodeContext) -> Result<UpdateBody, DecodeError> {
    let xid = stream_xid(r, ctx)?;
    let relation = r.oid("relation OID")?;
    let first = submessage(
        r,
        "the old or new tuple",
        &[tag::TUPLE_KEY, tag::TUPLE_OLD, tag::TUPLE_NEW],
        "'K', 'O' or 'N'",
    )?;
    let old = match first {
        tag::TUPLE_KEY => Some(OldTuple::Key(read_tuple(r)?)),
        tag::TUPLE_OLD => Some(OldTuple::Full(read_tuple(r)?)),
        _ => None,
    };
    if old.is_some() {
        submessage(r, "the new tuple", &[tag::TUPLE_NEW], "'N'")?;
    }
    Ok(UpdateBody {
        xid,
        relation,
        old,
        new: read_tuple(r)?,
    })
}

fn read_delete(r: &mut Reader<'_>, ctx: DecodeContext) -> Result<DeleteBody, DecodeError> {
    let xid = stream_xid(r, ctx)?;
    let relation = r.oid("relation OID")?;
    let kind = submessage(
        r,
        "the old tuple",
        &[tag::TUPLE_KEY, tag::TUPLE_OLD],
        "'K' or 'O'",
    )?;
    let tuple = read_tuple(r)?;
    Ok(DeleteBody {
        xid,
        relation,
        old: if kind == tag::TUPLE_KEY {
            OldTuple::Key(tuple)
        } else {
            OldTuple::Full(tuple)
        },
    })
}

fn read_truncate(r: &mut Reader<'_>, ctx: DecodeContext) -> Result<TruncateBody, DecodeError> {
    const COUNT: &str = "truncated relation count";
    const OPTIONS: &str = "truncate options";
    let xid = stream_xid(r, ctx)?;
    let count_at = r.position();
    let count = r.length(COUNT)?;
    let at = r.position();
    let options = r.u8(OPTIONS)?;
    if options & !(tag::TRUNCATE_CASCADE | tag::TRUNCATE_RESTART_IDENTITY) != 0 {
        return Err(DecodeError::new(
            at,
            DecodeErrorKind::InvalidFlags {
                field: OPTIONS,
                value: options,
            },
        ));
    }
    let count = r.check_count(count_at, count, 4, COUNT)?;
    let mut relations = Vec::with_capacity(count);
    for _ in 0..count {
        relations.push(r.oid("truncated relation OID")?);
    }
    Ok(TruncateBody {
        xid,
        cascade: options & tag::TRUNCATE_CASCADE != 0,
        restart_identity: options & tag::TRUNCATE_RESTART_IDENTITY != 0,
        relations,
    })
}

fn read_stream_start(r: &mut Reader<'_>) -> Result<StreamStartBody, DecodeError> {
    const FIRST: &str = "first-segment flag";
    let xid = r.xid("xid")?;
    let at = r.position();
    let first_segment = match r.u8(FIRST)? {
        0 => false,
        1 => true,
        value => {
            return Err(DecodeError::new(
                at,
                DecodeErrorKind::InvalidFlags {
                    field: FIRST,
                    value,
                },
            ))
        }
    };
    Ok(StreamStartBody { xid, first_segment })
}

fn read_stream_commit(r: &mut Reader<'_>) -> Result<StreamCommitBody, DecodeError> {
    Ok(StreamCommitBody {
        xid: r.xid("xid")?,
        flags: r.u8("commit flags")?,
        commit_lsn: r.lsn("commit LSN")?,
        end_lsn: r.lsn("end LSN")?,
        commit_time: r.timestamp("commit timestamp")?,
    })
}

fn read_stream_abort(
    r: &mut Reader<'_>,
    ctx: DecodeContext,
) -> Result<StreamAbortBody, DecodeError> {
    let xid = r.xid("xid")?;
    let subxid = r.xid("subtransaction xid")?;
    let parallel = if ctx.parallel_streaming {
        Some(AbortInfo {
            abort_lsn: r.lsn("abort LSN")?,
            abort_time: r.timestamp("abort timestamp")?,
        })
    } else {
        None
    };
    Ok(StreamAbortBody {
        xid,
        subxid,
        parallel,
    })
}

fn read_begin_prepare(r: &mut Reader<'_>) -> Result<BeginPrepareBody, DecodeError> {
    Ok(BeginPrepareBody {
        prepare_lsn: r.lsn("prepare LSN")?,
        end_lsn: r.lsn("end LSN")?,
        prepare_time: r.timestamp("prepare timestamp")?,
        xid: r.xid("xid")?,
        gid: r.string("GID")?,
    })
}

fn read_prepare(r: &mut Reader<'_>) -> Result<PrepareBody, DecodeError> {
    Ok(PrepareBody {
        flags: r.u8("prepare flags")?,
        prepare_lsn: r.lsn("prepare LSN")?,
        end_lsn: r.lsn("end LSN")?,
        prepare_time: r.timestamp("prepare timestamp")?,
        xid: r.xid("xid")?,
        gid: r.string("GID")?,
    })
}

fn read_commit_prepared(r: &mut Reader<'_>) -> Result<CommitPreparedBody, DecodeError> {
    Ok(CommitPreparedBody {
        flags: r.u8("commit prepared flags")?,
        commit_lsn: r.lsn("commit LSN")?,
        end_lsn: r.lsn("end LSN")?,
        commit_time: r.timestamp("commit timestamp")?,
        xid: r.xid("xid")?,
        gid: r.string("GID")?,
    })
}

fn read_rollback_prepared(r: &mut Reader<'_>) -> Result<RollbackPreparedBody, DecodeError> {
    Ok(RollbackPreparedBody {
        flags: r.u8("rollback prepared flags")?,
        prepare_end_lsn: r.lsn("prepared transaction end LSN")?,
        rollback_end_lsn: r.lsn("rollback end LSN")?,
        prepare_time: r.timestamp("prepare timestamp")?,
        rollback_time: r.timestamp("rollback timestamp")?,
        xid: r.xid("xid")?,
        gid: r.string("GID")?,
    })
}

/// Decodes a replication stream's `pgoutput` payloads in order.
///
/// Its only state is what the protocol requires: whether it is inside a Stream Start … Stream
/// Stop block (which decides whether the xid prefix is present), set by the Stream Start and
/// Stream Stop messages it decodes. A frame that fails to decode leaves the state as it was.
/// After a reconnect, start a new decoder (or call [`reset`](Self::reset)): a stream always
/// restarts outside a block.
#[derive(Clone, Debug)]
pub struct PgOutputDecoder {
    ctx: DecodeContext,
}

impl PgOutputDecoder {
    /// A decoder for the negotiated `proto_version`, without parallel streaming.
    pub fn new(protocol_version: ProtocolVersion) -> Self {
        PgOutputDecoder {
            ctx: DecodeContext::new(protocol_version),
        }
    }

    /// Sets whether `streaming 'parallel'` was requested (protocol version 4): Stream Abort
    /// then carries the abort LSN and timestamp.
    pub fn with_parallel_streaming(mut self, parallel: bool) -> Self {
        self.ctx.parallel_streaming = parallel;
        self
    }

    /// The context the next frame will be decoded in.
    pub fn context(&self) -> DecodeContext {
        self.ctx
    }

    /// Whether the decoder is inside a Stream Start … Stream Stop block.
    pub fn in_stream(&self) -> bool {
        self.ctx.in_stream
    }

    /// Forgets any open streamed block, as after a reconnect.
    pub fn reset(&mut self) {
        self.ctx.in_stream = false;
    }

    /// Decodes the next frame of the stream; see [`decode_message`].
    pub fn decode(&mut self, frame: Bytes) -> Result<PgOutputMessage, DecodeError> {
        let message = decode_message(frame, self.ctx)?;
        match message {
            PgOutputMessage::StreamStart(_) => self.ctx.in_stream = true,
            PgOutputMessage::StreamStop => self.ctx.in_stream = false,
            _ => {}
        }
        Ok(message)
    }
}
