//! `Applier`: one connection to green that applies whole source transactions, exactly once.
//!
//! A transaction is applied as
//!
//! ```text
//! BEGIN;
//! SELECT pg_replication_origin_xact_setup(<commit LSN on blue>, <commit time on blue>);
//! <its changes, in blue's order>;
//! COMMIT;
//! ```
//!
//! on a session bound to the applier's replication origin, so green records, atomically with
//! the commit, that it holds everything up to that commit.
//!
//! The origin is tagged **only at the commit**: `pg_replication_origin_xact_setup` goes in the
//! same simple-query message as the `COMMIT` (one round trip; the server reads the whole message
//! or nothing of it), never when the changes are applied, and after the transaction's deferred
//! checks have run (`SET CONSTRAINTS ALL IMMEDIATE`, see [`commit_sql`]). From PostgreSQL 16 a transaction that *aborts* after the tag moves the origin's
//! progress too (as it must for streamed transactions aborted on the publisher), so a
//! transaction rolled back after it — the engine's deadlock breaker, a re-run at the head of the
//! line, a client killed while it waits for its turn — would make a restart skip a transaction
//! green never committed. A transaction whose commit LSN is at
//! or before the origin's progress is already on green and is skipped: re-delivery after a
//! restart applies nothing twice.
//!
//! [`Applier::apply`] does it all; [`Applier::begin_and_apply`], [`Applier::commit`] and
//! [`Applier::rollback`] split it so that the engine can run several appliers' statements in
//! parallel and still issue the COMMITs in blue's commit order.

mod streamed;

use std::future::Future as _;
use std::sync::Arc;

use blueshift_decoder::config::ConnectConfig;
use blueshift_decoder::pgoutput::PgTimestamp;
use blueshift_decoder::Lsn;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, SimpleQueryMessage};
use tracing::{debug, info, warn};

use crate::change::ChangeWriter;
use crate::client::{self, SqlError};
use crate::conflict::{Detector, Kind, Remote, Resolution};
use crate::error::ApplyError;
use crate::origin;
use crate::outcome::{ApplyOutcome, RowCounts, Staged};
use crate::pipeline::Pipeline;
use crate::session::{self, ApplierOptions};
use crate::statement::StatementCache;
use crate::target::TargetCache;
use crate::transaction::{Change, Changes, Transaction};
use crate::wire::Wire;

/// Prepared once at connect, to check early that the role may tag transactions (the tag itself
/// goes with each `COMMIT`, see [`commit_sql`]).
const XACT_SETUP: &str =
    "SELECT pg_catalog.pg_replication_origin_xact_setup($1::pg_catalog.pg_lsn, $2::pg_catalog.timestamptz)";

/// Commits, then reads where green's WAL stands, in one round trip.
pub(crate) const COMMIT: &str =
    "COMMIT; SELECT pg_catalog.pg_current_wal_insert_lsn()::pg_catalog.text";

/// One connection to green, applying transactions under its own replication origin.
#[derive(Debug)]
pub struct Applier {
    /// Catalog reads; the applied transactions too when `wire` is `None`.
    client: Client,
    connection: JoinHandle<()>,
    /// The session the transactions are applied on, one `Sync` per window (see
    /// [`wire`](crate::wire)): bound to the origin. `None` for a two-way applier or with
    /// [`ApplierOptions::wire`] off.
    wire: Option<Wire>,
    options: ApplierOptions,
    /// The commit LSN of the last transaction green holds under this origin: read at connect,
    /// then advanced by every commit of this session.
    progress: Lsn,
    /// The source commit time of the open transaction, for its origin tag at the commit.
    commit_time: PgTimestamp,
    targets: TargetCache,
    statements: StatementCache,
    open: Option<Staged>,
    /// Two-way mode: conflicts are detected (see [`conflict`](crate::conflict)).
    conflicts: Option<Detector>,
    /// The transactions applied next are catch-up groups of several source transactions (see
    /// [`set_group`](Self::set_group)): only those are folded.
    group: bool,
}

