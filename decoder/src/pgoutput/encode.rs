//! Encoding: the exact inverse of [`decode_message`](super::decode_message).
//!
//! Writes each message byte for byte as PostgreSQL's `pgoutput` does
//! (<https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html>), so
//! that `encode(decode(frame)) == frame` for every frame the decoder accepts. Used by the
//! property tests, the decode benchmark and the engine's tests to build streams.

use bytes::{BufMut, BytesMut};

use super::error::EncodeError;
use super::message::{PgOutputMessage, RelationBody};
use super::tag;
use super::tuple::write_tuple;
use crate::Xid;

/// Appends the wire bytes of `message` to `out`.
///
/// `in_stream` says whether the message goes inside a Stream Start … Stream Stop block; the
/// messages with an optional xid must then have `Some` xid, and `None` outside. A Stream Abort
/// is written with its abort LSN and timestamp exactly when `parallel` is `Some`.
///
/// On error nothing is appended: `out` is truncated back to its length on entry.
pub fn encode(
    message: &PgOutputMessage,
    in_stream: bool,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let start = out.len();
    let result = write_message(message, in_stream, out);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn write_message(
    message: &PgOutputMessage,
    in_stream: bool,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    use PgOutputMessage as M;

    let name = message.name();
    let put_xid = |out: &mut BytesMut, xid: Option<Xid>| match (xid, in_stream) {
        (Some(xid), true) => {
            out.put_u32(xid.0);
            Ok(())
        }
        (None, false) => Ok(()),
        _ => Err(EncodeError::StreamXidMismatch {
            message: name,
            in_stream,
        }),
    };

    out.put_u8(message.tag());
    match message {
        M::Begin(m) => {
            out.put_u64(m.final_lsn.0);
            out.put_i64(m.commit_time.0);
            out.put_u32(m.xid.0);
        }
        M::Message(m) => {
            put_xid(out, m.xid)?;
            out.put_u8(if m.transactional {
                tag::MESSAGE_TRANSACTIONAL
            } else {
                0
            });
            out.put_u64(m.lsn.0);
            put_string(out, &m.prefix, "message prefix")?;
            put_counted_bytes(out, &m.content, "message content")?;
        }
        M::Commit(m) => {
            out.put_u8(m.flags);
            out.put_u64(m.commit_lsn.0);
            out.put_u64(m.end_lsn.0);
            out.put_i64(m.commit_time.0);
        }
        M::Origin(m) => {
            out.put_u64(m.commit_lsn.0);
            put_string(out, &m.name, "origin name")?;
        }
        M::Relation(m) => {
            put_xid(out, m.xid)?;
            put_relation(out, m)?;
        }
        M::Type(m) => {
            put_xid(out, m.xid)?;
            out.put_u32(m.oid.0);
            put_string(out, &m.namespace, "type namespace")?;
            put_string(out, &m.name, "type name")?;
        }
        M::Insert(m) => {
            put_xid(out, m.xid)?;
            out.put_u32(m.relation.0);
            out.put_u8(tag::TUPLE_NEW);
            write_tuple(&m.new, out)?;
        }
        M::Update(m) => {
            put_xid(out, m.xid)?;
            out.put_u32(m.relation.0);
            if let Some(old) = &m.old {
                out.put_u8(old.tag());
                write_tuple(old.tuple(), out)?;
            }
            out.put_u8(tag::TUPLE_NEW);
            write_tuple(&m.new, out)?;
        }
        M::Delete(m) => {
            put_xid(out, m.xid)?;
            out.put_u32(m.relation.0);
            out.put_u8(m.old.tag());
            write_tuple(m.old.tuple(), out)?;
        }
        M::Truncate(m) => {
            put_xid(out, m.xid)?;
            out.put_i32(int32_count(m.relations.len(), "truncated relations")?);
            let mut options = 0;
            if m.cascade {
                options |= tag::TRUNCATE_CASCADE;
            }
            if m.restart_identity {
                options |= tag::TRUNCATE_RESTART_IDENTITY;
            }
            out.put_u8(options);
            for oid in &m.relations {
                out.put_u32(oid.0);
            }
        }
        M::StreamStart(m) => {
            out.put_u32(m.xid.0);
            out.put_u8(u8::from(m.first_segment));
        }
        M::StreamStop => {}
        M::StreamCommit(m) => {
            out.put_u32(m.xid.0);
            out.put_u8(m.flags);
            out.put_u64(m.commit_lsn.0);
            out.put_u64(m.end_lsn.0);
            out.put_i64(m.commit_time.0);
        }
        M::StreamAbort(m) => {
            out.put_u32(m.xid.0);
            out.put_u32(m.subxid.0);
            if let Some(info) = &m.parallel {
                out.put_u64(info.abort_lsn.0);
                out.put_i64(info.abort_time.0);
            }
        }
        M::BeginPrepare(m) => {
            out.put_u64(m.prepare_lsn.0);
            out.put_u64(m.end_lsn.0);
            out.put_i64(m.prepare_time.0);
            out.put_u32(m.xid.0);
            put_string(out, &m.gid, "GID")?;
        }
        M::Prepare(m) | M::StreamPrepare(m) => {
            out.put_u8(m.flags);
            out.put_u64(m.prepare_lsn.0);
            out.put_u64(m.end_lsn.0);
            out.put_i64(m.prepare_time.0);
            out.put_u32(m.xid.0);
            put_string(out, &m.gid, "GID")?;
        }
        M::CommitPrepared(m) => {
            out.put_u8(m.flags);
            out.put_u64(m.commit_lsn.0);
            out.put_u64(m.end_lsn.0);
            out.put_i64(m.commit_time.0);
            out.put_u32(m.xid.0);
            put_string(out, &m.gid, "GID")?;
        }
        M::RollbackPrepared(m) => {
            out.put_u8(m.flags);
            out.put_u64(m.prepare_end_lsn.0);
            out.put_u64(m.rollback_end_lsn.0);
            out.put_i64(m.prepare_time.0);
            out.put_i64(m.rollback_time.0);
            out.put_u32(m.xid.0);
            put_string(out, &m.gid, "GID")?;
        }
    }
    Ok(())
}

fn put_relation(out: &mut BytesMut, m: &RelationBody) -> Result<(), EncodeError> {
    out.put_u32(m.oid.0);
    put_string(out, &m.namespace, "relation namespace")?;
    put_string(out, &m.name, "relation name")?;
    out.put_u8(m.replica_identity.as_byte());
    let count = u16::try_from(m.columns.len()).map_err(|_| EncodeError::TooMany {
        field: "relation columns",
        count: m.columns.len(),
        max: usize::from(u16::MAX),
    })?;
    out.put_u16(count);
    for column in &m.columns {
        out.put_u8(if column.is_key { tag::COLUMN_IS_KEY } else { 0 });
        put_string(out, &column.name, "column name")?;
        out.put_u32(column.type_oid.0);
        out.put_i32(column.type_modifier);
    }
    Ok(())
}

/// The largest length or count an `Int32` carries.
const INT32_MAX: usize = i32::MAX as usize;

fn int32_count(len: usize, field: &'static str) -> Result<i32, EncodeError> {
    i32::try_from(len).map_err(|_| EncodeError::TooMany {
        field,
        count: len,
        max: INT32_MAX,
    })
}

/// `String`: the bytes and a NUL.
fn put_string(out: &mut BytesMut, value: &str, field: &'static str) -> Result<(), EncodeError> {
    if value.as_bytes().contains(&0) {
        return Err(EncodeError::InteriorNul { field });
    }
    out.put_slice(value.as_bytes());
    out.put_u8(0);
    Ok(())
}

/// `Int32` length and the bytes.
pub(super) fn put_counted_bytes(
    out: &mut BytesMut,
    value: &[u8],
    field: &'static str,
) -> Result<(), EncodeError> {
    let len = i32::try_from(value.len()).map_err(|_| EncodeError::TooLong {
        field,
        len: value.len(),
        max: INT32_MAX,
    })?;
    out.put_i32(len);
    out.put_slice(value);
    Ok(())
}
