//! The migration commands: `status`, `validate`, `up`, `down`, `repair`, `baseline` and
//! `history`, each reading the scripts on disk and `blueshift.schema_version` and, for those that
//! write, holding the migration lock from start to end.

use std::path::PathBuf;
use std::time::Duration;

use tokio_postgres::Client;
use tracing::{info, warn};

use super::execution::{self, Direction, Loaded, Step};
use super::history::{self, Action, HistoryRow, Kind};
use super::lock::{self, LockWait};
use super::script::{self, Script, Version};
use super::status::{State, Status};
use super::MigrateError;
use crate::client::SqlError;

/// Settings of a migration run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrateConfig {
    /// The folder of the scripts.
    pub dir: PathBuf,
    /// How long to wait for another run's migration lock.
    pub lock_wait: LockWait,
    /// `lock_timeout` for the migration statements: how long one may wait for a table lock.
    pub lock_timeout: Duration,
}

impl Default for MigrateConfig {
    fn default() -> Self {
        MigrateConfig {
            dir: PathBuf::from("migrations"),
            lock_wait: LockWait::Forever,
            lock_timeout: Duration::from_secs(2),
        }
    }
}

/// What `up` or `down` did, or in a dry run would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// Whether this was a dry run (nothing ran).
    pub dry_run: bool,
    /// The highest applied version before.
    pub from: Option<Version>,
    /// The highest applied version after (in a dry run: it would be).
    pub to: Option<Version>,
    /// The scripts run (or to run), in order.
    pub steps: Vec<Step>,
}

impl Run {
    fn new(dry_run: bool, before: &Status, steps: Vec<Step>) -> Run {
        let from = before.current();
        let to = match steps.last() {
            None => from,
            Some(last) if last.direction == Direction::Up => Some(last.version),
            Some(last) => before
                .entries
                .iter()
                .filter(|e| {
                    e.version < last.version && e.applied.as_ref().is_some_and(|a| a.success)
                })
                .map(|e| e.version)
                .max(),
        };
        Run {
            dry_run,
            from,
            to,
            steps,
        }
    }
}

/// One change `repair` made to `schema_version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repair {
    /// The row now matches the edited (or renamed) file.
    Realigned {
        /// The version.
        version: Version,
        /// Its description.
        description: String,
        /// The checksum recorded before.
        old_checksum: String,
        /// The file's checksum, recorded now.
        new_checksum: String,
    },
    /// The row was removed: its file is gone, or it had failed part-way.
    Removed {
        /// The version.
        version: Version,
        /// Its description.
        description: String,
        /// Why: [`State::MissingOnDisk`] or [`State::Failed`].
        was: State,
    },
}

/// The migration commands, for one folder of scripts.
#[derive(Debug, Clone)]
pub struct Migrator {
    config: MigrateConfig,
}

impl Migrator {
    /// A migrator with these settings.
    pub fn new(config: MigrateConfig) -> Migrator {
        Migrator { config }
    }

    /// Its settings.
    pub fn config(&self) -> &MigrateConfig {
        &self.config
    }

    /// The scripts on disk, by version.
    pub fn scripts(&self) -> Result<Vec<Script>, MigrateError> {
        script::discover(&self.config.dir)
    }

    /// Every version on disk or applied, and its state. Reads only: creates nothing.
    pub async fn status(&self, client: &Client) -> Result<Status, MigrateError> {
        let scripts = self.scripts()?;
        read_status(client, &scripts).await
    }

    /// The status, or [`MigrateError::Validation`] when an applied script changed or went
    /// missing, a migration failed part-way, or a script would run out of order. Reads only.
    pub async fn validate(&self, client: &Client) -> Result<Status, MigrateError> {
        let status = self.status(client).await?;
        check(&status)?;
        Ok(status)
    }

    /// The last `limit` rows of `blueshift.schema_history`, oldest first. Reads only.
    pub async fn history(
        &self,
        client: &Client,
        limit: i64,
    ) -> Result<Vec<HistoryRow>, MigrateError> {
        history::history(client, limit)
            .await
            .map_err(|source| query("read blueshift.schema_history", source))
    }

    /// Applies the pending scripts (up to `to`, inclusive), each in its own transaction unless
    /// marked otherwise. Refuses while validation fails. A dry run reads only and runs nothing.
    pub async fn up(
        &self,
        client: &mut Client,
        to: Option<Version>,
        dry_run: bool,
    ) -> Result<Run, MigrateError> {
        let scripts = self.scripts()?;
        if dry_run {
            let status = read_status(client, &scripts).await?;
            check(&status)?;
            let pending = status.pending(to);
            let steps = load_all(&pending, Direction::Up)?
                .into_iter()
                .map(|(s, loaded)| planned(s, &loaded, Direction::Up))
                .collect();
            return Ok(Run::new(dry_run, &status, steps));
        }
        self.locked(client, async |client: &mut Client| {
            let status = read_status(client, &scripts).await?;
            check(&status)?;
            let pending = status.pending(to);
            let loaded = load_all(&pending, Direction::Up)?;
            let steps = run_all(client, loaded, Direction::Up, self.config.lock_timeout).await?;
            Ok(Run::new(dry_run, &status, steps))
        })
        .await
    }

