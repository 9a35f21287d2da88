//! The `pgoutput` messages: [`PgOutputMessage`] and one `*Body` struct per message type.
//!
//! Field for field what
//! <https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html>
//! describes, in wire order. Messages that carry a transaction id only inside a Stream Start …
//! Stream Stop block (Relation, Type, Insert, Update, Delete, Truncate, Message) have
//! `xid: Option<Xid>`: `Some` exactly when the message was decoded inside such a block.

use std::fmt;

use bytes::Bytes;

use super::error::UnsupportedProtocolVersion;
use super::tag;
use super::timestamp::PgTimestamp;
use super::tuple::{OldTuple, TupleData};
use crate::{Lsn, Oid, Xid};

/// The `pgoutput` protocol version negotiated with `proto_version` in `START_REPLICATION`.
///
/// It decides which messages may appear: streaming (Stream Start/Stop/Commit/Abort) needs
/// version 2 (PostgreSQL 14), two-phase commit (Begin Prepare, Prepare, Commit Prepared,
/// Rollback Prepared, Stream Prepare) needs version 3 (PostgreSQL 15), and the abort LSN and
/// timestamp of Stream Abort under `streaming 'parallel'` need version 4 (PostgreSQL 16).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProtocolVersion {
    /// Version 1: plain transactions.
    V1,
    /// Version 2: adds streaming of in-progress transactions.
    V2,
    /// Version 3: adds two-phase commit.
    V3,
    /// Version 4: adds parallel apply of streamed transactions.
    V4,
}

impl ProtocolVersion {
    /// The newest version this decoder implements.
    pub const LATEST: ProtocolVersion = ProtocolVersion::V4;

    /// The number sent as `proto_version`.
    pub fn number(self) -> u32 {
        match self {
            ProtocolVersion::V1 => 1,
            ProtocolVersion::V2 => 2,
            ProtocolVersion::V3 => 3,
            ProtocolVersion::V4 => 4,
        }
    }
}

impl TryFrom<u32> for ProtocolVersion {
    type Error = UnsupportedProtocolVersion;

    fn try_from(number: u32) -> Result<Self, Self::Error> {
        match number {
            1 => Ok(ProtocolVersion::V1),
            2 => Ok(ProtocolVersion::V2),
            3 => Ok(ProtocolVersion::V3),
            4 => Ok(ProtocolVersion::V4),
            _ => Err(UnsupportedProtocolVersion { number }),
        }
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.number())
    }
}

/// A table's `REPLICA IDENTITY`, which decides what an Update or Delete carries of the old row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplicaIdentity {
    /// `d`: the primary key, if there is one (old key columns sent when the key changes).
    Default,
    /// `n`: nothing; updates and deletes carry no old row.
    Nothing,
    /// `f`: the whole old row.
    Full,
    /// `i`: the columns of the index chosen with `REPLICA IDENTITY USING INDEX`.
    Index,
}

impl ReplicaIdentity {
    /// The wire byte (`pg_class.relreplident`).
    pub fn as_byte(self) -> u8 {
        match self {
            ReplicaIdentity::Default => tag::IDENTITY_DEFAULT,
            ReplicaIdentity::Nothing => tag::IDENTITY_NOTHING,
            ReplicaIdentity::Full => tag::IDENTITY_FULL,
            ReplicaIdentity::Index => tag::IDENTITY_INDEX,
        }
    }

    /// The setting a wire byte stands for, or `None` for an unknown byte.
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            tag::IDENTITY_DEFAULT => Some(ReplicaIdentity::Default),
            tag::IDENTITY_NOTHING => Some(ReplicaIdentity::Nothing),
            tag::IDENTITY_FULL => Some(ReplicaIdentity::Full),
            tag::IDENTITY_INDEX => Some(ReplicaIdentity::Index),
            _ => None,
        }
    }

    /// The setting in lower case, as `psql` and JSON output show it: `default`, `nothing`,
    /// `full`, `index`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicaIdentity::Default => "default",
            ReplicaIdentity::Nothing => "nothing",
            ReplicaIdentity::Full => "full",
            ReplicaIdentity::Index => "index",
        }
    }
}

