//! Running one script, up or down: statement by statement inside one transaction (with the
//! bookkeeping rows written in that same transaction), or, for a script marked
//! `-- blueshift:no-transaction`, each statement on its own. A failure is mapped to the script's
//! line and column and recorded in the history after the rollback.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio_postgres::Client;
use tracing::{info, warn};

use super::history::{self, Action, Kind};
use super::lock::LOCK_NOT_AVAILABLE;
use super::script::{Script, Version};
use super::statement::{self, Statement, TextPosition};
use super::MigrateError;
use crate::client::SqlError;

/// SQLSTATE `active_sql_transaction`: the statement cannot run inside a transaction block.
const ACTIVE_SQL_TRANSACTION: &str = "25001";

/// Which way a script moves the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Apply the up script.
    Up,
    /// Run the down script.
    Down,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Up => "up",
            Direction::Down => "down",
        })
    }
}

/// One script run (or, in a dry run, planned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The version.
    pub version: Version,
    /// Its description.
    pub description: String,
    /// The script run: the up or the down file.
    pub path: PathBuf,
    /// Up or down.
    pub direction: Direction,
    /// False for a script marked `-- blueshift:no-transaction`.
    pub transactional: bool,
    /// How many statements the script holds.
    pub statements: usize,
    /// How long it ran; `None` in a dry run.
    pub execution_ms: Option<i64>,
}

/// A script read from disk and split into statements, ready to run.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    pub(crate) path: PathBuf,
    pub(crate) text: String,
    pub(crate) transactional: bool,
    pub(crate) statements: usize,
}

impl Loaded {
    fn statements(&self) -> Vec<Statement<'_>> {
        statement::split(&self.text).expect("the script was split when it was loaded")
    }
}

/// Where a migration failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailurePoint {
    /// At a statement.
    Statement {
        /// 1-based index of the statement in the script.
        index: usize,
        /// The script line and column of the error (or of the statement's start).
        at: TextPosition,
        /// The statement's first line.
        summary: String,
    },
    /// At `COMMIT` (a deferred constraint, a serialization failure).
    Commit,
}

/// A migration script that failed on the server.
#[derive(Debug, thiserror::Error)]
pub struct MigrationFailure {
    /// The version.
    pub version: Version,
    /// Its description.
    pub description: String,
    /// Up or down.
    pub direction: Direction,
    /// The script that failed.
    pub path: PathBuf,
    /// Where.
    pub point: FailurePoint,
    /// How many statements the script holds.
    pub statements: usize,
    /// Whether it ran in a transaction (and so was rolled back whole).
    pub transactional: bool,
    /// Set when the statement gave up waiting for a lock: the `lock_timeout` in force.
    pub lock_timeout: Option<Duration>,
    /// Whether `schema_version` now marks the version as failed (a partly run script).
    pub recorded_failed: bool,
    /// The server's error.
    #[source]
    pub source: SqlError,
}

impl fmt::Display for MigrationFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.direction {
            Direction::Up => "migration",
            Direction::Down => "reverting migration",
        };
        write!(
            f,
            "{what} {} ({:?}) failed ",
            self.version, self.description
        )?;
        let failed_index = match &self.point {
            FailurePoint::Statement { index, at, summary } => {
                write!(
                    f,
                    "at {}:{at} in statement {index} of {} ({summary})",
                    self.path.display(),
                    self.statements
                )?;
                *index
            }
            FailurePoint::Commit => {
                write!(f, "at commit of {}", self.path.display())?;
                self.statements + 1
            }
        };
        if self.transactional {
            f.write_str("; its transaction was rolled back and nothing of it remains")?;
        } else {
            write!(
                f,
                "; it ran outside a transaction: {}, {}",
                ran(failed_index),
                not_run(failed_index, self.statements)
            )?;
            if self.recorded_failed {
                write!(
                    f,
                    "; {} is recorded as failed — finish or undo it by hand, then run \
                     `blueshift migrate repair` and `blueshift migrate up` again",
                    self.version
                )?;
            }
        }
        if let Some(timeout) = self.lock_timeout {
            write!(
                f,
                " — the statement waited longer than lock_timeout ({}) for a lock other \
                 sessions hold; retry off-peak or raise --lock-timeout",
                humanize(timeout)
            )?;
        } else if self.source.sqlstate() == Some(ACTIVE_SQL_TRANSACTION) && self.transactional {
            f.write_str(
                " — the statement cannot run inside a transaction: put \
                 `-- blueshift:no-transaction` on the first line of the script",
            )?;
        }
        Ok(())
    }
}