impl Applier {
    /// Connects to green, pins the session (see [`session`](crate::session)), creates the
    /// replication origin when missing, binds it to the session and reads its progress.
    pub async fn connect(
        green: &ConnectConfig,
        options: ApplierOptions,
    ) -> Result<Applier, ApplyError> {
        origin::validate_name(&options.origin_name)?;
        let (client, connection) = client::connect(green, &options.application_name)
            .await
            .map_err(ApplyError::Connect)?;
        session::pin(&client, &options).await?;
        let mut wire = None;
        if options.wire && options.conflicts.is_none() {
            let mut session = Wire::connect(green, &options).await?;
            origin::create(&client, &options.origin_name).await?;
            session
                .query(
                    "SELECT pg_catalog.pg_replication_origin_session_setup($1::pg_catalog.text)",
                    &[&options.origin_name],
                )
                .await
                .map_err(|source| ApplyError::Origin {
                    action: "set up",
                    name: options.origin_name.clone(),
                    source,
                })?;
            wire = Some(session);
        } else {
            origin::set_up(&client, &options.origin_name).await?;
        }
        let progress = origin::progress(&client, &options.origin_name).await?;
        // Checks early that the role may tag transactions (the tag itself is sent with each
        // COMMIT, see `commit_sql`).
        client
            .prepare(XACT_SETUP)
            .await
            .map_err(|e| ApplyError::Origin {
                action: "prepare the transaction setup of",
                name: options.origin_name.clone(),
                source: SqlError::from(e),
            })?;
        let conflicts = match &options.conflicts {
            Some(conflict_options) => {
                Detector::set_up(&client).await?;
                Some(Detector::new(conflict_options.clone()))
            }
            None => None,
        };
        info!(
            origin = %options.origin_name,
            progress = %progress,
            pipelined = wire.is_some(),
            synchronous_commit = options.synchronous_commit.as_str(),
            "applier connected"
        );
        Ok(Applier {
            client,
            connection,
            wire,
            statements: StatementCache::new(options.statement_cache_capacity),
            targets: TargetCache::new(Arc::clone(&options.mapping)),
            options,
            progress,
            commit_time: PgTimestamp(0),
            open: None,
            conflicts,
            group: false,
        })
    }

    /// Says whether the transactions applied next are groups of several source transactions
    /// (the engine's group commit): a group is folded and applied as set statements from
    /// [`FOLD_MIN_CHANGES`](crate::set::FOLD_MIN_CHANGES) changes, a single source transaction
    /// from [`FOLD_MIN_SINGLE`](crate::set::FOLD_MIN_SINGLE) or when spilled (see the `fold`
    /// and `chunk` modules).
    pub fn set_group(&mut self, group: bool) {
        self.group = group;
    }

    /// The backfill fences this applier applies (see [`crate::fence`]).
    pub fn fences(&self) -> &crate::fence::Fences {
        &self.options.fences
    }

    /// The replication origin's name.
    pub fn origin_name(&self) -> &str {
        &self.options.origin_name
    }

    /// The commit LSN of the last transaction this applier knows green holds (read at connect,
    /// advanced by each commit). With `synchronous_commit = off` it may be ahead of what is
    /// flushed; [`origin_progress`](Self::origin_progress) says what is durable.
    pub fn progress(&self) -> Lsn {
        self.progress
    }

    /// Whether this applier detects conflicts (two-way mode): each source transaction must then
    /// be applied alone, so that the rows it writes carry its own commit time.
    pub fn detects_conflicts(&self) -> bool {
        self.conflicts.is_some()
    }

    /// The conflicts of the transactions committed since the last call, each once.
    pub fn take_conflicts(&mut self) -> Vec<(Kind, Resolution)> {
        self.conflicts
            .as_mut()
            .map(Detector::take)
            .unwrap_or_default()
    }

    /// True when the connection to green is gone; the applier must then be replaced.
    pub fn is_closed(&self) -> bool {
        self.client.is_closed() || self.wire.as_ref().is_some_and(Wire::is_closed)
    }

    /// The origin's durable progress on green (`pg_replication_origin_progress(name, true)`):
    /// the commit LSN of the last transaction applied under it whose commit is flushed.
    pub async fn origin_progress(&mut self) -> Result<Lsn, ApplyError> {
        let durable = origin::progress(&self.client, &self.options.origin_name).await?;
        self.progress = self.progress.max(durable);
        Ok(durable)
    }

