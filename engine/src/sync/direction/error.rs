//! Why arming or disarming the reverse direction failed.

use blueshift_applier::client::{ClientError, SqlError};
use blueshift_decoder::connection::ReplicationError;
use blueshift_decoder::ident::quote_ident;
use blueshift_decoder::Lsn;

use super::MAX_NAME_LEN;
use crate::schema::QualifiedName;
use crate::slot_guard::SlotError;

/// Why the reverse direction could not be armed or disarmed.
#[derive(Debug, thiserror::Error)]
pub enum DirectionError {
    /// Two-way mode's sequence strategy could not be applied or reverted.
    #[error("the two-way sequence strategy could not be applied or reverted")]
    Sequences(#[source] crate::sequence::SequenceError),
    /// A SQL connection failed.
    #[error("could not connect to {side}")]
    Connect {
        /// `blue` or `green`.
        side: &'static str,
        /// Why.
        #[source]
        source: ClientError,
    },
    /// A statement failed.
    #[error("could not {what} on {side}")]
    Sql {
        /// `blue` or `green`.
        side: &'static str,
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: SqlError,
    },
    /// The replication connection to green failed.
    #[error("could not {what} on green")]
    Replication {
        /// What was being done.
        what: &'static str,
        /// Why.
        #[source]
        source: ReplicationError,
    },
    /// The slot guard on blue refused.
    #[error(transparent)]
    Slot(#[from] SlotError),
    /// A derived name does not fit PostgreSQL's identifiers.
    #[error(
        "the reverse {what} name {} is longer than {MAX_NAME_LEN} bytes — use a shorter --slot or \
         --publication",
        quote_ident(name)
    )]
    NameTooLong {
        /// `slot` or `publication`.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// The forward publication is missing on blue or publishes nothing.
    #[error(
        "publication {} on blue publishes no table: the reverse direction replicates the tables \
         the forward publication holds — create it (or add tables to it) before arming",
        quote_ident(publication)
    )]
    NoTables {
        /// The forward publication.
        publication: String,
    },
    /// A published table is missing on green.
    #[error(
        "table {table} is published on blue but missing on green: the reverse direction needs \
         every published table on both sides under the same name — create it on green (blueshift \
         migrate) or remove it from the publication"
    )]
    MissingOnGreen {
        /// The table.
        table: QualifiedName,
    },
    /// A publication of the reverse name exists on green and is not blueshift's.
    #[error(
        "publication {} exists on green and was not created by blueshift: drop or rename it, or \
         use another --publication",
        quote_ident(publication)
    )]
    ForeignPublication {
        /// The publication.
        publication: String,
    },
    /// The row is there, the reverse slot is not.
    #[error(
        "the reverse direction of slot {} is armed (blueshift.reverse on green, since {armed_lsn}) \
         but its replication slot {} is gone from green: what green committed since may be missing \
         on blue. Disarm it (`blueshift finalize`, or disarm_reverse), make blue equal green again \
         (compare with `blueshift verify`), then arm it again",
        quote_ident(slot),
        quote_ident(reverse_slot)
    )]
    SlotLost {
        /// The forward slot.
        slot: String,
        /// The reverse slot.
        reverse_slot: String,
        /// Where it was armed.
        armed_lsn: Lsn,
    },
    /// A table blue publishes is not in the reverse publication.
    #[error(
        "table {table} is in publication {} on blue but not in the reverse publication {} on \
         green: green's writes to it would not reach blue — once green's {table} equals blue's, \
         ALTER PUBLICATION {} ADD TABLE {table} on green (or remove the table from {} on blue), \
         then start sync again",
        quote_ident(publication),
        quote_ident(reverse_publication),
        quote_ident(reverse_publication),
        quote_ident(publication)
    )]
    NotReversed {
        /// The table.
        table: QualifiedName,
        /// The forward publication.
        publication: String,
        /// The reverse publication.
        reverse_publication: String,
    },
    /// A process holds the reverse slot or a reverse origin.
    #[error(
        "{what} is in use by process {pid:?} on {side}: is a `blueshift sync` still running the \
         reverse direction? Stop it (or wait for it to notice the disarm), then run this again"
    )]
    InUse {
        /// The object, quoted.
        what: String,
        /// `blue` or `green`.
        side: &'static str,
        /// The process, when known.
        pid: Option<i32>,
    },
}

impl DirectionError {
    /// Whether retrying may help (a lost connection, a server restarting).
    pub fn is_transient(&self) -> bool {
        match self {
            DirectionError::Connect { source, .. } => source.is_transient(),
            DirectionError::Sql { source, .. } => source.is_transient(),
            DirectionError::Sequences(e) => e.is_transient(),
            DirectionError::Replication { source, .. } => {
                super::super::replication_is_transient(source)
            }
            DirectionError::Slot(e) => e.is_transient(),
            _ => false,
        }
    }

    pub(super) fn sql(
        side: &'static str,
        what: impl Into<String>,
    ) -> impl FnOnce(tokio_postgres::Error) -> Self {
        let what = what.into();
        move |e| DirectionError::Sql {
            side,
            what,
            source: SqlError::from(e),
        }
    }
}