fn ran(failed: usize) -> String {
    match failed {
        0 | 1 => "no statement before the failing one ran".to_owned(),
        2 => "statement 1 ran and stays committed".to_owned(),
        n => format!("statements 1–{} ran and stay committed", n - 1),
    }
}

fn not_run(failed: usize, total: usize) -> String {
    if failed > total {
        return "every statement ran".to_owned();
    }
    match total - failed {
        0 => format!("statement {failed} failed and is the last"),
        1 => format!("statement {failed} failed, statement {total} did not run"),
        _ => format!(
            "statement {failed} failed, statements {}–{total} did not run",
            failed + 1
        ),
    }
}

/// `2s`, `1500ms`: a duration as `--lock-timeout` takes it.
pub(crate) fn humanize(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Reads and splits the up or down script of `script`.
pub(crate) fn load(script: &Script, direction: Direction) -> Result<Loaded, MigrateError> {
    let path = match direction {
        Direction::Up => script.path.clone(),
        Direction::Down => script
            .down
            .clone()
            .ok_or_else(|| MigrateError::MissingDown {
                versions: vec![(script.version, script.name.clone())],
            })?,
    };
    let text = script.read(&path)?;
    let statements = statement::split(&text).map_err(|source| MigrateError::Split {
        path: path.clone(),
        source,
    })?;
    if statements.is_empty() {
        return Err(MigrateError::EmptyScript { path });
    }
    let transactional = !statement::wants_no_transaction(&text);
    if transactional {
        if let Some(s) = statements.iter().find(|s| controls_transaction(s)) {
            return Err(MigrateError::TransactionControl {
                path: path.clone(),
                at: s.position_in(&text, None),
                statement: s.summary(),
            });
        }
    }
    let count = statements.len();
    Ok(Loaded {
        path,
        text,
        transactional,
        statements: count,
    })
}

/// `BEGIN`, `COMMIT`, `ROLLBACK` (but not `ROLLBACK TO`), …: statements that would break the
/// transaction blueshift runs a script in.
fn controls_transaction(s: &Statement<'_>) -> bool {
    let Some(keyword) = s.keyword() else {
        return false;
    };
    match keyword.as_str() {
        "begin" | "start" | "commit" | "end" | "abort" => true,
        "rollback" => {
            let rest = s.text[keyword.len()..].trim_start();
            !rest.get(..2).is_some_and(|w| w.eq_ignore_ascii_case("to"))
        }
        _ => false,
    }
}

/// Runs a loaded script and records it. Call it holding the migration lock, with the bookkeeping
/// tables in place.
pub(crate) async fn run(
    client: &mut Client,
    script: &Script,
    loaded: &Loaded,
    direction: Direction,
    lock_timeout: Duration,
) -> Result<Step, MigrateError> {
    info!(
        version = script.version.get(),
        script = %loaded.path.display(),
        %direction,
        transactional = loaded.transactional,
        statements = loaded.statements,
        "running migration script"
    );
    // Each script starts from the session defaults: a `SET` in one does not leak into the next.
    client
        .batch_execute("RESET ALL")
        .await
        .map_err(|e| query("reset the session", e))?;
    super::lock::set_lock_timeout(client, lock_timeout)
        .await
        .map_err(|source| MigrateError::Query {
            what: "set lock_timeout".to_owned(),
            source,
        })?;
    let started = Instant::now();
    let result = if loaded.transactional {
        run_in_transaction(client, script, loaded, direction, started).await
    } else {
        run_each(client, script, loaded, direction, started).await
    };
    let execution_ms = elapsed_ms(started);
    // The script ran with the user's search_path (and may have changed it): pin it again for
    // what blueshift sends next.
    pin_search_path(client, false)
        .await
        .map_err(|e| MigrateError::Query {
            what: "pin search_path after the script".to_owned(),
            source: e,
        })?;
    match result {
        Ok(()) => {
            info!(
                version = script.version.get(),
                %direction,
                execution_ms,
                "migration script done"
            );
            Ok(Step {
                version: script.version,
                description: script.description.clone(),
                path: loaded.path.clone(),
                direction,
                transactional: loaded.transactional,
                statements: loaded.statements,
                execution_ms: Some(execution_ms),
            })
        }
        Err(Failed::Other(e)) => Err(e),
        Err(Failed::Server {
            point,
            ran_any,
            source,
        }) => {
            let lock_timeout =
                (source.sqlstate() == Some(LOCK_NOT_AVAILABLE)).then_some(lock_timeout);
            let partial = !loaded.transactional
                && (ran_any || loaded.text.to_ascii_lowercase().contains("concurrently"));
            let mut failure = MigrationFailure {
                version: script.version,
                description: script.description.clone(),
                direction,
                path: loaded.path.clone(),
                point,
                statements: loaded.statements,
                transactional: loaded.transactional,
                lock_timeout,
                recorded_failed: partial,
                source,
            };
            if let Err(e) = record_failure(client, script, &failure, execution_ms).await {
                warn!(
                    version = script.version.get(),
                    error = %e,
                    "cannot record the failed migration in blueshift.schema_history"
                );
                failure.recorded_failed = false;
            }
            Err(MigrateError::Failed(Box::new(failure)))
        }
    }
}

/// Why a run failed: the server rejected a statement (mapped to the script), or something else.
enum Failed {
    Server {
        point: FailurePoint,
        ran_any: bool,
        source: SqlError,
    },
    Other(MigrateError),
}

async fn run_in_transaction(
    client: &mut Client,
    script: &Script,
    loaded: &Loaded,
    direction: Direction,
    started: Instant,
) -> Result<(), Failed> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| Failed::Other(query("begin the migration transaction", e)))?;
    for (i, s) in loaded.statements().iter().enumerate() {
        if let Err(e) = tx.batch_execute(s.text).await {
            let source = SqlError::from(e);
            if let Err(e) = tx.rollback().await {
                warn!(error = %e, "rollback after a failed migration statement failed");
            }
            return Err(Failed::Server {
                point: statement_point(loaded, s, i, &source),
                ran_any: false,
                source,
            });
        }
    }
    record_success(&tx, script, direction, elapsed_ms(started))
        .await
        .map_err(Failed::Other)?;
    tx.commit().await.map_err(|e| Failed::Server {
        point: FailurePoint::Commit,
        ran_any: false,
        source: e.into(),
    })
}