impl fmt::Display for ReplicaIdentity {
    /// As in `ALTER TABLE … REPLICA IDENTITY`: `DEFAULT`, `NOTHING`, `FULL`, `INDEX`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReplicaIdentity::Default => "DEFAULT",
            ReplicaIdentity::Nothing => "NOTHING",
            ReplicaIdentity::Full => "FULL",
            ReplicaIdentity::Index => "INDEX",
        })
    }
}

/// One decoded `pgoutput` message: a variant per message type of protocol versions 1 to 4.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PgOutputMessage {
    /// `B`: a transaction begins.
    Begin(BeginBody),
    /// `M`: a logical decoding message (`pg_logical_emit_message`).
    Message(LogicalMessageBody),
    /// `C`: a transaction commits.
    Commit(CommitBody),
    /// `O`: the transaction was replayed from another node (replication origin).
    Origin(OriginBody),
    /// `R`: a table's description; sent before the first change to it and again after its
    /// definition changes.
    Relation(RelationBody),
    /// `Y`: a user-defined type's name, sent before a Relation with a column of that type.
    Type(TypeBody),
    /// `I`: a row inserted.
    Insert(InsertBody),
    /// `U`: a row updated.
    Update(UpdateBody),
    /// `D`: a row deleted.
    Delete(DeleteBody),
    /// `T`: tables truncated.
    Truncate(TruncateBody),
    /// `S`: a block of a streamed in-progress transaction starts (v2).
    StreamStart(StreamStartBody),
    /// `E`: the current block of a streamed transaction ends (v2).
    StreamStop,
    /// `c`: a streamed transaction commits (v2).
    StreamCommit(StreamCommitBody),
    /// `A`: a streamed transaction or one of its subtransactions aborts (v2; abort LSN and
    /// timestamp in v4 with `streaming 'parallel'`).
    StreamAbort(StreamAbortBody),
    /// `b`: a transaction to be prepared begins (v3).
    BeginPrepare(BeginPrepareBody),
    /// `P`: a transaction is prepared (`PREPARE TRANSACTION`) (v3).
    Prepare(PrepareBody),
    /// `K`: a prepared transaction commits (`COMMIT PREPARED`) (v3).
    CommitPrepared(CommitPreparedBody),
    /// `r`: a prepared transaction is rolled back (`ROLLBACK PREPARED`) (v3).
    RollbackPrepared(RollbackPreparedBody),
    /// `p`: a streamed transaction is prepared (v3).
    StreamPrepare(PrepareBody),
}

impl PgOutputMessage {
    /// The tag byte this message is sent with.
    pub fn tag(&self) -> u8 {
        match self {
            PgOutputMessage::Begin(_) => tag::BEGIN,
            PgOutputMessage::Message(_) => tag::MESSAGE,
            PgOutputMessage::Commit(_) => tag::COMMIT,
            PgOutputMessage::Origin(_) => tag::ORIGIN,
            PgOutputMessage::Relation(_) => tag::RELATION,
            PgOutputMessage::Type(_) => tag::TYPE,
            PgOutputMessage::Insert(_) => tag::INSERT,
            PgOutputMessage::Update(_) => tag::UPDATE,
            PgOutputMessage::Delete(_) => tag::DELETE,
            PgOutputMessage::Truncate(_) => tag::TRUNCATE,
            PgOutputMessage::StreamStart(_) => tag::STREAM_START,
            PgOutputMessage::StreamStop => tag::STREAM_STOP,
            PgOutputMessage::StreamCommit(_) => tag::STREAM_COMMIT,
            PgOutputMessage::StreamAbort(_) => tag::STREAM_ABORT,
            PgOutputMessage::BeginPrepare(_) => tag::BEGIN_PREPARE,
            PgOutputMessage::Prepare(_) => tag::PREPARE,
            PgOutputMessage::CommitPrepared(_) => tag::COMMIT_PREPARED,
            PgOutputMessage::RollbackPrepared(_) => tag::ROLLBACK_PREPARED,
            PgOutputMessage::StreamPrepare(_) => tag::STREAM_PREPARE,
        }
    }

    /// The protocol's name for this message (`"Begin"`, `"Stream Abort"`, …).
    pub fn name(&self) -> &'static str {
        tag::message_name(self.tag()).unwrap_or("unknown")
    }

    /// The xid prefix of a message that was sent inside a Stream Start … Stream Stop block;
    /// `None` for messages outside such a block and for messages that never carry one.
    pub fn stream_xid(&self) -> Option<Xid> {
        match self {
            PgOutputMessage::Message(m) => m.xid,
            PgOutputMessage::Relation(m) => m.xid,
            PgOutputMessage::Type(m) => m.xid,
            PgOutputMessage::Insert(m) => m.xid,
            PgOutputMessage::Update(m) => m.xid,
            PgOutputMessage::Delete(m) => m.xid,
            PgOutputMessage::Truncate(m) => m.xid,
            _ => None,
        }
    }
}

