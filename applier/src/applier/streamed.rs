//! A streamed source transaction applied while blue sends it: opened before its commit
//! position is known, its blocks applied as they arrive, subtransactions as savepoints, and
//! committed with the origin tag once blue's commit is known (the engine's `sync::streamed`).

use std::time::Duration;

use blueshift_decoder::pgoutput::PgTimestamp;
use blueshift_decoder::Lsn;
use tracing::warn;

use super::{transaction_error, Applier};
use crate::client::SqlError;
use crate::error::ApplyError;
use crate::outcome::{ApplyOutcome, RowCounts, Staged};
use crate::transaction::{Change, Transaction};

impl Applier {
    /// Opens a transaction on green for a **streamed** source transaction, whose commit position
    /// is not known yet: its changes follow in blocks as blue sends them
    /// ([`apply_streamed`](Self::apply_streamed)), subtransactions are savepoints
    /// ([`savepoint`](Self::savepoint), [`rollback_to_savepoint`](Self::rollback_to_savepoint)),
    /// and it ends with [`commit_streamed`](Self::commit_streamed), which tags the origin with
    /// the commit position then known, or [`rollback`](Self::rollback). A statement that waits
    /// for a row lock longer than `lock_timeout` fails (SQLSTATE `55P03`): the engine then gives
    /// the streamed apply up, so it never waits for a lock unboundedly while it also holds locks
    /// an earlier transaction may need. Refused with backfill fences (they compare each change's
    /// commit position) or conflict detection (two-way mode), and while a transaction is open.
    pub async fn begin_streamed(&mut self, lock_timeout: Duration) -> Result<(), ApplyError> {
        if self.open.is_some() {
            return Err(ApplyError::Misuse(
                "begin_streamed while a transaction is open; commit or roll it back first",
            ));
        }
        if !self.options.fences.is_empty() || self.conflicts.is_some() {
            return Err(ApplyError::Misuse(
                "a streamed transaction cannot be applied with backfill fences or conflict detection",
            ));
        }
        let millis = lock_timeout.as_millis().clamp(1, i32::MAX as u128);
        // An integer formatted here: nothing from outside reaches the text.
        let sql = format!("BEGIN; SET LOCAL lock_timeout = {millis}");
        self.batch(&sql)
            .await
            .map_err(|e| transaction_error("BEGIN", Lsn::INVALID, e))?;
        self.open = Some(Staged {
            commit_lsn: Lsn::INVALID,
            skipped: false,
            rows: RowCounts::default(),
        });
        Ok(())
    }

    /// Applies `changes` (the next ones of the streamed transaction opened by
    /// [`begin_streamed`](Self::begin_streamed), in blue's order) and waits for every answer:
    /// each UPDATE and DELETE must find its row. On error the caller rolls back.
    pub async fn apply_streamed(&mut self, changes: Vec<Change>) -> Result<RowCounts, ApplyError> {
        let Some(open) = self.open else {
            return Err(ApplyError::Misuse(
                "apply_streamed without a transaction opened by begin_streamed",
            ));
        };
        let mut part = Transaction {
            xid: blueshift_decoder::Xid(0),
            commit_lsn: Lsn::INVALID,
            end_lsn: Lsn::INVALID,
            commit_time: PgTimestamp(0),
            origin: None,
            changes: crate::transaction::Changes::InMemory(changes),
        };
        let (rows, _) = self.write(&mut part, false, false, false).await?;
        let mut total = open.rows;
        total.inserted += rows.inserted;
        total.updated += rows.updated;
        total.deleted += rows.deleted;
        total.truncated += rows.truncated;
        self.open = Some(Staged {
            rows: total,
            ..open
        });
        Ok(rows)
    }

    /// Marks the start of subtransaction `subxid` in the open streamed transaction: `SAVEPOINT`
    /// named after it (an integer: nothing from outside reaches the text).
    pub async fn savepoint(&mut self, subxid: u32) -> Result<(), ApplyError> {
        self.streamed_statement("SAVEPOINT", format!("SAVEPOINT {}", savepoint_name(subxid)))
            .await
    }