async fn run_each(
    client: &mut Client,
    script: &Script,
    loaded: &Loaded,
    direction: Direction,
    started: Instant,
) -> Result<(), Failed> {
    for (i, s) in loaded.statements().iter().enumerate() {
        if let Err(e) = client.batch_execute(s.text).await {
            let source = SqlError::from(e);
            return Err(Failed::Server {
                point: statement_point(loaded, s, i, &source),
                ran_any: i > 0,
                source,
            });
        }
    }
    let tx = client
        .transaction()
        .await
        .map_err(|e| Failed::Other(query("begin the bookkeeping transaction", e)))?;
    record_success(&tx, script, direction, elapsed_ms(started))
        .await
        .map_err(Failed::Other)?;
    tx.commit()
        .await
        .map_err(|e| Failed::Other(query("commit the bookkeeping transaction", e)))
}

fn statement_point(
    loaded: &Loaded,
    s: &Statement<'_>,
    index: usize,
    source: &SqlError,
) -> FailurePoint {
    FailurePoint::Statement {
        index: index + 1,
        at: s.position_in(&loaded.text, source.server().and_then(|e| e.position)),
        summary: s.summary(),
    }
}

/// Sets `search_path` to `pg_catalog, pg_temp`, for the session or (`local`) the transaction.
pub(crate) async fn pin_search_path(
    client: &impl tokio_postgres::GenericClient,
    local: bool,
) -> Result<(), SqlError> {
    client
        .execute(
            "SELECT pg_catalog.set_config('search_path', $1, $2)",
            &[&blueshift_decoder::connection::PINNED_SEARCH_PATH, &local],
        )
        .await?;
    Ok(())
}

