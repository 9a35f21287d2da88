//! The tag bytes of the `pgoutput` protocol, each a named constant.
//!
//! See <https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html>
//! (PostgreSQL's `LogicalRepMsgType` in `replication/logicalproto.h`).

// Message tags: the first byte of every message.

/// `B`: Begin.
pub const BEGIN: u8 = b'B';
/// `M`: logical decoding message (`pg_logical_emit_message`).
pub const MESSAGE: u8 = b'M';
/// `C`: Commit.
pub const COMMIT: u8 = b'C';
/// `O`: Origin.
pub const ORIGIN: u8 = b'O';
/// `R`: Relation.
pub const RELATION: u8 = b'R';
/// `Y`: Type.
pub const TYPE: u8 = b'Y';
/// `I`: Insert.
pub const INSERT: u8 = b'I';
/// `U`: Update.
pub const UPDATE: u8 = b'U';
/// `D`: Delete.
pub const DELETE: u8 = b'D';
/// `T`: Truncate.
pub const TRUNCATE: u8 = b'T';
/// `S`: Stream Start (protocol version 2).
pub const STREAM_START: u8 = b'S';
/// `E`: Stream Stop (protocol version 2).
pub const STREAM_STOP: u8 = b'E';
/// `c`: Stream Commit (protocol version 2).
pub const STREAM_COMMIT: u8 = b'c';
/// `A`: Stream Abort (protocol version 2).
pub const STREAM_ABORT: u8 = b'A';
/// `b`: Begin Prepare (protocol version 3).
pub const BEGIN_PREPARE: u8 = b'b';
/// `P`: Prepare (protocol version 3).
pub const PREPARE: u8 = b'P';
/// `K`: Commit Prepared (protocol version 3).
pub const COMMIT_PREPARED: u8 = b'K';
/// `r`: Rollback Prepared (protocol version 3).
pub const ROLLBACK_PREPARED: u8 = b'r';
/// `p`: Stream Prepare (protocol version 3).
pub const STREAM_PREPARE: u8 = b'p';

// Submessage bytes inside Insert, Update and Delete, before each tuple.

/// `N`: the new tuple follows.
pub const TUPLE_NEW: u8 = b'N';
/// `K`: the old key (the replica identity columns) follows.
pub const TUPLE_KEY: u8 = b'K';
/// `O`: the whole old row follows (`REPLICA IDENTITY FULL`).
pub const TUPLE_OLD: u8 = b'O';

// Column kinds inside a TupleData.

/// `n`: the column is NULL.
pub const COLUMN_NULL: u8 = b'n';
/// `u`: an unchanged TOASTed value; the value itself is not sent.
pub const COLUMN_UNCHANGED_TOAST: u8 = b'u';
/// `t`: the value in text format follows.
pub const COLUMN_TEXT: u8 = b't';
/// `b`: the value in binary format follows.
pub const COLUMN_BINARY: u8 = b'b';

// Replica identity settings in a Relation message (`pg_class.relreplident`).

/// `d`: default (the primary key, if any).
pub const IDENTITY_DEFAULT: u8 = b'd';
/// `n`: nothing.
pub const IDENTITY_NOTHING: u8 = b'n';
/// `f`: all columns.
pub const IDENTITY_FULL: u8 = b'f';
/// `i`: the columns of a chosen unique index.
pub const IDENTITY_INDEX: u8 = b'i';

// Flag bits.

/// Logical decoding message flag: the message is transactional.
pub const MESSAGE_TRANSACTIONAL: u8 = 1;
/// Relation column flag: the column is part of the replica identity key.
pub const COLUMN_IS_KEY: u8 = 1;
/// Truncate option: `CASCADE`.
pub const TRUNCATE_CASCADE: u8 = 1;
/// Truncate option: `RESTART IDENTITY`.
pub const TRUNCATE_RESTART_IDENTITY: u8 = 2;

/// The protocol's name for a message tag (`"Begin"`, `"Stream Abort"`, …), or `None` for a byte
/// that is not a message tag.
pub fn message_name(tag: u8) -> Option<&'static str> {
    Some(match tag {
        BEGIN => "Begin",
        MESSAGE => "Message",
        COMMIT => "Commit",
        ORIGIN => "Origin",
        RELATION => "Relation",
        TYPE => "Type",
        INSERT => "Insert",
        UPDATE => "Update",
        DELETE => "Delete",
        TRUNCATE => "Truncate",
        STREAM_START => "Stream Start",
        STREAM_STOP => "Stream Stop",
        STREAM_COMMIT => "Stream Commit",
        STREAM_ABORT => "Stream Abort",
        BEGIN_PREPARE => "Begin Prepare",
        PREPARE => "Prepare",
        COMMIT_PREPARED => "Commit Prepared",
        ROLLBACK_PREPARED => "Rollback Prepared",
        STREAM_PREPARE => "Stream Prepare",
        _ => return None,
    })
}

/// Formats a byte as it appears in error messages: `'B'` for printable ASCII, `0x07` otherwise.
pub(crate) struct ByteDisplay(pub(crate) u8);

impl std::fmt::Display for ByteDisplay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_ascii_graphic() {
            write!(f, "'{}'", char::from(self.0))
        } else {
            write!(f, "0x{:02X}", self.0)
        }
    }
}