    /// Applies `tx` and commits it; skips it when green already holds it. On error nothing of
    /// it stays on green and the origin's progress is unchanged.
    ///
    /// Call it only when every earlier transaction has committed. A small transaction (at most
    /// [`ONE_TRIP_MAX_LOCATING`] UPDATEs and DELETEs) costs one round trip: `BEGIN`, the
    /// changes and the origin tag with the `COMMIT` go down the connection without waiting for
    /// any answer (see [`pipeline`](crate::pipeline)), each UPDATE and DELETE in the form that
    /// fails on green when it finds no row. A larger one (a catch-up group) goes in two: its
    /// changes, plain and pipelined, whose row counts are read before the `COMMIT` is sent —
    /// one more round trip for the whole group instead of a check green pays on every row.
    /// Whether a `COMMIT` that was sent landed, when blueshift dies before reading its answer,
    /// is what the origin's progress on green says.
    pub async fn apply(&mut self, tx: &mut Transaction) -> Result<ApplyOutcome, ApplyError> {
        if self.open.is_some() {
            return Err(ApplyError::Misuse(
                "apply while a transaction is open; commit or roll it back first",
            ));
        }
        let commit_lsn = tx.commit_lsn;
        if commit_lsn <= self.progress {
            debug!(commit_lsn = %commit_lsn, progress = %self.progress, "transaction already on green, skipped");
            return Ok(ApplyOutcome {
                commit_lsn,
                skipped: true,
                rows: RowCounts::default(),
                green_lsn: None,
            });
        }
        if !one_trip(tx) || self.folds(tx) {
            self.begin_and_apply(tx).await?;
            return match self.commit().await {
                Ok(outcome) => Ok(outcome),
                Err(e) => {
                    // A COMMIT that failed ended the transaction; a ROLLBACK then finds none.
                    if let Err(rollback) = self.rollback().await {
                        warn!(commit_lsn = %commit_lsn, error = %rollback, "rollback after a failed commit failed too");
                    }
                    Err(e)
                }
            };
        }
        let staged = Staged {
            commit_lsn,
            skipped: false,
            rows: RowCounts::default(),
        };
        self.open = Some(staged);
        match self.write(tx, true, true, false).await {
            Ok((rows, Some(green_lsn))) => {
                self.open = None;
                self.progress = self.progress.max(commit_lsn);
                if let Some(detector) = &mut self.conflicts {
                    detector.committed();
                }
                Ok(self.committed(Staged { rows, ..staged }, green_lsn))
            }
            Ok((_, None)) => {
                // Unreachable: a pipelined COMMIT that answered always reports a position.
                let _ = self.rollback().await;
                Err(ApplyError::Misuse(
                    "the pipelined COMMIT reported no position",
                ))
            }
            Err(e) => {
                // After a failure green ran the COMMIT as a ROLLBACK, or never got it; a
                // ROLLBACK then finds no transaction, which is harmless.
                if let Err(rollback) = self.rollback().await {
                    warn!(commit_lsn = %commit_lsn, error = %rollback, "rollback after a failed apply failed too");
                }
                Err(e)
            }
        }
    }

    /// Opens a transaction on green and applies every change of `tx`, without committing; or,
    /// when green already holds `tx`, sends nothing and stages a skip. Follow with
    /// [`commit`](Self::commit) or [`rollback`](Self::rollback). On error the transaction is
    /// rolled back already. `BEGIN` and the changes are pipelined: one wait, for the last
    /// answer; the origin tag goes with the `COMMIT`.
    pub async fn begin_and_apply(&mut self, tx: &mut Transaction) -> Result<Staged, ApplyError> {
        if self.open.is_some() {
            return Err(ApplyError::Misuse(
                "begin_and_apply while a transaction is open; commit or roll it back first",
            ));
        }
        let commit_lsn = tx.commit_lsn;
        if commit_lsn <= self.progress {
            debug!(commit_lsn = %commit_lsn, progress = %self.progress, "transaction already on green, skipped");
            let staged = Staged {
                commit_lsn,
                skipped: true,
                rows: RowCounts::default(),
            };
            self.open = Some(staged);
            return Ok(staged);
        }
        let fold = self.folds(tx);
        self.open = Some(Staged {
            commit_lsn,
            skipped: false,
            rows: RowCounts::default(),
        });
        let mut written = self.write(tx, true, false, fold).await;
        if let (true, Err(e)) = (fold, &written) {
            // A spill file that cannot be read fails the row path alike (and a spill read
            // before, by an earlier attempt, must not be applied again: see `Cursor`).
            if !e.is_transient() && !matches!(e, ApplyError::Spill { .. }) {
                // Whatever failed in the folded group (a row missing on green, a value or a
                // constraint green refuses), the same changes in blue's order fail the way the
                // row path does, naming the row — or succeed where folding alone was wrong.
                debug!(commit_lsn = %commit_lsn, error = %e, "folded group failed; applying it again in blue's order");
                match self.rollback().await.and_then(|()| rewind(tx)) {
                    Ok(()) => {
                        self.open = Some(Staged {
                            commit_lsn,
                            skipped: false,
                            rows: RowCounts::default(),
                        });
                        written = self.write(tx, true, false, false).await;
                    }
                    Err(rollback) => {
                        warn!(commit_lsn = %commit_lsn, error = %rollback, "rollback after a failed folded group failed");
                    }
                }
            }
        }
        match written {
            Ok((rows, _)) => {
                let staged = Staged {
                    commit_lsn,
                    skipped: false,
                    rows,
                };
                self.open = Some(staged);
                Ok(staged)
            }
            Err(e) => {
                if let Err(rollback) = self.rollback().await {
                    warn!(commit_lsn = %commit_lsn, error = %rollback, "rollback after a failed apply failed too");
                }
                Err(e)
            }
        }
    }