    /// Reverts applied migrations with their down scripts, newest first: every version above
    /// `to` (`Some(0)`: all of them), or without `to` only the newest. Refuses, before running
    /// anything, when a down script is missing or the baseline would be crossed.
    pub async fn down(
        &self,
        client: &mut Client,
        to: Option<i64>,
        dry_run: bool,
    ) -> Result<Run, MigrateError> {
        let scripts = self.scripts()?;
        if dry_run {
            let status = read_status(client, &scripts).await?;
            let reverts = plan_down(&status, to)?;
            let steps = load_all(&reverts, Direction::Down)?
                .into_iter()
                .map(|(s, loaded)| planned(s, &loaded, Direction::Down))
                .collect();
            return Ok(Run::new(dry_run, &status, steps));
        }
        self.locked(client, async |client: &mut Client| {
            let status = read_status(client, &scripts).await?;
            let reverts = plan_down(&status, to)?;
            let loaded = load_all(&reverts, Direction::Down)?;
            let steps = run_all(client, loaded, Direction::Down, self.config.lock_timeout).await?;
            Ok(Run::new(dry_run, &status, steps))
        })
        .await
    }

    /// Realigns `schema_version` with the files after a reviewed change: records the checksums
    /// of edited (and renamed) scripts, removes the rows of scripts gone from disk, and clears
    /// failed rows (their versions count as not applied). Each change is audited. Scripts out of
    /// order cannot be repaired this way: they stay a problem until renumbered.
    pub async fn repair(&self, client: &mut Client) -> Result<Vec<Repair>, MigrateError> {
        let scripts = self.scripts()?;
        self.locked(client, async |client: &mut Client| {
            let status = read_status(client, &scripts).await?;
            let mut repairs = Vec::new();
            let tx = client
                .transaction()
                .await
                .map_err(|e| query("begin the repair transaction", e.into()))?;
            for entry in &status.entries {
                let (Some(row), script) = (&entry.applied, &entry.script) else {
                    continue;
                };
                let (repair, detail) = match (entry.state, script) {
                    (State::Changed | State::Applied, Some(s))
                        if s.checksum != row.checksum
                            || s.name != row.script
                            || s.description != row.description =>
                    {
                        history::realign(&tx, entry.version, &s.description, &s.name, &s.checksum)
                            .await
                            .map_err(|e| query("update blueshift.schema_version", e))?;
                        (
                            Repair::Realigned {
                                version: entry.version,
                                description: s.description.clone(),
                                old_checksum: row.checksum.clone(),
                                new_checksum: s.checksum.clone(),
                            },
                            format!(
                                "realigned with {}: checksum {} -> {}",
                                s.name, row.checksum, s.checksum
                            ),
                        )
                    }
                    (State::MissingOnDisk | State::Failed, _) => {
                        history::remove(&tx, entry.version)
                            .await
                            .map_err(|e| query("update blueshift.schema_version", e))?;
                        let why = if entry.state == State::Failed {
                            "failed row cleared; the version counts as not applied"
                        } else {
                            "file missing on disk; row removed"
                        };
                        (
                            Repair::Removed {
                                version: entry.version,
                                description: row.description.clone(),
                                was: entry.state,
                            },
                            why.to_owned(),
                        )
                    }
                    _ => continue,
                };
                info!(version = entry.version.get(), detail = %detail, "repaired");
                history::append(
                    &tx,
                    &history::Entry {
                        version: Some(entry.version),
                        description: Some(&entry.description),
                        script: script.as_ref().map(|s| s.name.as_str()),
                        checksum: script.as_ref().map(|s| s.checksum.as_str()),
                        action: Action::Repair,
                        success: true,
                        detail: Some(detail),
                        execution_ms: None,
                    },
                )
                .await
                .map_err(|e| query("append to blueshift.schema_history", e))?;
                repairs.push(repair);
            }
            tx.commit()
                .await
                .map_err(|e| query("commit the repair", e.into()))?;
            Ok(repairs)
        })
        .await
    }