    /// Undoes what the open streamed transaction did since [`savepoint`](Self::savepoint) of
    /// `subxid` (blue aborted that subtransaction): `ROLLBACK TO SAVEPOINT`.
    pub async fn rollback_to_savepoint(&mut self, subxid: u32) -> Result<(), ApplyError> {
        self.streamed_statement(
            "ROLLBACK TO SAVEPOINT",
            format!("ROLLBACK TO SAVEPOINT {}", savepoint_name(subxid)),
        )
        .await
    }

    async fn streamed_statement(
        &mut self,
        step: &'static str,
        sql: String,
    ) -> Result<(), ApplyError> {
        if self.open.is_none() {
            return Err(ApplyError::Misuse(
                "a savepoint without a transaction opened by begin_streamed",
            ));
        }
        self.batch(&sql)
            .await
            .map_err(|e| transaction_error(step, Lsn::INVALID, e))
    }

    /// Runs `sql` (blueshift's own statements, no value from outside) on the session the
    /// transactions are applied on: the wire session when there is one, else the client.
    pub(super) async fn batch(&mut self, sql: &str) -> Result<(), SqlError> {
        match &mut self.wire {
            Some(wire) => wire.batch(sql).await,
            None => self.client.batch_execute(sql).await.map_err(SqlError::from),
        }
    }

    /// Commits the streamed transaction opened by [`begin_streamed`](Self::begin_streamed) as
    /// blue's transaction committed at `commit_lsn`, `commit_time`: the origin tag and the
    /// `COMMIT` in one message, as for every transaction. Refused (rolled back) when green
    /// already holds `commit_lsn` under this origin.
    pub async fn commit_streamed(
        &mut self,
        commit_lsn: Lsn,
        commit_time: PgTimestamp,
    ) -> Result<ApplyOutcome, ApplyError> {
        let Some(open) = self.open else {
            return Err(ApplyError::Misuse(
                "commit_streamed without a transaction opened by begin_streamed",
            ));
        };
        if commit_lsn <= self.progress {
            let _ = self.rollback().await;
            return Err(ApplyError::Misuse(
                "commit_streamed of a transaction green already holds",
            ));
        }
        self.open = Some(Staged { commit_lsn, ..open });
        self.commit_time = commit_time;
        match self.commit().await {
            Ok(outcome) => Ok(outcome),
            Err(e) => {
                // A COMMIT that failed ended the transaction; a ROLLBACK then finds none.
                self.open = Some(Staged { commit_lsn, ..open });
                if let Err(rollback) = self.rollback().await {
                    warn!(commit_lsn = %commit_lsn, error = %rollback, "rollback after a failed commit failed too");
                }
                Err(e)
            }
        }
    }

    /// Whether another session on green waits for a lock this session holds
    /// (`pg_blocking_pids`): the engine's check, before it lets a streamed transaction go,
    /// that it stands in the way of an earlier one.
    pub async fn blocks_others(&mut self) -> Result<bool, ApplyError> {
        const SQL: &str = "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a \
             WHERE pg_catalog.pg_backend_pid() OPERATOR(pg_catalog.=) \
               ANY (pg_catalog.pg_blocking_pids(a.pid)))";
        // On the session that holds the locks: `pg_backend_pid()` is its own.
        match &mut self.wire {
            Some(wire) => {
                let rows = wire
                    .query(SQL, &[])
                    .await
                    .map_err(|e| transaction_error("pg_blocking_pids", Lsn::INVALID, e))?;
                Ok(rows.first().and_then(Option::as_deref) == Some("t"))
            }
            None => {
                let row = self.client.query_one(SQL, &[]).await.map_err(|e| {
                    transaction_error("pg_blocking_pids", Lsn::INVALID, SqlError::from(e))
                })?;
                Ok(row.get(0))
            }
        }
    }
}

/// The savepoint of subtransaction `subxid` of a streamed transaction, quoted.
fn savepoint_name(subxid: u32) -> String {
    format!("\"blueshift_sub_{subxid}\"")
}