    /// Whether `tx` is folded and applied as set statements, chunk by chunk (see the `chunk`
    /// module): folding on, one-way, and either a group ([`set_group`](Self::set_group)) of at
    /// least [`FOLD_MIN_CHANGES`](crate::set::FOLD_MIN_CHANGES) changes, or a single source
    /// transaction of at least [`FOLD_MIN_SINGLE`](crate::set::FOLD_MIN_SINGLE) changes or
    /// spilled (a small one goes row by row).
    fn folds(&self, tx: &Transaction) -> bool {
        if !self.options.fold || self.conflicts.is_some() {
            return false;
        }
        match &tx.changes {
            Changes::InMemory(changes) if self.group => {
                changes.len() >= crate::set::FOLD_MIN_CHANGES
            }
            Changes::InMemory(changes) => changes.len() >= crate::set::FOLD_MIN_SINGLE,
            Changes::Spilled(_) => true,
        }
    }

    /// Sends (with `begin`) `BEGIN`, every change of `tx` and, with `commit`, the origin tag and
    /// the `COMMIT`, without waiting, then reads every answer: the rows touched and, with
    /// `commit`, green's WAL position after the `COMMIT`. Without `begin` the changes go into
    /// the transaction already open (a streamed one).
    async fn write(
        &mut self,
        tx: &mut Transaction,
        begin: bool,
        commit: bool,
        fold: bool,
    ) -> Result<(RowCounts, Option<Lsn>), ApplyError> {
        let commit_lsn = tx.commit_lsn;
        let lsn = commit_lsn.to_string();
        let mut pipeline = match &mut self.wire {
            Some(wire) => Pipeline::on_wire(wire, self.options.pipeline_depth),
            None => Pipeline::new(&self.client, self.options.pipeline_depth),
        };
        if begin {
            pipeline
                .begin(move |e| transaction_error("BEGIN", commit_lsn, e))
                .await?;
        }
        // The origin is tagged with the COMMIT, in one message (see the module docs): in the
        // pipeline behind the changes, or by `commit` later.
        self.commit_time = tx.commit_time;
        let tag = commit.then(|| commit_sql(commit_lsn, tx.commit_time));
        let remote = Remote {
            commit_lsn,
            commit_time: tx.commit_time,
            origin: tx.origin.as_ref().map(|o| o.name.as_str()),
        };
        let conflicts = self.conflicts.as_mut().map(|detector| {
            detector.begin();
            (detector, remote)
        });
        let mut writer = ChangeWriter {
            client: &self.client,
            fences: &self.options.fences,
            commit_lsn,
            targets: &mut self.targets,
            statements: &mut self.statements,
            insert_batch_rows: self.options.insert_batch_rows,
            commit_in_flight: commit,
            pipeline,
            fold,
            conflicts,
            in_flight_bytes: 0,
        };
        writer
            .write_all(
                &mut tx.changes,
                |source| ApplyError::Spill {
                    commit_lsn: lsn.clone(),
                    source,
                },
                tag,
            )
            .await?;
        Ok((writer.pipeline.rows, writer.pipeline.committed))
    }