/// Begin (`B`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BeginBody {
    /// The final LSN of the transaction: the LSN of its commit record.
    pub final_lsn: Lsn,
    /// Commit timestamp of the transaction.
    pub commit_time: PgTimestamp,
    /// Xid of the transaction.
    pub xid: Xid,
}

/// Logical decoding message (`M`), as emitted by `pg_logical_emit_message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogicalMessageBody {
    /// Xid of the (sub)transaction the message belongs to, inside a streamed block only.
    pub xid: Option<Xid>,
    /// Whether the message is transactional (flags bit 1): sent in its transaction at commit,
    /// rather than immediately.
    pub transactional: bool,
    /// The LSN of the message.
    pub lsn: Lsn,
    /// The prefix given to `pg_logical_emit_message`.
    pub prefix: String,
    /// The content, a slice of the frame.
    pub content: Bytes,
}

/// Commit (`C`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitBody {
    /// Flags; currently unused (0). Kept as sent.
    pub flags: u8,
    /// The LSN of the commit record.
    pub commit_lsn: Lsn,
    /// The end LSN of the transaction (just past the commit record).
    pub end_lsn: Lsn,
    /// Commit timestamp of the transaction.
    pub commit_time: PgTimestamp,
}

/// Origin (`O`): the transaction came from another node through a replication origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginBody {
    /// The LSN of the commit on the origin server (`0/0` when sent in a streamed block).
    pub commit_lsn: Lsn,
    /// Name of the origin.
    pub name: String,
}

/// One column of a [`RelationBody`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RelationColumn {
    /// Whether the column is part of the replica identity key (flags bit 1).
    pub is_key: bool,
    /// Name of the column.
    pub name: String,
    /// OID of the column's data type.
    pub type_oid: Oid,
    /// Type modifier of the column (`atttypmod`; -1 when none).
    pub type_modifier: i32,
}

/// Relation (`R`): a table's namespace, name, replica identity and published columns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelationBody {
    /// Xid of the (sub)transaction the message belongs to, inside a streamed block only.
    pub xid: Option<Xid>,
    /// OID of the relation.
    pub oid: Oid,
    /// Namespace (schema) name; empty for `pg_catalog`.
    pub namespace: String,
    /// Relation name.
    pub name: String,
    /// The relation's replica identity setting.
    pub replica_identity: ReplicaIdentity,
    /// The published columns, in the order tuples carry them.
    pub columns: Vec<RelationColumn>,
}

/// Type (`Y`): the name of a non-built-in data type used by a following Relation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeBody {
    /// Xid of the (sub)transaction the message belongs to, inside a streamed block only.
    pub xid: Option<Xid>,
    /// OID of the data type.
    pub oid: Oid,
    /// Namespace (schema) name; empty for `pg_catalog`.
    pub namespace: String,
    /// Name of the data type.
    pub name: String,
}

/// Insert (`I`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InsertBody {
    /// Xid of the (sub)transaction the message belongs to, inside a streamed block only.
    pub xid: Option<Xid>,
    /// OID of the relation, as in its Relation message.
    pub relation: Oid,
    /// The inserted row (after `N`).
    pub new: TupleData,
}

/// Update (`U`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateBody {
    /// Xid of the (sub)transaction the message belongs to, inside a streamed block only.
    pub xid: Option<Xid>,
    /// OID of the relation, as in its Relation message.
    pub relation: Oid,
    /// The old key (`K`, when the key changed) or the whole old row (`O`, with
    /// `REPLICA IDENTITY FULL`); `None` when neither was sent.
    pub old: Option<OldTuple>,
    /// The new row (after `N`). Unchanged TOASTed columns are
    /// [`ColumnValue::UnchangedToast`](super::ColumnValue::UnchangedToast).
    pub new: TupleData,
}

