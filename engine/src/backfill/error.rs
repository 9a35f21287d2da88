//! Why a backfill stops: each error names the object, the cause and the fix.

use blueshift_applier::client::{ClientError, SqlError};
use blueshift_decoder::connection::ReplicationError;

use crate::schema::{quote_ident, QualifiedName, SchemaError};

/// Why a backfill failed.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    /// A statement on green failed.
    #[error("could not {what} on green")]
    Green {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: SqlError,
    },
    /// A statement on blue failed.
    #[error("could not {what} on blue")]
    Blue {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: SqlError,
    },
    /// A connection could not be opened.
    #[error(transparent)]
    Connect(ClientError),
    /// The replication connection failed.
    #[error("the replication connection to blue failed")]
    Replication(#[source] ReplicationError),
    /// The schemas could not be compared.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// The schema comparison found something the copy cannot carry.
    #[error("table {table} cannot be copied: {reason} — run `blueshift plan` for the details")]
    Blocked {
        /// The table.
        table: QualifiedName,
        /// Why.
        reason: String,
    },
    /// Row-level security applies to the role blueshift connects as: a copy would miss rows
    /// (blue) or have them refused (green).
    #[error(
        "{} on {side} {} row-level security that applies to role {}, so {} — ALTER ROLE {} \
         BYPASSRLS on {side}, or connect as the owner of {} (when it does not FORCE ROW LEVEL \
         SECURITY)",
        names(tables),
        if tables.len() == 1 { "has" } else { "have" },
        quote_ident(role),
        if *side == "blue" {
            "a copy would silently miss the rows its policies hide"
        } else {
            "its policies would filter what blueshift writes"
        },
        quote_ident(role),
        if tables.len() == 1 { "the table" } else { "each table" },
    )]
    RowSecurity {
        /// `blue` or `green`.
        side: &'static str,
        /// The tables (the relations read: a partition of a published table is named itself).
        tables: Vec<QualifiedName>,
        /// The role.
        role: String,
    },
    /// Tables published since green was loaded cannot be copied under `--no-backfill`.
    #[error(
        "{} {} published but never copied to green (added to the publication after green was \
         loaded), and --no-backfill forbids copying — run sync once without --no-backfill: it \
         copies {} consistently with the stream",
        names(tables),
        if tables.len() == 1 { "is" } else { "are" },
        if tables.len() == 1 { "it" } else { "them" },
    )]
    NeverLoaded {
        /// The tables.
        tables: Vec<QualifiedName>,
    },
    /// A table added to the publication already has rows on green.
    #[error(
        "table {table} was added to the publication, but green's table already has rows; \
         blueshift copies an added table into an empty one, consistently with the stream — \
         TRUNCATE it on green, then start sync again"
    )]
    AddedNotEmpty {
        /// The table.
        table: QualifiedName,
    },
    /// A table that blue's stream carries is no longer published, and green never got its rows.
    #[error(
        "table {table} appears in blue's stream (publication {} published it when it changed) \
         but is not published any more, and green never got its rows — add it back on blue \
         (ALTER PUBLICATION {} ADD TABLE {table}) so that blueshift copies it, then start sync \
         again",
        quote_ident(publication),
        quote_ident(publication)
    )]
    NotPublished {
        /// The table.
        table: QualifiedName,
        /// The publication.
        publication: String,
    },
    /// A green table already holds rows.
    #[error(
        "green table {table} already has rows; a backfill copies into empty tables — TRUNCATE \
         it on green, or pass --no-backfill if green was loaded another way"
    )]
    NotEmpty {
        /// The table.
        table: QualifiedName,
    },
    /// An unfinished backfill exists but backfill is turned off.
    #[error(
        "the backfill of slot {slot} on green is unfinished; run again without --no-backfill to \
         finish it (or drop green's blueshift.backfill_* rows of the slot if green was reloaded)"
    )]
    Unfinished {
        /// The slot.
        slot: String,
    },
    /// The slot an unfinished backfill streams from is gone: what it copied under earlier
    /// snapshots needs the changes since, which went with the slot.
    #[error(
        "replication slot {slot} is gone but the backfill that relies on it is unfinished; start \
         over: TRUNCATE green's tables, `blueshift cleanup --yes`, then sync again"
    )]
    SlotLost {
        /// The slot.
        slot: String,
    },
    /// Two backfills of one slot ran at once.
    #[error("another backfill of slot {slot} is running against the same green database")]
    Concurrent {
        /// The slot.
        slot: String,
    },
    /// The state on green is not what blueshift wrote.
    #[error("unexpected {what}")]
    Corrupt {
        /// What.
        what: String,
    },
    /// Sequences could not be copied.
    #[error(transparent)]
    Sequences(#[from] crate::sequence::SequenceError),
    /// The catch-up after a resumed copy failed.
    #[error("the catch-up after the resumed copy failed")]
    CatchUp(#[source] Box<crate::sync::SyncError>),
    /// A task panicked or was cancelled.
    #[error("a backfill task ended abnormally")]
    Task(#[source] tokio::task::JoinError),
    /// The slot guard's record of the new slot could not be written.
    #[error(transparent)]
    SlotGuard(Box<crate::slot_guard::SlotError>),
    /// Shutdown was asked for during the copy; the next run resumes.
    #[error("backfill interrupted; the next run resumes at the first unfinished chunk")]
    Interrupted,
}

impl BackfillError {
    pub(crate) fn green(what: &str, e: tokio_postgres::Error) -> BackfillError {
        BackfillError::Green {
            what: what.to_owned(),
            source: SqlError::from(e),
        }
    }

    pub(crate) fn blue(what: &str, e: tokio_postgres::Error) -> BackfillError {
        BackfillError::Blue {
            what: what.to_owned(),
            source: SqlError::from(e),
        }
    }

    pub(crate) fn sql(side: &str, what: &str, e: tokio_postgres::Error) -> BackfillError {
        if side == "blue" {
            BackfillError::blue(what, e)
        } else {
            BackfillError::green(what, e)
        }
    }

    /// Whether running again soon may help (a lost connection, a restarting server).
    pub fn is_transient(&self) -> bool {
        match self {
            // The snapshot could not be imported (its exporter is gone: 22023) or is too old
            // (72000): the next attempt takes a new one.
            BackfillError::Blue { source, .. }
                if matches!(source.sqlstate(), Some("22023" | "72000")) =>
            {
                true
            }
            BackfillError::Green { source, .. } | BackfillError::Blue { source, .. } => {
                source.is_transient()
            }
            BackfillError::Connect(e) => e.is_transient(),
            BackfillError::Replication(e) => crate::sync::replication_is_transient(e),
            // A table added to the publication during the catch-up: the next attempt resumes
            // the run, which then plans it.
            BackfillError::CatchUp(e) => {
                e.is_transient() || matches!(**e, crate::sync::SyncError::TableAdded { .. })
            }
            BackfillError::Sequences(e) => e.is_transient(),
            BackfillError::SlotGuard(e) => e.is_transient(),
            _ => false,
        }
    }
}

/// `table "a"."b"`, or `tables "a"."b", "a"."c"`.
fn names(tables: &[QualifiedName]) -> String {
    let list: Vec<String> = tables.iter().map(ToString::to_string).collect();
    match list.len() {
        1 => format!("table {}", list[0]),
        _ => format!("tables {}", list.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_security_names_the_tables_and_the_fix() {
        let e = BackfillError::RowSecurity {
            side: "blue",
            tables: vec![QualifiedName::new("public", "secrets")],
            role: "bs reader".into(),
        };
        assert_eq!(
            e.to_string(),
            "table \"public\".\"secrets\" on blue has row-level security that applies to role \
             \"bs reader\", so a copy would silently miss the rows its policies hide — ALTER ROLE \
             \"bs reader\" BYPASSRLS on blue, or connect as the owner of the table (when it does \
             not FORCE ROW LEVEL SECURITY)"
        );
        let e = BackfillError::NeverLoaded {
            tables: vec![QualifiedName::new("s", "a"), QualifiedName::new("s", "b")],
        };
        assert!(e
            .to_string()
            .starts_with("tables \"s\".\"a\", \"s\".\"b\" are published"));
        assert!(!e.is_transient());
    }
}
