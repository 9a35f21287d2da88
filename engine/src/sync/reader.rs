//! The reader task: blue's replication stream → `pgoutput` decoder → transaction assembler →
//! scheduler → the appliers' job queue.
//!
//! It skips transactions green already holds (commit LSN at or before the appliers' durable
//! origin progress: that is what makes a restart exactly-once), and when nothing is in flight and
//! no transaction is open, lets a keepalive's position be acknowledged (through the
//! acknowledger, like every other position) so an idle blue releases WAL.

use blueshift_decoder::pgoutput::PgOutputDecoder;
use blueshift_decoder::stream::{ReplicationFrame, ReplicationStream};
use blueshift_decoder::Lsn;
use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};

use super::acknowledge::Acks;
use super::durability::Durability;
use super::order::CommitOrder;
use super::scheduler::Scheduler;
use super::worker::Job;
use super::writeset::KeyCatalog;
use super::SyncError;
use crate::assembler::{Assembled, TxAssembler};
use crate::metrics::{Metrics, Stage};

/// What the reader needs besides the stream.
pub(crate) struct Reader {
    pub(crate) decoder: PgOutputDecoder,
    pub(crate) assembler: TxAssembler,
    pub(crate) scheduler: Scheduler,
    pub(crate) keys: KeyCatalog,
    /// The tables green holds the rows of: reading stops at a change to any other.
    pub(crate) loaded: super::loaded::Loaded,
    /// A connection to green for reading unique indexes.
    pub(crate) green: tokio_postgres::Client,
    /// Transactions committing at or before this are on green already.
    pub(crate) resume_after: Lsn,
    /// Stop before the first transaction committed at or after this (a catch-up).
    pub(crate) stop_at: Option<Lsn>,
    pub(crate) order: CommitOrder,
    /// Commits not yet confirmed durable on green.
    pub(crate) durability: Arc<Durability>,
    pub(crate) jobs: mpsc::Sender<Job>,
    /// Where idle keepalive positions go to be recorded and acknowledged.
    pub(crate) acks: Arc<Acks>,
    pub(crate) metrics: Metrics,
    /// Spill totals already reported to the metrics (bytes, transactions).
    pub(crate) spilled: (u64, u64),
    /// Bytes of assembled transactions that may wait for (or be in) the appliers at once: the
    /// reader stops reading while they are used up, so memory stays bounded by configuration.
    pub(crate) queued_memory: Arc<Semaphore>,
    /// The budget's size (a transaction costing more waits for the whole budget).
    pub(crate) queued_memory_max: usize,
}

/// The commit position of an assembled transaction.
fn assembled_commit(assembled: &Assembled) -> Lsn {
    match assembled {
        Assembled::Transaction(tx) => tx.commit_lsn,
        Assembled::Skipped { commit_lsn, .. } => *commit_lsn,
    }
}

impl Reader {
    /// Reads until the stream ends or `shutdown` completes; returns how many transactions it
    /// scheduled.
    pub(crate) async fn run(
        mut self,
        stream: &mut ReplicationStream,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<u64, SyncError> {
        tokio::pin!(shutdown);
        let mut scheduled = 0u64;
        loop {
            let frame = tokio::select! {
                biased;
                () = &mut shutdown => return Ok(scheduled),
                frame = stream.next() => frame.map_err(SyncError::Source)?,
            };
            let Some(frame) = frame else {
                return Err(SyncError::SourceEnded);
            };
            match frame {
                ReplicationFrame::XLogData {
                    wal_start, data, ..
                } => {
                    let message =
                        self.decoder
                            .decode(data)
                            .map_err(|source| SyncError::Decode {
                                lsn: wal_start,
                                source,
                            })?;
                    self.loaded.check(&message)?;
                    let Some(assembled) =
                        self.assembler
                            .push(message)
                            .map_err(|source| SyncError::Assemble {
                                lsn: wal_start,
                                source,
                            })?
                    else {
                        continue;
                    };
                    if self
                        .stop_at
                        .is_some_and(|stop| assembled_commit(&assembled) >= stop)
                    {
                        return Ok(scheduled);
                    }
                    let received = std::time::Instant::now();
                    if let Assembled::Transaction(tx) = &assembled {
                        if let Some(behind) = tx
                            .commit_time
                            .to_system_time()
                            .and_then(|at| at.elapsed().ok())
                        {
                            self.metrics.stage(Stage::Source, behind);
                        }
                    }
                    self.dispatch(assembled, received).await?;
                    scheduled += 1;
                }
                ReplicationFrame::Keepalive { wal_end, .. } => {
                    let idle = self.order.committed() + 1 == self.scheduler.next_seq()
                        && self.durability.pending() == 0
                        && !self.assembler.in_transaction()
                        && !self.decoder.in_stream();
                    if idle {
                        if self.stop_at.is_some_and(|stop| wal_end >= stop) {
                            return Ok(scheduled);
                        }
                        self.acks.durable(wal_end);
                        self.metrics.set_lag_seconds(0.0);
                    }
                }
            }
            let stats = self.assembler.stats();
            if stats.spilled_bytes_total > self.spilled.0 {
                self.metrics
                    .spilled(stats.spilled_bytes_total - self.spilled.0);
                for _ in self.spilled.1..stats.spilled_transactions_total {
                    self.metrics.transaction_spilled();
                }
                self.spilled = (stats.spilled_bytes_total, stats.spilled_transactions_total);
            }
            self.metrics.set_queue_depth(
                "apply",
                u64::try_from(self.jobs.max_capacity() - self.jobs.capacity()).unwrap_or(0),
            );
        }
    }

    async fn dispatch(
        &mut self,
        assembled: Assembled,
        received: std::time::Instant,
    ) -> Result<(), SyncError> {
        let (tx, end_lsn, commit_lsn) = match assembled {
            Assembled::Transaction(tx) => {
                let (end, commit) = (tx.end_lsn, tx.commit_lsn);
                (Some(tx), end, commit)
            }
            Assembled::Skipped {
                end_lsn,
                commit_lsn,
                ..
            } => (None, end_lsn, commit_lsn),
        };
        if commit_lsn <= self.resume_after {
            // Applied before a restart: green's origin progress already covers it.
            tracing::debug!(commit_lsn = %commit_lsn, "already on green; skipped");
            return Ok(());
        }
        let committed = self.order.committed();
        let slot = match &tx {
            Some(tx) => {
                self.keys
                    .load_for(&self.green, tx)
                    .await
                    .map_err(SyncError::KeyCatalog)?;
                let ws = self.keys.writeset(tx);
                self.scheduler.schedule(&ws, committed)
            }
            None => self
                .scheduler
                .schedule(&super::writeset::Writeset::default(), committed),
        };
        let cost = tx
            .as_ref()
            .map_or(0, crate::assembler::memory_cost)
            .clamp(1, self.queued_memory_max.max(1));
        let permit = Arc::clone(&self.queued_memory)
            .acquire_many_owned(u32::try_from(cost).unwrap_or(u32::MAX))
            .await
            .map_err(|_| SyncError::AppliersGone)?;
        self.metrics.stage(Stage::Schedule, received.elapsed());
        let job = Job {
            queued: std::time::Instant::now(),
            seq: slot.seq,
            after: slot.after,
            tx,
            end_lsn,
            _memory: Some(permit),
        };
        self.jobs
            .send(job)
            .await
            .map_err(|_| SyncError::AppliersGone)
    }
}