async fn record_success(
    tx: &tokio_postgres::Transaction<'_>,
    script: &Script,
    direction: Direction,
    execution_ms: i64,
) -> Result<(), MigrateError> {
    let bookkeeping = |source| MigrateError::Query {
        what: "record the migration in blueshift.schema_version".to_owned(),
        source,
    };
    // The script's statements ran before in this transaction, with the user's search_path.
    pin_search_path(tx, true).await.map_err(bookkeeping)?;
    match direction {
        Direction::Up => history::record_applied(
            tx,
            &history::NewRow {
                version: script.version,
                description: &script.description,
                script: &script.name,
                checksum: &script.checksum,
                kind: Kind::Migration,
                execution_ms,
                success: true,
            },
        )
        .await
        .map_err(bookkeeping)?,
        Direction::Down => history::remove(tx, script.version)
            .await
            .map_err(bookkeeping)?,
    }
    history::append(
        tx,
        &history::Entry {
            version: Some(script.version),
            description: Some(&script.description),
            script: Some(&script.name),
            checksum: Some(&script.checksum),
            action: action(direction),
            success: true,
            detail: None,
            execution_ms: Some(execution_ms),
        },
    )
    .await
    .map_err(|source| MigrateError::Query {
        what: "record the migration in blueshift.schema_history".to_owned(),
        source,
    })
}

/// Records a failure after the rollback, in a transaction of its own: the history row, and for a
/// script that ran part-way outside a transaction, the version marked as failed.
async fn record_failure(
    client: &mut Client,
    script: &Script,
    failure: &MigrationFailure,
    execution_ms: i64,
) -> Result<(), SqlError> {
    let tx = client.transaction().await?;
    if failure.recorded_failed {
        match failure.direction {
            Direction::Up => {
                history::record_applied(
                    &tx,
                    &history::NewRow {
                        version: script.version,
                        description: &script.description,
                        script: &script.name,
                        checksum: &script.checksum,
                        kind: Kind::Migration,
                        execution_ms,
                        success: false,
                    },
                )
                .await?
            }
            Direction::Down => history::mark_failed(&tx, script.version).await?,
        }
    }
    history::append(
        &tx,
        &history::Entry {
            version: Some(script.version),
            description: Some(&script.description),
            script: Some(&script.name),
            checksum: Some(&script.checksum),
            action: action(failure.direction),
            success: false,
            detail: Some(format!("{failure}: {}", failure.source)),
            execution_ms: Some(execution_ms),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

fn action(direction: Direction) -> Action {
    match direction {
        Direction::Up => Action::Up,
        Direction::Down => Action::Down,
    }
}

fn elapsed_ms(started: Instant) -> i64 {
    i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX)
}

fn query(what: &str, e: tokio_postgres::Error) -> MigrateError {
    MigrateError::Query {
        what: what.to_owned(),
        source: e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ran_and_not_run_name_the_statements() {
        assert_eq!(ran(1), "no statement before the failing one ran");
        assert_eq!(ran(3), "statements 1–2 ran and stay committed");
        assert_eq!(
            not_run(3, 5),
            "statement 3 failed, statements 4–5 did not run"
        );
        assert_eq!(not_run(4, 5), "statement 4 failed, statement 5 did not run");
        assert_eq!(not_run(5, 5), "statement 5 failed and is the last");
        assert_eq!(humanize(Duration::from_secs(2)), "2s");
        assert_eq!(humanize(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn transaction_control_is_recognized() {
        let split = statement::split(
            "begin; start transaction; commit; end; rollback; rollback to savepoint a; \
             savepoint a; create table t (); abort",
        )
        .expect("splits");
        let flagged: Vec<bool> = split.iter().map(controls_transaction).collect();
        assert_eq!(
            flagged,
            [true, true, true, true, true, false, false, false, true]
        );
    }
}
