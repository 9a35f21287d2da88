//! Why sync stopped, and which stops a retry may cure.

use std::path::PathBuf;

use blueshift_applier::{ApplyError, ErrorClass};
use blueshift_decoder::connection::ReplicationError;
use blueshift_decoder::pgoutput::DecodeError;
use blueshift_decoder::Lsn;

use super::{direction, identity, spool, writeset, PreflightError};
use crate::assembler::AssembleError;
use crate::backfill::BackfillError;
use crate::client;
use crate::slot_guard::SlotError;

/// Why sync stopped.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A preflight check failed.
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    /// The replication connection to blue failed.
    #[error("replication from blue failed")]
    Source(#[source] ReplicationError),
    /// Blue ended the replication stream.
    #[error("blue ended the replication stream")]
    SourceEnded,
    /// A payload could not be decoded.
    #[error("could not decode the pgoutput message at {lsn}")]
    Decode {
        /// Where the frame starts.
        lsn: Lsn,
        /// Why.
        #[source]
        source: DecodeError,
    },
    /// Another process holds this sync's spill folder.
    #[error(
        "another blueshift sync on this host, of slot \"{slot}\" between the same databases, uses \
         the spill folder (it holds {lock:?}): the two would remove and overwrite each other's \
         spill files — stop the other one, or give this one its own --spill-dir"
    )]
    SpillInUse {
        /// The slot.
        slot: String,
        /// The lock file.
        lock: PathBuf,
    },
    /// The spill folder's lock could not be taken.
    #[error("cannot lock {lock:?}, beside the spill folder — choose another with --spill-dir")]
    SpillLock {
        /// The lock file.
        lock: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The message sequence could not be assembled into transactions.
    #[error("could not assemble the transaction at {lsn}")]
    Assemble {
        /// Where the frame starts.
        lsn: Lsn,
        /// Why.
        #[source]
        source: AssembleError,
    },
    /// A transaction could not be applied to green.
    #[error("could not apply transaction #{seq} to green")]
    Apply {
        /// Its number in this run.
        seq: u64,
        /// Why.
        #[source]
        source: ApplyError,
    },
    /// An applier could not start on green.
    #[error("could not start the applier with replication origin \"{origin}\" on green")]
    ApplierSetup {
        /// Its origin.
        origin: String,
        /// Why.
        #[source]
        source: ApplyError,
    },
    /// Green's unique indexes could not be read.
    #[error(transparent)]
    KeyCatalog(#[from] writeset::KeyCatalogError),
    /// A relation description from blue could not be checked against green's table.
    #[error("could not check blue's definition of table \"{table}\" against green")]
    RelationCheck {
        /// The table, `schema.name`.
        table: String,
        /// Why.
        #[source]
        source: crate::schema::SchemaError,
    },
    /// A SQL connection to blue or green failed.
    #[error("{what}")]
    Sql {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: client::ClientError,
    },
    /// A connection to green failed.
    #[error("{what}")]
    Green {
        /// What was being done.
        what: &'static str,
        /// Why.
        #[source]
        source: tokio_postgres::Error,
    },
    /// Every applier stopped.
    #[error("the appliers stopped")]
    AppliersGone,
    /// The connection to green closed (green stopped, or the network failed).
    #[error("lost the connection to green")]
    GreenClosed,
    /// A task panicked or was cancelled.
    #[error("a sync task ended abnormally")]
    Task(#[source] tokio::task::JoinError),
    /// The backfill failed.
    #[error("the backfill failed")]
    Backfill(#[source] BackfillError),
    /// A signal stopped sync before its work was done; running it again resumes.
    #[error(
        "{during} was interrupted by a signal: {state} — run the same command again to resume"
    )]
    Interrupted {
        /// What was running: `sync` (before streaming started), `the backfill`.
        during: &'static str,
        /// What the interruption left behind.
        state: &'static str,
    },
    /// Blue's stream carries a change to a table green does not hold the rows of: one added to
    /// the publication while sync ran. Sync copies it (see `backfill::start`) and goes on.
    #[error(
        "table {table} was added to the publication while sync ran: its existing rows must be \
         copied before its changes are applied"
    )]
    TableAdded {
        /// The table.
        table: crate::schema::QualifiedName,
    },
    /// The slot is not the one blueshift left, or not usable (see [`crate::slot_guard`]).
    #[error(transparent)]
    Slot(#[from] SlotError),
    /// A loaded table on blue is not the table green was loaded from any more (see
    /// [`identity`]): green has forgotten that it holds it.
    #[error(
        "green no longer follows blue for every table of publication \"{publication}\": {changed}. \
         Green has forgotten that it holds these tables (their rows stay): TRUNCATE each on \
         green, then start sync again — it copies them afresh from blue. To stop migrating a \
         table instead, leave it out of the publication and keep or drop green's copy knowingly"
    )]
    SourceChanged {
        /// The tables and what happened to each.
        changed: identity::Changed,
        /// The publication.
        publication: String,
    },
    /// Reading or recording the loaded tables' identities failed.
    #[error("could not {what} on {side}")]
    Identity {
        /// What was being done.
        what: &'static str,
        /// `blue` or `green`.
        side: &'static str,
        /// Why.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The reverse direction (green → blue) stopped with this error.
    #[error("the reverse direction (green → blue) stopped")]
    Reverse(#[source] Box<SyncError>),
    /// The reverse direction is armed but the forward one declares a column mapping.
    #[error(
        "the reverse direction of slot \"{slot}\" is armed, but sync declares a column mapping \
         (renames, exclusions or lossy casts) that cannot be applied backwards — run sync without \
         the mapping, or disarm the reverse direction (blueshift finalize)"
    )]
    ReverseMapping {
        /// The forward slot.
        slot: String,
    },
    /// Arming or disarming the reverse direction failed.
    #[error(transparent)]
    Direction(#[from] direction::DirectionError),
    /// The spool could not be written or read (see [`spool`]).
    #[error(transparent)]
    Spool(#[from] spool::SpoolError),
    /// The spool to replay turned out not to fit the stream just opened: it was removed, and
    /// the next attempt streams from green's position.
    #[error("the spool did not fit blue's stream ({why}); it was discarded")]
    SpoolMismatch {
        /// Why.
        why: String,
    },
}

impl SyncError {
    pub(super) fn apply(seq: u64, source: ApplyError) -> SyncError {
        SyncError::Apply { seq, source }
    }

    /// Whether reconnecting and resuming may help: a lost connection, a server restarting,
    /// a serialization failure. Everything else needs an operator.
    pub fn is_transient(&self) -> bool {
        match self {
            SyncError::Source(e) => replication_is_transient(e),
            SyncError::Backfill(e) => e.is_transient(),
            SyncError::SourceEnded | SyncError::GreenClosed => true,
            SyncError::Apply { source, .. } | SyncError::ApplierSetup { source, .. } => {
                source.is_transient()
            }
            SyncError::Sql { source, .. } => source.is_transient(),
            SyncError::KeyCatalog(_) | SyncError::Green { .. } => true,
            SyncError::Slot(e) => e.is_transient(),
            // A lost connection, not a server's refusal.
            SyncError::Identity { source, .. } => source.as_db_error().is_none(),
            SyncError::Reverse(e) => e.is_transient(),
            SyncError::Direction(e) => e.is_transient(),
            SyncError::SpoolMismatch { .. } => true,
            SyncError::RelationCheck {
                source: crate::schema::SchemaError::Query { source, .. },
                ..
            } => source.is_transient(),
            _ => false,
        }
    }

    /// Whether green refuses a change as it is and an operator can fix green while sync waits
    /// (see [`ApplyError::is_blocked`]): sync then retries instead of stopping.
    pub fn is_blocked(&self) -> bool {
        match self {
            SyncError::Apply { source, .. } => source.is_blocked(),
            SyncError::Reverse(e) => e.is_blocked(),
            _ => false,
        }
    }
}

/// Whether a replication connection error may go away by reconnecting.
pub(crate) fn replication_is_transient(e: &ReplicationError) -> bool {
    e.is_io()
        || matches!(
            e,
            ReplicationError::Closed { .. }
                | ReplicationError::Connect { .. }
                | ReplicationError::NoSuitableHost { .. }
        )
        || e.sqlstate()
            .is_some_and(|s| blueshift_applier::class_of_sqlstate(s) == ErrorClass::Transient)
}
