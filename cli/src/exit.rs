//! Exit codes by error class: one mapping from what went wrong to the process's exit code,
//! decided once, here, from the engine's own error types.
//!
//! | code | class | examples |
//! |---|---|---|
//! | 0 | done | the command finished; `sync` stopped by a signal after draining |
//! | 1 | differences | `verify` found rows that differ, `plan` found a blocked table, `status` lists a problem |
//! | 2 | usage | an unknown option, a missing argument (clap's own exit) |
//! | 3 | configuration or preflight refused | a bad settings file, `wal_level`, a missing publication, a slot in use, a green table not empty |
//! | 4 | connection or authentication | a server that cannot be reached, a wrong password, a connect timeout |
//! | 5 | data or integrity stop | a change green cannot take, a lost slot, a corrupt stream, a failed migration |
//! | 6 | interrupted (resumable) | SIGINT/SIGTERM before the work was done, a drain cut short |
//! | 7 | internal | a task that panicked, anything not classified |
//!
//! [`classify`] walks the error chain from the outermost error inwards. An error that settles
//! the class by itself (a connection failure, an interruption, a preflight refusal) wins at
//! once; an error that only suggests a class (a failed apply suggests a data stop) is kept in
//! case nothing deeper settles it.

use std::error::Error as StdError;
use std::process::ExitCode;

use blueshift_decoder::config::ConfigError;
use blueshift_decoder::connection::ReplicationError;
use blueshift_engine::backfill::BackfillError;
use blueshift_engine::cleanup::CleanupError;
use blueshift_engine::client::{ClientError, SqlError};
use blueshift_engine::cutover::CutoverError;
use blueshift_engine::metrics::MetricsError;
use blueshift_engine::migrate::MigrateError;
use blueshift_engine::schema::{RenameError, SchemaError};
use blueshift_engine::slot_guard::SlotError;
use blueshift_engine::status::StatusError;
use blueshift_engine::sync::{PreflightError, SyncError};
use blueshift_engine::tail::TailError;
use blueshift_engine::verify::VerifyError;

/// What the exit code says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// 0: done.
    Done,
    /// 1: differences found (`verify`, `plan`).
    Differences,
    /// 2: bad usage (clap exits with it by itself).
    #[allow(dead_code)]
    Usage,
    /// 3: the configuration is wrong or a preflight check refused to start.
    Refused,
    /// 4: a server could not be reached or refused the login.
    Connection,
    /// 5: blueshift stopped to protect green's data (a change it cannot apply, a lost slot…).
    DataStop,
    /// 6: interrupted by a signal before the work was done; running again resumes.
    Interrupted,
    /// 7: a bug, or an error no class fits.
    Internal,
}

impl Class {
    /// The process exit code.
    pub(crate) fn code(self) -> u8 {
        match self {
            Class::Done => 0,
            Class::Differences => 1,
            Class::Usage => 2,
            Class::Refused => 3,
            Class::Connection => 4,
            Class::DataStop => 5,
            Class::Interrupted => 6,
            Class::Internal => 7,
        }
    }

    pub(crate) fn exit_code(self) -> ExitCode {
        ExitCode::from(self.code())
    }
}

/// The table of exit codes, for `--help`.
pub(crate) const HELP: &str = "\
Exit codes:
  0  done (sync: stopped by SIGINT/SIGTERM after draining what was in flight)
  1  differences found (verify; plan: a table replication cannot carry; migrate validate;
     status: the report lists a problem)
  2  usage: an unknown option or a missing argument
  3  configuration or preflight refused (settings, wal_level, publication, slot in use, …)
  4  connection or authentication failed (unreachable, timed out, wrong password)
  5  data or integrity stop (a change green cannot take, a lost slot, a failed migration)
  6  interrupted by a signal before the work was done; run the same command again to resume
  7  internal error (a bug: please report it with the log)";

/// A refusal decided in the command-line tool itself (bad settings, conflicting options):
/// class 3.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Refused(pub(crate) String);

/// Differences were found (class 1); the report has been printed already.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Differences(pub(crate) String);

/// A signal stopped the command before it finished (class 6).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Interrupted(pub(crate) String);

