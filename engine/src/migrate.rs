//! Versioned schema migrations: how green (or blue) gets its schema changes before and while
//! data flows.
//!
//! ```text
//!  migrations/                       target database
//!  V1__create_users.sql        ┌──────────────────────────────────────────┐
//!  V1__create_users.down.sql   │ blueshift.schema_version  (one row each) │
//!  V2__add_email.sql   ──up──▶ │ blueshift.schema_history  (append-only)  │
//!  …                  ◀─down── │ your schema                              │
//!                              └──────────────────────────────────────────┘
//! ```
//!
//! - [`script`]: the files: `V<version>__<description>.sql` and `.down.sql`, checksums, `new`.
//! - [`statement`]: splits a script into statements and maps a server error position back to the
//!   script's line and column.
//! - [`history`]: the `blueshift.schema_version` and `blueshift.schema_history` tables.
//! - [`lock`]: the advisory lock against concurrent runs, and `lock_timeout` for DDL.
//! - [`status`]: disk reconciled with the database; what `validate` reports.
//! - [`execution`]: runs one script, in a transaction or statement by statement.
//! - [`migrator`]: the commands.
//!
//! **search_path.** A migration script runs with the session's own `search_path` (the role's or
//! database's setting, else `"$user", public`), as a script author expects; [`connect`] opens
//! such a session (no pinned `search_path` at startup) and pins `pg_catalog, pg_temp` at once,
//! so blueshift's own statements never resolve a name through a schema others can create in.
//! Before each script `RESET ALL` restores the user's path; after it the pin is set again, and
//! the bookkeeping inside a script's transaction pins it locally first. Every function,
//! operator and type blueshift's own statements name is qualified besides.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

pub mod execution;
pub mod history;
pub mod lock;
pub mod migrator;
pub mod script;
pub mod statement;
pub mod status;

/// Opens the session migrations run in: the user's `search_path` as the session default (what
/// scripts run with), pinned to `pg_catalog, pg_temp` for blueshift's own statements until a
/// script runs. TLS as every other session.
pub async fn connect(
    config: &blueshift_decoder::ConnectConfig,
    application_name: &str,
) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), crate::client::ClientError> {
    let (client, task) = crate::client::connect_unpinned(config, application_name).await?;
    execution::pin_search_path(&client, false)
        .await
        .map_err(|source| crate::client::ClientError {
            target: config.to_string(),
            source,
        })?;
    Ok((client, task))
}

pub use execution::{Direction, FailurePoint, MigrationFailure, Step};
pub use history::{AppliedMigration, HistoryRow, Kind};
pub use lock::{lock_key, LockHolder, LockWait, LOCK_NAME};
pub use migrator::{MigrateConfig, Migrator, Repair, Run};
pub use script::{scaffold, Script, Version};
pub use statement::{SplitError, TextPosition};
pub use status::{Problem, State, Status};

use crate::client::SqlError;

