//! The `pgoutput` decoder: one `XLogData` payload in, one typed [`PgOutputMessage`] out.
//!
//! Implements every message of the logical replication protocol, versions 1 to 4, as described
//! in <https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html>
//! (the wire types in
//! <https://www.postgresql.org/docs/current/protocol-message-types.html>).
//!
//! - [`message`]: the messages ([`PgOutputMessage`] and one `*Body` struct per message), the
//!   [`ProtocolVersion`] and [`ReplicaIdentity`];
//! - [`tuple`](mod@tuple): row images ([`TupleData`], [`ColumnValue`], [`OldTuple`]); column
//!   values are [`bytes::Bytes`] slices of the frame, never copies;
//! - [`timestamp`]: [`PgTimestamp`], microseconds since 2000-01-01 UTC;
//! - [`decode`]: [`decode_message`] (stateless) and [`PgOutputDecoder`] (tracks whether it is
//!   inside a Stream Start … Stream Stop block, which decides whether an xid prefix is present);
//! - [`encode`](mod@encode): [`encode`](fn@encode), the exact inverse of decoding, for tests and
//!   benchmarks;
//! - [`error`]: [`DecodeError`] (a byte offset and a [`DecodeErrorKind`]) and [`EncodeError`];
//! - [`tag`]: the named tag bytes.
//!
//! Malformed input of any shape is a [`DecodeError`], never a panic: every length and count read
//! from the wire is checked against the bytes that remain before anything is sliced or
//! allocated, and bytes left over after a complete message are an error too.

pub mod decode;
pub mod encode;
pub mod error;
pub mod message;
mod reader;
pub mod tag;
pub mod timestamp;
pub mod tuple;

pub use decode::{decode_message, DecodeContext, PgOutputDecoder};
pub use encode::encode;
pub use error::{DecodeError, DecodeErrorKind, EncodeError, UnsupportedProtocolVersion};
pub use message::{
    AbortInfo, BeginBody, BeginPrepareBody, CommitBody, CommitPreparedBody, DeleteBody, InsertBody,
    LogicalMessageBody, OriginBody, PgOutputMessage, PrepareBody, ProtocolVersion, RelationBody,
    RelationColumn, ReplicaIdentity, RollbackPreparedBody, StreamAbortBody, StreamCommitBody,
    StreamStartBody, TruncateBody, TypeBody, UpdateBody,
};
pub use timestamp::PgTimestamp;
pub use tuple::{ColumnValue, OldTuple, TupleData};