/// A class that settles it, or one that only suggests it.
enum Verdict {
    Settled(Class),
    Suggested(Class),
    Unknown,
}

/// The exit class of an error chain.
pub(crate) fn classify(e: &anyhow::Error) -> Class {
    let mut suggested = None;
    for cause in e.chain() {
        match verdict(cause) {
            Verdict::Settled(class) => return class,
            Verdict::Suggested(class) => {
                suggested.get_or_insert(class);
            }
            Verdict::Unknown => {}
        }
    }
    suggested.unwrap_or(Class::Internal)
}

fn verdict(e: &(dyn StdError + 'static)) -> Verdict {
    use Verdict::{Settled, Suggested, Unknown};
    if e.is::<Refused>() || e.is::<ConfigError>() || e.is::<RenameError>() {
        return Settled(Class::Refused);
    }
    if e.is::<Differences>() {
        return Settled(Class::Differences);
    }
    if e.is::<Interrupted>() {
        return Settled(Class::Interrupted);
    }
    if e.is::<ClientError>() {
        return Settled(Class::Connection);
    }
    if let Some(e) = e.downcast_ref::<SlotError>() {
        // The slot is lost, moved, on another server, invalidated: green can no longer be
        // kept equal to blue from it. A failed query is left to its cause.
        return match e {
            SlotError::Sql { .. } => Suggested(Class::DataStop),
            _ => Settled(Class::DataStop),
        };
    }
    if e.is::<tokio::task::JoinError>() {
        return Settled(Class::Internal);
    }
    if let Some(e) = e.downcast_ref::<SyncError>() {
        return match e {
            SyncError::Interrupted { .. } => Settled(Class::Interrupted),
            // Transparent wrappers: the error chain skips what they wrap.
            SyncError::Preflight(inner) => verdict(inner),
            SyncError::Slot(inner) => verdict(inner),
            SyncError::Decode { .. }
            | SyncError::Assemble { .. }
            | SyncError::SourceChanged { .. } => Settled(Class::DataStop),
            SyncError::Task(_) => Settled(Class::Internal),
            SyncError::SpillInUse { .. } | SyncError::SpillLock { .. } => Settled(Class::Refused),
            _ => Suggested(Class::DataStop),
        };
    }
    if let Some(e) = e.downcast_ref::<PreflightError>() {
        return match e {
            PreflightError::Connect { .. } => Settled(Class::Connection),
            PreflightError::Slot(inner) => verdict(inner),
            PreflightError::Failed { .. }
            | PreflightError::Schema(_)
            | PreflightError::SlotInUse { .. }
            | PreflightError::SameDatabase { .. } => Settled(Class::Refused),
            _ => Suggested(Class::Refused),
        };
    }
    if let Some(e) = e.downcast_ref::<BackfillError>() {
        return match e {
            BackfillError::Interrupted => Settled(Class::Interrupted),
            BackfillError::NotEmpty { .. }
            | BackfillError::Unfinished { .. }
            | BackfillError::Blocked { .. }
            | BackfillError::Concurrent { .. }
            | BackfillError::RowSecurity { .. }
            | BackfillError::NeverLoaded { .. }
            | BackfillError::AddedNotEmpty { .. }
            | BackfillError::NotPublished { .. } => Settled(Class::Refused),
            // Transparent: the chain skips what it wraps.
            BackfillError::Sequences(inner) => verdict(inner),
            BackfillError::SlotLost { .. } | BackfillError::Corrupt { .. } => {
                Settled(Class::DataStop)
            }
            BackfillError::Task(_) => Settled(Class::Internal),
            BackfillError::Connect(_) => Settled(Class::Connection),
            BackfillError::Schema(inner) => verdict(inner),
            BackfillError::SlotGuard(inner) => verdict(inner.as_ref()),
            _ => Suggested(Class::DataStop),
        };
    }
    if let Some(e) = e.downcast_ref::<SchemaError>() {
        return match e {
            SchemaError::NoPublication { .. } | SchemaError::RenameTable { .. } => {
                Settled(Class::Refused)
            }
            SchemaError::Query { .. } => Unknown,
        };
    }
    if let Some(e) = e.downcast_ref::<StatusError>() {
        return match e {
            StatusError::Connect { .. } => Settled(Class::Connection),
            StatusError::Slot(inner) => verdict(inner),
            StatusError::Query { .. } => Suggested(Class::Refused),
            _ => Settled(Class::Refused),
        };
    }
    if let Some(e) = e.downcast_ref::<CutoverError>() {
        return match e {
            CutoverError::Connect { .. } => Settled(Class::Connection),
            CutoverError::Preflight { .. }
            | CutoverError::State(_)
            | CutoverError::EntryFile { .. } => Settled(Class::Refused),
            // Traffic is safe on one side, but the cutover stopped to protect the data (or an
            // operator must act): a data stop whatever the cause.
            CutoverError::RolledBack { .. }
            | CutoverError::RollbackFailed { .. }
            | CutoverError::LateWrite { .. }
            | CutoverError::Watch(_)
            | CutoverError::SwitchCommand { .. }
            | CutoverError::DrainTimeout { .. }
            | CutoverError::PauseBudget { .. } => Settled(Class::DataStop),
            // Transparent: the chain skips what it wraps.
            CutoverError::Sequences(inner) => verdict(inner),
            CutoverError::Schema(inner) => verdict(inner),
            CutoverError::Direction(inner) => match inner {
                blueshift_engine::sync::direction::DirectionError::Connect { .. } => {
                    Settled(Class::Connection)
                }
                _ => Suggested(Class::DataStop),
            },
            CutoverError::Query { .. } => Suggested(Class::DataStop),
        };
    }
    if let Some(e) = e.downcast_ref::<CleanupError>() {
        return match e {
            CleanupError::Connect { .. } => Settled(Class::Connection),
            CleanupError::Sql { .. } => Suggested(Class::Refused),
            _ => Settled(Class::Refused),
        };
    }
    if let Some(e) = e.downcast_ref::<TailError>() {
        return match e {
            TailError::NoSuchSlot { .. }
            | TailError::UnusableSlot { .. }
            | TailError::ProtocolVersion(_) => Settled(Class::Refused),
            TailError::Decode { .. } | TailError::Render { .. } => Settled(Class::DataStop),
            TailError::Output(_) => Settled(Class::Internal),
            TailError::Replication(_) => Unknown,
        };
    }
    if let Some(e) = e.downcast_ref::<MigrateError>() {
        return match e {
            MigrateError::Query { .. } => Suggested(Class::DataStop),
            MigrateError::LockBusy { .. } => Settled(Class::Refused),
            // Applied scripts differ from their files: what `validate` looks for.
            MigrateError::Validation { .. } => Settled(Class::Differences),
            MigrateError::Failed(_) => Settled(Class::DataStop),
            _ => Settled(Class::Refused),
        };
    }
    if let Some(e) = e.downcast_ref::<blueshift_engine::sequence::SequenceError>() {
        return match e {
            blueshift_engine::sequence::SequenceError::Query { .. } => Unknown,
            _ => Settled(Class::Refused),
        };
    }
    if let Some(e) = e.downcast_ref::<VerifyError>() {
        return match e {
            VerifyError::Connect { .. } => Settled(Class::Connection),
            VerifyError::Task(_) => Settled(Class::Internal),
            VerifyError::Schema(inner) => verdict(inner),
            VerifyError::Sequence(inner) => verdict(inner),
            VerifyError::Replication(_) | VerifyError::Sql { .. } => Unknown,
            VerifyError::GreenTableMissing { .. }
            | VerifyError::GreenColumnMissing { .. }
            | VerifyError::NotPublished { .. }
            | VerifyError::NoPoint(_)
            | VerifyError::NothingToResume => Settled(Class::Refused),
        };
    }
    if e.is::<MetricsError>() {
        return Settled(Class::Refused);
    }
    if let Some(e) = e.downcast_ref::<ReplicationError>() {
        return replication(e);
    }
    if let Some(e) = e.downcast_ref::<SqlError>() {
        return match e {
            SqlError::Server(s) => sqlstate(&s.sqlstate),
            SqlError::Client(_) | SqlError::Timeout { .. } | SqlError::NoSuitableHost { .. } => {
                Settled(Class::Connection)
            }
            // A certificate or key file that cannot be used: the settings must change.
            SqlError::Tls(_) => Settled(Class::Refused),
        };
    }
    if let Some(e) = e.downcast_ref::<tokio_postgres::Error>() {
        return match e.code() {
            Some(code) => sqlstate(code.code()),
            None if e.is_closed() => Settled(Class::Connection),
            None => Unknown,
        };
    }
    if let Some(e) = e.downcast_ref::<std::io::Error>() {
        use std::io::ErrorKind::*;
        return match e.kind() {
            ConnectionRefused | ConnectionReset | ConnectionAborted | NotConnected | TimedOut
            | BrokenPipe | HostUnreachable | NetworkUnreachable => Settled(Class::Connection),
            NotFound | PermissionDenied | InvalidInput | InvalidData => Suggested(Class::Refused),
            _ => Unknown,
        };
    }
    Unknown
}

fn replication(e: &ReplicationError) -> Verdict {
    use Verdict::Settled;
    match e {
        ReplicationError::Connect { .. }
        | ReplicationError::Timeout { .. }
        | ReplicationError::Io { .. }
        | ReplicationError::Closed { .. }
        | ReplicationError::Auth(_)
        | ReplicationError::NoSuitableHost { .. } => Settled(Class::Connection),
        ReplicationError::Config(_)
        | ReplicationError::InvalidSlotName { .. }
        | ReplicationError::Unsupported { .. }
        | ReplicationError::InvalidOption { .. } => Settled(Class::Refused),
        ReplicationError::Protocol(_) => Settled(Class::DataStop),
        ReplicationError::Server(s) => sqlstate(&s.code),
        ReplicationError::StatusTask => Settled(Class::Internal),
        _ if e.is_io() => Settled(Class::Connection),
        _ => Verdict::Unknown,
    }
}

/// The class a server's SQLSTATE settles: connection exceptions (`08`), invalid authorization
/// (`28`), a server shutting down or starting (`57P0x`) and an unknown database (`3D000`) are
/// connection failures; insufficient privilege (`42501`) and configuration limits (`53`,
/// `55000`) are refusals; anything else leaves it to the error around it.
fn sqlstate(code: &str) -> Verdict {
    match code {
        c if c.starts_with("08") || c.starts_with("28") => Verdict::Settled(Class::Connection),
        "57P01" | "57P02" | "57P03" | "3D000" => Verdict::Settled(Class::Connection),
        "42501" | "55000" => Verdict::Settled(Class::Refused),
        c if c.starts_with("53") => Verdict::Settled(Class::Refused),
        _ => Verdict::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_documented() {
        let all = [
            Class::Done,
            Class::Differences,
            Class::Usage,
            Class::Refused,
            Class::Connection,
            Class::DataStop,
            Class::Interrupted,
            Class::Internal,
        ];
        for (n, class) in all.iter().enumerate() {
            assert_eq!(usize::from(class.code()), n);
            assert!(HELP.contains(&format!("  {n}  ")), "{n} is not in the help");
        }
    }

    #[test]
    fn the_innermost_settling_cause_wins() {
        let refused = anyhow::Error::new(Refused("no source".into())).context("settings");
        assert_eq!(classify(&refused), Class::Refused);
        let interrupted = anyhow::Error::new(Interrupted("stop".into()));
        assert_eq!(classify(&interrupted), Class::Interrupted);
        let io = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
            .context("cannot reach blue");
        assert_eq!(classify(&io), Class::Connection);
        let plain = anyhow::anyhow!("something odd");
        assert_eq!(classify(&plain), Class::Internal);
        let backfill = anyhow::Error::new(SyncError::Backfill(BackfillError::Interrupted));
        assert_eq!(classify(&backfill), Class::Interrupted);
        let refused = anyhow::Error::new(SyncError::Preflight(PreflightError::Failed {
            problem: "no publication".into(),
            fix: "create it".into(),
        }));
        assert_eq!(classify(&refused), Class::Refused);
        let lost = anyhow::Error::new(SyncError::Slot(
            blueshift_engine::slot_guard::SlotError::Lost { slot: "s".into() },
        ));
        assert_eq!(classify(&lost), Class::DataStop);
    }
}