    /// Commits the transaction staged by [`begin_and_apply`](Self::begin_and_apply) and
    /// reports it. Reports a staged skip without touching green.
    pub async fn commit(&mut self) -> Result<ApplyOutcome, ApplyError> {
        let staged = self.open.take().ok_or(ApplyError::Misuse(
            "commit without a transaction staged by begin_and_apply",
        ))?;
        if staged.skipped {
            return Ok(ApplyOutcome {
                commit_lsn: staged.commit_lsn,
                skipped: true,
                rows: staged.rows,
                green_lsn: None,
            });
        }
        // The origin tag and the COMMIT go out in one message: nothing can roll the transaction
        // back between them but a failing COMMIT. Both values are integers formatted here.
        let sql = commit_sql(staged.commit_lsn, self.commit_time);
        if let Some(wire) = &mut self.wire {
            let commit_lsn = staged.commit_lsn;
            let mut pipeline = Pipeline::on_wire(wire, 1);
            pipeline
                .commit(sql, move |e| transaction_error("COMMIT", commit_lsn, e))
                .await?;
            // Sends the window and reads its answer (test builds may die in between, at
            // `commit-in-flight`).
            pipeline.drain().await?;
            let green_lsn = pipeline.committed.ok_or(ApplyError::Misuse(
                "the pipelined COMMIT reported no position",
            ))?;
            drop(pipeline);
            self.progress = self.progress.max(staged.commit_lsn);
            return Ok(self.committed(staged, green_lsn));
        }
        let mut answer = std::pin::pin!(self.client.simple_query(&sql));
        // The first poll sends the message; test builds may die here, with the COMMIT on its way
        // and its answer unread (as in the pipelined path).
        let first =
            std::future::poll_fn(|cx| std::task::Poll::Ready(answer.as_mut().poll(cx))).await;
        crate::failpoint::hit("commit-in-flight");
        let messages = match first {
            std::task::Poll::Ready(answered) => answered,
            std::task::Poll::Pending => answer.await,
        }
        .map_err(|e| transaction_error("COMMIT", staged.commit_lsn, SqlError::from(e)))?;
        self.progress = self.progress.max(staged.commit_lsn);
        if let Some(detector) = &mut self.conflicts {
            detector.committed();
        }
        // The last row: the first is the tag's.
        let text = messages
            .iter()
            .rev()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                _ => None,
            })
            .unwrap_or_default();
        let green_lsn: Lsn = text
            .parse()
            .map_err(|_| ApplyError::BadLsn { value: text })?;
        Ok(self.committed(staged, green_lsn))
    }

    /// The outcome of `staged`, committed on green before `green_lsn`.
    fn committed(&self, staged: Staged, green_lsn: Lsn) -> ApplyOutcome {
        debug!(
            commit_lsn = %staged.commit_lsn,
            green_lsn = %green_lsn,
            inserted = staged.rows.inserted,
            updated = staged.rows.updated,
            deleted = staged.rows.deleted,
            truncated = staged.rows.truncated,
            "transaction applied"
        );
        ApplyOutcome {
            commit_lsn: staged.commit_lsn,
            skipped: false,
            rows: staged.rows,
            green_lsn: Some(green_lsn),
        }
    }

    /// Rolls back the staged transaction, if any: green keeps nothing of it and the origin's
    /// progress does not move.
    pub async fn rollback(&mut self) -> Result<(), ApplyError> {
        if let Some(detector) = &mut self.conflicts {
            detector.begin();
        }
        match (self.open.take(), &mut self.wire) {
            (Some(staged), Some(wire)) if !staged.skipped => wire
                .rollback()
                .await
                .map_err(|e| transaction_error("ROLLBACK", staged.commit_lsn, e)),
            (Some(staged), None) if !staged.skipped => {
                self.client.batch_execute("ROLLBACK").await.map_err(|e| {
                    transaction_error("ROLLBACK", staged.commit_lsn, SqlError::from(e))
                })
            }
            _ => Ok(()),
        }
    }

    /// Whether a transaction is open on green (staged, or streamed and not yet ended).
    pub fn in_transaction(&self) -> bool {
        self.open.is_some()
    }

    /// Forgets what green's catalog said about the tables (after DDL on green).
    pub fn forget_tables(&mut self) {
        self.targets.clear();
        if let Some(detector) = &mut self.conflicts {
            detector.forget_tables();
        }
    }

    /// Closes the connection and waits for its task to end.
    pub async fn close(self) {
        let Applier {
            client,
            connection,
            wire,
            ..
        } = self;
        if let Some(wire) = wire {
            wire.close().await;
        }
        drop(client);
        if let Err(e) = connection.await {
            warn!(error = %e, "applier connection task failed");
        }
    }
}

/// The most UPDATEs and DELETEs a transaction may carry for [`Applier::apply`] to send its
/// `COMMIT` in the same round trip (each of them then in the checked form, which costs green
/// about 40 µs more than the plain statement; a round trip on loopback costs 50–200 µs). A
/// live TPC-B transaction (three UPDATEs) goes in one trip; a catch-up group in two.
pub const ONE_TRIP_MAX_LOCATING: usize = 4;