/// Why a migration command failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The folder of scripts cannot be read.
    #[error("cannot read the migrations folder {} — create it, or point --dir at the folder of V<version>__<description>.sql scripts", dir.display())]
    Directory {
        /// The folder.
        dir: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A script cannot be read or written.
    #[error("cannot read or write {}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A script is not UTF-8.
    #[error("{} is not UTF-8 text — save it as UTF-8", path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
    },
    /// A file that looks like a script is misnamed.
    #[error("{name:?} is not a migration script name: {reason} — name it V<version>__<description>.sql (or .down.sql)")]
    BadName {
        /// The file name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two scripts share a version.
    #[error("two scripts have version {version}: {first} and {second} — renumber one of them")]
    DuplicateVersion {
        /// The version.
        version: Version,
        /// One file.
        first: String,
        /// The other.
        second: String,
    },
    /// A down script has no up script.
    #[error("{} has no up script — add V{}__<description>.sql beside it, or remove it", path.display(), version.get())]
    OrphanDown {
        /// Its version.
        version: Version,
        /// The down script.
        path: PathBuf,
    },
    /// `new` would overwrite a file.
    #[error("{} already exists — choose another description", path.display())]
    FileExists {
        /// The file.
        path: PathBuf,
    },
    /// `new` was given a description without letters or digits.
    #[error("the description {description:?} has no letters or digits to name a file with — describe the change in words")]
    EmptyDescription {
        /// The description.
        description: String,
    },
    /// A script cannot be split into statements.
    #[error("cannot split {} into statements", path.display())]
    Split {
        /// The script.
        path: PathBuf,
        /// Why.
        #[source]
        source: SplitError,
    },
    /// A script without a statement (a scaffold never filled in).
    #[error("{} has no statements — write the migration (a script with nothing to do can say `SELECT 'nothing to do';`), or delete the file", path.display())]
    EmptyScript {
        /// The script.
        path: PathBuf,
    },
    /// A transactional script controls the transaction itself.
    #[error("{}:{at}: `{statement}` — each migration runs in a transaction of its own; remove the statement, or put `-- blueshift:no-transaction` on the first line to run the script outside a transaction", path.display())]
    TransactionControl {
        /// The script.
        path: PathBuf,
        /// Where the statement starts.
        at: TextPosition,
        /// The statement's first line.
        statement: String,
    },
    /// A bookkeeping query failed.
    #[error("cannot {what}")]
    Query {
        /// What blueshift was doing.
        what: String,
        /// Why.
        #[source]
        source: SqlError,
    },
    /// Another run holds the migration lock.
    #[error("{}", lock_busy(holder.as_ref(), *waited))]
    LockBusy {
        /// The session holding it, if visible.
        holder: Option<LockHolder>,
        /// How long this run waited.
        waited: Duration,
    },
    /// Applied scripts do not match the files, or a migration failed part-way.
    #[error("{}", validation(problems))]
    Validation {
        /// Each mismatch.
        problems: Vec<Problem>,
    },
    /// A migration script failed on the server.
    #[error(transparent)]
    Failed(Box<MigrationFailure>),
    /// `down` needs down scripts that do not exist.
    #[error("{}", missing_down(versions))]
    MissingDown {
        /// The versions and their up scripts.
        versions: Vec<(Version, String)>,
    },
    /// `down` would revert the baseline.
    #[error("cannot revert {baseline}: it is the baseline the database was adopted at, not a migration — choose --to {} or above", baseline.get())]
    BelowBaseline {
        /// The baseline.
        baseline: Version,
    },
    /// `baseline` on a database that has migrations recorded.
    #[error("blueshift.schema_version already records migrations (up to {version}) — baseline adopts a database that has none; use `blueshift migrate status` to see them")]
    AlreadyMigrated {
        /// The highest recorded version.
        version: Version,
    },
}

impl MigrateError {
    /// The migration failure, if this is one.
    pub fn failure(&self) -> Option<&MigrationFailure> {
        match self {
            MigrateError::Failed(f) => Some(f),
            _ => None,
        }
    }
}

fn lock_busy(holder: Option<&LockHolder>, waited: Duration) -> String {
    let who = match holder {
        Some(LockHolder {
            pid,
            application_name: Some(app),
        }) => format!("the session with pid {pid} (application_name {app:?})"),
        Some(LockHolder { pid, .. }) => format!("the session with pid {pid}"),
        None => "another session (its pid is not visible to this role in pg_locks)".to_owned(),
    };
    let waited = if waited.is_zero() {
        "--lock-wait is 0s, so this run did not wait".to_owned()
    } else {
        format!(
            "this run waited {} (--lock-wait)",
            execution::humanize(waited)
        )
    };
    format!(
        "another blueshift migrate run holds the migration lock: {who}; {waited} — let that \
         run finish, or pass a longer --lock-wait"
    )
}

fn validation(problems: &[Problem]) -> String {
    let list: Vec<String> = problems.iter().map(Problem::to_string).collect();
    let fix = if problems.iter().all(|p| p.state == State::OutOfOrder) {
        "renumber the out-of-order scripts above the highest applied version"
    } else {
        "review the changes, then run `blueshift migrate repair` to accept edited or removed \
         scripts and clear failed rows (or restore the files)"
    };
    format!(
        "validation failed, nothing was run: {} — {fix}",
        list.join("; ")
    )
}

fn missing_down(versions: &[(Version, String)]) -> String {
    let list: Vec<String> = versions
        .iter()
        .map(|(v, name)| format!("{v} ({name})"))
        .collect();
    format!(
        "no down script for {}; nothing was reverted — write the missing \
         V<version>__<description>.down.sql, or choose a --to above them",
        list.join(", ")
    )
}
