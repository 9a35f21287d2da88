//! Why a cutover stopped, each error naming the object, the cause and the fix.

use crate::client::{ClientError, SqlError};
use crate::sequence::SequenceError;

/// Why `cutover` did not finish.
#[derive(Debug, thiserror::Error)]
pub enum CutoverError {
    /// A server or PgBouncer's admin console could not be reached.
    #[error("cannot reach {side}")]
    Connect {
        /// `blue`, `green`, `PgBouncer`.
        side: &'static str,
        /// Why.
        #[source]
        source: ClientError,
    },
    /// A statement failed.
    #[error("could not {what} on {side}")]
    Query {
        /// `blue`, `green`, `PgBouncer`.
        side: &'static str,
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: SqlError,
    },
    /// Preflight found problems; nothing was changed.
    #[error("cutover refused, nothing was changed:\n  - {}", problems.join("\n  - "))]
    Preflight {
        /// Each problem with its fix.
        problems: Vec<String>,
    },
    /// The persisted state does not allow what was asked.
    #[error("{0}")]
    State(String),
    /// PgBouncer's configuration file cannot be used.
    #[error("PgBouncer configuration {path}: {problem}")]
    EntryFile {
        /// The file.
        path: String,
        /// What is wrong and what fixes it.
        problem: String,
    },
    /// The switch command failed.
    #[error("the switch command failed ({status}) — traffic was left on {side}; fix the command (it gets BLUESHIFT_TARGET_HOST, _PORT, _DBNAME) and run the cutover again")]
    SwitchCommand {
        /// How it ended.
        status: String,
        /// Where traffic stays.
        side: &'static str,
    },
    /// Green did not reach the fence in time.
    #[error("green did not reach the fence at {fence} within the pause budget (--max-pause {budget_ms} ms): green holds up to {held} — is the sync running and green up?")]
    DrainTimeout {
        /// The fence LSN.
        fence: String,
        /// What green durably holds.
        held: String,
        /// The budget.
        budget_ms: u128,
    },
    /// The pause budget ran out before RESUME.
    #[error("the write pause reached --max-pause ({budget_ms} ms) before {step}")]
    PauseBudget {
        /// The step that was reached.
        step: &'static str,
        /// The budget.
        budget_ms: u128,
    },
    /// A transaction wrote on blue after the fence.
    #[error("a write on {side} after the fence: {detail} — this session bypasses PgBouncer; stop that writer (or pass --terminate-direct-sessions) and run the command again")]
    LateWrite {
        /// The side fenced.
        side: &'static str,
        /// The sessions, xids and tables.
        detail: String,
    },
    /// Sequences could not be copied.
    #[error(transparent)]
    Sequences(#[from] SequenceError),
    /// Blue's publication could not be read (the verify gate's tables).
    #[error(transparent)]
    Schema(#[from] crate::schema::SchemaError),
    /// The reverse direction could not be armed or disarmed.
    #[error(transparent)]
    Direction(#[from] crate::sync::direction::DirectionError),
    /// The watch after the switch failed.
    #[error("the watch after the switch failed: {0}")]
    Watch(String),
    /// A failure before RESUME: traffic was returned to blue.
    #[error("{} rolled back automatically before RESUME: traffic stays on {side}, {side} is writable again, clients saw a pause and no error", if *side == "blue" { "cutover" } else { "rollback" })]
    RolledBack {
        /// Where traffic stays.
        side: &'static str,
        /// What went wrong.
        #[source]
        cause: Box<CutoverError>,
    },
    /// The automatic rollback itself failed: an operator must act.
    #[error("the automatic rollback failed: {rollback}; the switch had failed with: {cause} — check PgBouncer (RESUME {database}), its entry, and both databases' default_transaction_read_only")]
    RollbackFailed {
        /// What the rollback could not do.
        rollback: String,
        /// Why the cutover failed.
        cause: String,
        /// PgBouncer's database entry.
        database: String,
    },
}

impl CutoverError {
    pub(crate) fn query(
        side: &'static str,
        what: impl Into<String>,
    ) -> impl FnOnce(tokio_postgres::Error) -> CutoverError {
        let what = what.into();
        move |e| CutoverError::Query {
            side,
            what,
            source: SqlError::from(e),
        }
    }

    pub(crate) fn connect(side: &'static str) -> impl FnOnce(ClientError) -> CutoverError {
        move |source| CutoverError::Connect { side, source }
    }
}