/// Whether `tx` is small enough for one round trip (see [`ONE_TRIP_MAX_LOCATING`]). A spilled
/// transaction never is.
fn one_trip(tx: &Transaction) -> bool {
    tx.changes.in_memory().is_some_and(|changes| {
        changes
            .iter()
            .filter(|c| matches!(c, Change::Update { .. } | Change::Delete { .. }))
            .take(ONE_TRIP_MAX_LOCATING + 1)
            .count()
            <= ONE_TRIP_MAX_LOCATING
    })
}

/// Makes a spilled `tx` readable again from its first change, for a second attempt inside
/// the same call (a folded attempt that failed, applied again in blue's order).
fn rewind(tx: &mut Transaction) -> Result<(), ApplyError> {
    match &mut tx.changes {
        Changes::InMemory(_) => Ok(()),
        Changes::Spilled(spilled) => spilled.rewind().map_err(|source| ApplyError::Spill {
            commit_lsn: tx.commit_lsn.to_string(),
            source,
        }),
    }
}

/// Tags the open transaction with its source commit LSN and time, commits, and reads where
/// green's WAL stands — one message. It also gives the transaction an xid: one with nothing to
/// write (it only carried a logical message, such as the cutover's fence marker, or a backfill
/// fence skipped its changes) then still writes a commit record, which is what moves the
/// origin's progress. The LSN is `'0/0' + n`, the time 2000-01-01 plus whole
/// seconds and microseconds: integers only, exact.
///
/// `SET CONSTRAINTS ALL IMMEDIATE` comes first: a deferred check (a deferred constraint trigger
/// green enabled for replicated changes, `ENABLE ALWAYS` or `REPLICA`) then fails *before* the
/// tag. At the `COMMIT` it would fail after it, and from PostgreSQL 16 the abort record
/// of a tagged transaction moves the origin's progress: a restart would skip a transaction green
/// never committed.
fn commit_sql(commit_lsn: Lsn, commit_time: PgTimestamp) -> String {
    let secs = commit_time.0.div_euclid(1_000_000);
    let micros = commit_time.0.rem_euclid(1_000_000);
    format!(
        "SET CONSTRAINTS ALL IMMEDIATE; \
         SELECT pg_catalog.pg_replication_origin_xact_setup(\
           '0/0'::pg_catalog.pg_lsn OPERATOR(pg_catalog.+) {}::pg_catalog.numeric, \
           TIMESTAMPTZ '2000-01-01 00:00:00+00' OPERATOR(pg_catalog.+) \
             INTERVAL '{secs} seconds {micros} microseconds'), \
           pg_catalog.pg_current_xact_id(); \
         {COMMIT}",
        commit_lsn.0
    )
}

fn transaction_error(step: &'static str, commit_lsn: Lsn, source: SqlError) -> ApplyError {
    ApplyError::Transaction {
        step,
        commit_lsn: commit_lsn.to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn the_origin_tag_goes_with_the_commit_as_integers() {
        let sql = commit_sql(Lsn(0x1_0000_00FF), PgTimestamp(-1));
        assert!(sql.contains("'0/0'::pg_catalog.pg_lsn OPERATOR(pg_catalog.+) 4294967551::"));
        assert!(
            sql.contains("INTERVAL '-1 seconds 999999 microseconds'"),
            "{sql}"
        );
        assert!(sql.ends_with(COMMIT), "{sql}");
        assert!(
            sql.starts_with("SET CONSTRAINTS ALL IMMEDIATE; SELECT"),
            "deferred checks run before the tag: {sql}"
        );
        let sql = commit_sql(Lsn(0), PgTimestamp(820_000_000_123_456));
        assert!(
            sql.contains("INTERVAL '820000000 seconds 123456 microseconds'"),
            "{sql}"
        );
    }

    /// Every command but `sync` (single-threaded) runs on tokio's multi-threaded runtime, and
    /// tasks are spawned: the appliers' futures must be `Send`.
    #[allow(dead_code)]
    async fn futures_are_send(applier: &mut Applier, tx: &mut Transaction) {
        let apply = applier.apply(tx);
        assert_send(&apply);
        drop(apply);
        let staged = applier.begin_and_apply(tx);
        assert_send(&staged);
        drop(staged);
        assert_send(&applier.commit());
        assert_send(&applier.rollback());
        assert_send(&Applier::connect(
            &ConnectConfig::from_conninfo_with_env("host=x", |_| None).expect("conninfo"),
            ApplierOptions::new("o"),
        ));
    }
}
