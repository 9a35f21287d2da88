//! [`AssembleError`]: a message sequence the assembler cannot make whole transactions of, or a
//! spill file it could not write.
//!
//! Every variant names the transaction (xid) and, where the message carries one, the LSN. A
//! sequence error means the stream is out of order or was not read from the start of the
//! session: the fix is to restart replication from the last confirmed position, which makes the
//! server send every open transaction again from its start.

use std::io;
use std::path::PathBuf;

use blueshift_decoder::pgoutput::EncodeError;
use blueshift_decoder::relation::UnknownRelation;
use blueshift_decoder::{Lsn, Oid, Xid};

/// What restarting replication fixes; appended to every sequence error.
const RESTART: &str = "restart replication from the last confirmed position so the server \
                       sends every open transaction again from its start";

/// Why the assembler refused a message or could not spill.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AssembleError {
    /// A Begin arrived while another transaction was open.
    #[error(
        "Begin of transaction {xid} (final LSN {final_lsn}) arrived while transaction {open} \
         was still open — the stream is out of order; {RESTART}"
    )]
    BeginInsideTransaction {
        /// The transaction that began.
        xid: Xid,
        /// Its final LSN.
        final_lsn: Lsn,
        /// The transaction (plain or streamed block) that was open.
        open: Xid,
    },
    /// A Commit arrived with no Begin before it.
    #[error(
        "Commit at LSN {commit_lsn} (end {end_lsn}) arrived with no transaction open — the \
         stream was not read from a transaction boundary; {RESTART}"
    )]
    CommitWithoutBegin {
        /// The commit LSN of the Commit.
        commit_lsn: Lsn,
        /// Its end LSN.
        end_lsn: Lsn,
    },
    /// Begin's final LSN differs from the Commit's commit LSN.
    #[error(
        "transaction {xid} began with final LSN {final_lsn} but its Commit names LSN \
         {commit_lsn} — the Commit belongs to another transaction; {RESTART}"
    )]
    CommitLsnMismatch {
        /// The open transaction.
        xid: Xid,
        /// Begin's final LSN.
        final_lsn: Lsn,
        /// The Commit's commit LSN.
        commit_lsn: Lsn,
    },
    /// A change or an Origin arrived outside any transaction and outside any streamed block.
    #[error(
        "{message} (stream xid {xid:?}) arrived outside any transaction — changes come only \
         between Begin and Commit or inside a Stream Start … Stream Stop block; {RESTART}"
    )]
    OutsideTransaction {
        /// The protocol's name of the message.
        message: &'static str,
        /// The xid prefix it carried, if any.
        xid: Option<Xid>,
    },
    /// A change inside a streamed block carried no xid prefix, or one outside carried one.
    #[error(
        "{message} of transaction {xid} {problem} — decode frames with a `PgOutputDecoder` \
         that sees every Stream Start and Stream Stop"
    )]
    StreamXidPrefix {
        /// The protocol's name of the message.
        message: &'static str,
        /// The open transaction.
        xid: Xid,
        /// What was wrong.
        problem: &'static str,
    },
    /// A Stream Start, Stream Commit or Stream Abort arrived where it cannot: inside a plain
    /// transaction or inside another streamed block.
    #[error(
        "{message} of streamed transaction {xid} arrived while transaction {open} was open — \
         the stream is out of order; {RESTART}"
    )]
    StreamMisplaced {
        /// The protocol's name of the message.
        message: &'static str,
        /// The streamed transaction it names.
        xid: Xid,
        /// The transaction or block that was open.
        open: Xid,
    },
    /// A Stream Start marked as the first segment named a transaction already open.
    #[error(
        "Stream Start of transaction {xid} is marked as its first segment, but the \
         transaction is already open — the server restarted it without a Stream Abort; \
         {RESTART}"
    )]
    StreamRestarted {
        /// The streamed transaction.
        xid: Xid,
    },
    /// A Stream Start, Stream Commit or Stream Abort named a transaction whose first segment
    /// was never seen.
    #[error(
        "{message} names streamed transaction {xid}, whose first segment this assembler never \
         saw — the stream was joined mid-transaction; {RESTART}"
    )]
    UnknownStreamedTransaction {
        /// The protocol's name of the message.
        message: &'static str,
        /// The streamed transaction it names.
        xid: Xid,
    },
    /// A Stream Stop arrived with no Stream Start open.
    #[error("Stream Stop arrived with no Stream Start open — {RESTART}")]
    StreamStopOutsideBlock,
    /// A change named a relation no Relation message described.
    #[error("a change of transaction {xid} names an unknown relation — {RESTART}")]
    UnknownRelation {
        /// The (top-level) transaction.
        xid: Xid,
        /// The OID the change named.
        #[source]
        source: UnknownRelation,
    },
    /// A row image of a change has another number of columns than its relation's latest
    /// Relation message described.
    #[error(
        "{message} of transaction {xid} carries a {image} row of {got} columns, but relation \
         {relation} (OID {oid}) was described with {expected} — the change does not fit its \
         table and was not buffered; the stream is corrupt or out of step with its Relation \
         messages: {RESTART}, and report it if it happens again"
    )]
    ColumnCount {
        /// The protocol's name of the message.
        message: &'static str,
        /// The (top-level) transaction.
        xid: Xid,
        /// Which row image: `new`, `old` or `key-only old`.
        image: &'static str,
        /// The values the row carries.
        got: usize,
        /// The relation, `schema.name`.
        relation: String,
        /// Its OID.
        oid: Oid,
        /// The columns its Relation message described.
        expected: usize,
    },
    /// A key-only old row (`K`) has a value in a column outside the replica identity, where
    /// PostgreSQL always sends NULL.
    #[error(
        "{message} of transaction {xid} carries a key-only old row with a value in column \
         \"{column}\" of relation {relation} (OID {oid}), which its Relation message did not \
         mark as part of the replica identity — the change does not fit its table and was not \
         buffered; the stream is corrupt or out of step with its Relation messages: {RESTART}, \
         and report it if it happens again"
    )]
    ValueOutsideKey {
        /// The protocol's name of the message.
        message: &'static str,
        /// The (top-level) transaction.
        xid: Xid,
        /// The relation, `schema.name`.
        relation: String,
        /// Its OID.
        oid: Oid,
        /// The first column outside the key that carries a value.
        column: String,
    },
    /// A two-phase commit message arrived; blueshift never asks for them.
    #[error(
        "{message} of transaction {xid} (gid {gid:?}) arrived, but two-phase decoding was not \
         requested — start replication without the `two_phase` option (and on a slot created \
         without TWO_PHASE)"
    )]
    TwoPhaseNotRequested {
        /// The protocol's name of the message.
        message: &'static str,
        /// The transaction.
        xid: Xid,
        /// The global identifier of the prepared transaction.
        gid: String,
    },
    /// The spill folder could not be created, made private, listed or cleaned.
    #[error(
        "cannot prepare the spill folder {path:?} as a private folder of this user — create it \
         (mode 0700, owned by this user), make its parent writable by this process, or choose \
         another with --spill-dir"
    )]
    SpillDir {
        /// The folder.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Writing a transaction's spill file failed.
    #[error(
        "cannot write the spill file {path:?} of transaction {xid} — free space in the spill \
         folder or raise the memory limit"
    )]
    Spill {
        /// The transaction.
        xid: Xid,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A change could not be encoded for its spill file.
    #[error("cannot encode a change of transaction {xid} for its spill file")]
    SpillEncode {
        /// The transaction.
        xid: Xid,
        /// Why encoding failed.
        #[source]
        source: EncodeError,
    },
}