    /// Adopts an existing database at `version`: records a baseline so that scripts up to
    /// `version` count as applied and `up` starts above it. Refuses when migrations are recorded.
    pub async fn baseline(
        &self,
        client: &mut Client,
        version: Version,
        description: &str,
    ) -> Result<(), MigrateError> {
        self.locked(client, async |client: &mut Client| {
            let applied = history::applied(client)
                .await
                .map_err(|e| query("read blueshift.schema_version", e))?;
            if let Some(last) = applied.last() {
                return Err(MigrateError::AlreadyMigrated {
                    version: last.version,
                });
            }
            let tx = client
                .transaction()
                .await
                .map_err(|e| query("begin the baseline transaction", e.into()))?;
            history::record_applied(
                &tx,
                &history::NewRow {
                    version,
                    description,
                    script: "",
                    checksum: "",
                    kind: Kind::Baseline,
                    execution_ms: 0,
                    success: true,
                },
            )
            .await
            .map_err(|e| query("record the baseline in blueshift.schema_version", e))?;
            history::append(
                &tx,
                &history::Entry {
                    version: Some(version),
                    description: Some(description),
                    script: None,
                    checksum: None,
                    action: Action::Baseline,
                    success: true,
                    detail: None,
                    execution_ms: None,
                },
            )
            .await
            .map_err(|e| query("append to blueshift.schema_history", e))?;
            tx.commit()
                .await
                .map_err(|e| query("commit the baseline", e.into()))?;
            info!(version = version.get(), "baseline recorded");
            Ok(())
        })
        .await
    }

    /// Runs `work` holding the migration lock, with the bookkeeping tables in place; releases
    /// the lock whatever the outcome.
    async fn locked<T>(
        &self,
        client: &mut Client,
        work: impl AsyncFnOnce(&mut Client) -> Result<T, MigrateError>,
    ) -> Result<T, MigrateError> {
        lock::acquire(client, self.config.lock_wait).await?;
        let result = match history::ensure(client).await {
            Ok(()) => work(client).await,
            Err(e) => Err(query("create the blueshift schema and its tables", e)),
        };
        if let Err(e) = lock::release(client).await {
            // The lock is the session's: if the connection is gone, so is the lock.
            warn!(error = %e, "cannot release the migration lock");
        }
        result
    }
}

async fn read_status(client: &Client, scripts: &[Script]) -> Result<Status, MigrateError> {
    let initialized = history::exists(client)
        .await
        .map_err(|e| query("look for blueshift.schema_version", e))?;
    let applied = history::applied(client)
        .await
        .map_err(|e| query("read blueshift.schema_version", e))?;
    Ok(Status::reconcile(initialized, scripts, &applied))
}

fn check(status: &Status) -> Result<(), MigrateError> {
    let problems = status.problems();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(MigrateError::Validation { problems })
    }
}

/// The scripts `down` reverts, newest first, after every check that can refuse.
fn plan_down(status: &Status, to: Option<i64>) -> Result<Vec<&Script>, MigrateError> {
    check(status)?;
    let applied: Vec<_> = status
        .entries
        .iter()
        .filter(|e| e.applied.as_ref().is_some_and(|a| a.success))
        .collect();
    let target = match to {
        Some(t) => t,
        None => match applied.as_slice() {
            [.., before, _last] => before.version.get(),
            _ => 0,
        },
    };
    let reverted: Vec<_> = applied
        .iter()
        .rev()
        .filter(|e| e.version.get() > target)
        .collect();
    if let Some(baseline) = reverted.iter().find(|e| e.state == State::Baseline) {
        return Err(MigrateError::BelowBaseline {
            baseline: baseline.version,
        });
    }
    let missing: Vec<(Version, String)> = reverted
        .iter()
        .filter_map(|e| e.script.as_ref())
        .filter(|s| s.down.is_none())
        .map(|s| (s.version, s.name.clone()))
        .collect();
    if !missing.is_empty() {
        return Err(MigrateError::MissingDown { versions: missing });
    }
    Ok(reverted.iter().filter_map(|e| e.script.as_ref()).collect())
}

/// Reads and splits every script before anything runs, so that a script that cannot be split
/// stops the run before the first one starts.
fn load_all<'s>(
    scripts: &[&'s Script],
    direction: Direction,
) -> Result<Vec<(&'s Script, Loaded)>, MigrateError> {
    scripts
        .iter()
        .map(|s| execution::load(s, direction).map(|l| (*s, l)))
        .collect()
}

/// Runs loaded scripts one after the other, each in its own transaction (or statement by
/// statement when marked no-transaction); stops at the first failure.
async fn run_all(
    client: &mut Client,
    loaded: Vec<(&Script, Loaded)>,
    direction: Direction,
    lock_timeout: std::time::Duration,
) -> Result<Vec<Step>, MigrateError> {
    let mut steps = Vec::with_capacity(loaded.len());
    for (script, loaded) in loaded {
        steps.push(execution::run(client, script, &loaded, direction, lock_timeout).await?);
    }
    Ok(steps)
}

fn planned(script: &Script, loaded: &Loaded, direction: Direction) -> Step {
    Step {
        version: script.version,
        description: script.description.clone(),
        path: loaded.path.clone(),
        direction,
        transactional: loaded.transactional,
        statements: loaded.statements,
        execution_ms: None,
    }
}

fn query(what: &str, source: SqlError) -> MigrateError {
    MigrateError::Query {
        what: what.to_owned(),
        source,
    }
}