/// Delete (`D`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteBody {
    /// Xid of the (sub)transaction the message belongs to, inside a streamed block only.
    pub xid: Option<Xid>,
    /// OID of the relation, as in its Relation message.
    pub relation: Oid,
    /// The old key (`K`) or the whole old row (`O`).
    pub old: OldTuple,
}

/// Truncate (`T`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TruncateBody {
    /// Xid of the (sub)transaction the message belongs to, inside a streamed block only.
    pub xid: Option<Xid>,
    /// `TRUNCATE … CASCADE` (option bit 1).
    pub cascade: bool,
    /// `TRUNCATE … RESTART IDENTITY` (option bit 2).
    pub restart_identity: bool,
    /// OIDs of the truncated relations.
    pub relations: Vec<Oid>,
}

/// Stream Start (`S`, v2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamStartBody {
    /// Xid of the streamed transaction.
    pub xid: Xid,
    /// Whether this is the first block streamed for this transaction.
    pub first_segment: bool,
}

/// Stream Commit (`c`, v2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamCommitBody {
    /// Xid of the streamed transaction.
    pub xid: Xid,
    /// Flags; currently unused (0). Kept as sent.
    pub flags: u8,
    /// The LSN of the commit record.
    pub commit_lsn: Lsn,
    /// The end LSN of the transaction.
    pub end_lsn: Lsn,
    /// Commit timestamp of the transaction.
    pub commit_time: PgTimestamp,
}

/// The abort position and time a Stream Abort carries under `streaming 'parallel'` (v4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortInfo {
    /// The LSN of the abort.
    pub abort_lsn: Lsn,
    /// Abort timestamp of the transaction.
    pub abort_time: PgTimestamp,
}

/// Stream Abort (`A`, v2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamAbortBody {
    /// Xid of the streamed transaction.
    pub xid: Xid,
    /// Xid of the aborted subtransaction; equal to `xid` when the whole transaction aborted.
    pub subxid: Xid,
    /// Abort LSN and timestamp: present exactly when `streaming 'parallel'` was requested
    /// (protocol version 4).
    pub parallel: Option<AbortInfo>,
}

/// Begin Prepare (`b`, v3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BeginPrepareBody {
    /// The LSN of the prepare record.
    pub prepare_lsn: Lsn,
    /// The end LSN of the prepared transaction.
    pub end_lsn: Lsn,
    /// Prepare timestamp of the transaction.
    pub prepare_time: PgTimestamp,
    /// Xid of the transaction.
    pub xid: Xid,
    /// The global identifier given to `PREPARE TRANSACTION`.
    pub gid: String,
}

/// Prepare (`P`, v3) and Stream Prepare (`p`, v3), which share one layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrepareBody {
    /// Flags; currently unused (0). Kept as sent.
    pub flags: u8,
    /// The LSN of the prepare record.
    pub prepare_lsn: Lsn,
    /// The end LSN of the prepared transaction.
    pub end_lsn: Lsn,
    /// Prepare timestamp of the transaction.
    pub prepare_time: PgTimestamp,
    /// Xid of the transaction.
    pub xid: Xid,
    /// The global identifier given to `PREPARE TRANSACTION`.
    pub gid: String,
}

/// Commit Prepared (`K`, v3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitPreparedBody {
    /// Flags; currently unused (0). Kept as sent.
    pub flags: u8,
    /// The LSN of the `COMMIT PREPARED` record.
    pub commit_lsn: Lsn,
    /// The end LSN of the `COMMIT PREPARED` transaction.
    pub end_lsn: Lsn,
    /// Commit timestamp of the transaction.
    pub commit_time: PgTimestamp,
    /// Xid of the transaction.
    pub xid: Xid,
    /// The global identifier of the prepared transaction.
    pub gid: String,
}

/// Rollback Prepared (`r`, v3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RollbackPreparedBody {
    /// Flags; currently unused (0). Kept as sent.
    pub flags: u8,
    /// The end LSN of the prepared transaction.
    pub prepare_end_lsn: Lsn,
    /// The end LSN of the `ROLLBACK PREPARED` transaction.
    pub rollback_end_lsn: Lsn,
    /// Prepare timestamp of the transaction.
    pub prepare_time: PgTimestamp,
    /// Rollback timestamp of the transaction.
    pub rollback_time: PgTimestamp,
    /// Xid of the transaction.
    pub xid: Xid,
    /// The global identifier of the prepared transaction.
    pub gid: String,
}
