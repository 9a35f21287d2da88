//! One applier task: takes the next scheduled transaction, waits for the transactions it
//! conflicts with, runs its changes on green, waits for its turn, commits, and reports the
//! position the slot may now be told is flushed.
//!
//! Deadlock breaking: a transaction whose changes ran but whose turn does not come within
//! `turn_timeout` may hold a row lock the head-of-line transaction waits for — a cycle
//! PostgreSQL cannot see, since one edge of it is our commit order. It then rolls back, waits
//! for its turn without holding anything, and runs again. A transaction read back from a spill
//! file is scheduled as a barrier, so its turn has come before it runs and it never re-runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use blueshift_applier::{Applier, Transaction};
use blueshift_decoder::stream::FeedbackHandle;
use blueshift_decoder::Lsn;
use tokio::sync::{mpsc, Mutex};

use super::order::CommitOrder;
use super::SyncError;
use crate::metrics::Metrics;

/// A transaction with its place in the order.
#[derive(Debug)]
pub(crate) struct Job {
    /// Its number in blue's commit order.
    pub(crate) seq: u64,
    /// Wait for this number to commit before running (0: none).
    pub(crate) after: u64,
    /// The transaction; `None` for one that is only passed through to keep the order (dropped
    /// by loop prevention): nothing to apply, but the slot may move past it.
    pub(crate) tx: Option<Transaction>,
    /// Where blue's commit of it ends: acknowledged once it is durable on green.
    pub(crate) end_lsn: Lsn,
}

/// The queue every applier takes its next job from (the first free one takes it).
pub(crate) type JobQueue = Arc<Mutex<mpsc::Receiver<Job>>>;

/// Runs one applier until the queue closes.
pub(crate) async fn run(
    index: usize,
    mut applier: Applier,
    jobs: JobQueue,
    order: CommitOrder,
    feedback: FeedbackHandle,
    metrics: Metrics,
    turn_timeout: Duration,
) -> Result<(), SyncError> {
    loop {
        let job = { jobs.lock().await.recv().await };
        let Some(mut job) = job else {
            tracing::debug!(applier = index, "no more transactions");
            return Ok(());
        };
        order.wait_for(job.after, None).await;
        let started = Instant::now();
        let commit_time = job
            .tx
            .as_ref()
            .and_then(|tx| tx.commit_time.to_system_time());
        let outcome = match job.tx.as_mut() {
            None => {
                order.wait_for(job.seq - 1, None).await;
                None
            }
            Some(tx) => {
                let mut attempts = 0u32;
                loop {
                    attempts += 1;
                    applier
                        .begin_and_apply(tx)
                        .await
                        .map_err(|e| SyncError::apply(job.seq, e))?;
                    if order.wait_for(job.seq - 1, Some(turn_timeout)).await {
                        break;
                    }
                    tracing::debug!(
                        applier = index,
                        seq = job.seq,
                        attempts,
                        "turn did not come in time; rolling back to release row locks"
                    );
                    applier
                        .rollback()
                        .await
                        .map_err(|e| SyncError::apply(job.seq, e))?;
                    order.wait_for(job.seq - 1, None).await;
                }
                Some(
                    applier
                        .commit()
                        .await
                        .map_err(|e| SyncError::apply(job.seq, e))?,
                )
            }
        };
        order.mark_committed(job.seq);
        feedback.set_flushed(job.end_lsn);
        feedback.set_applied(job.end_lsn);
        if let Some(outcome) = outcome {
            metrics.transaction_applied(&outcome.rows, started.elapsed());
        }
        // Replication delay: how long ago blue committed what green just committed.
        if let Some(at) = commit_time {
            let behind = at.elapsed().unwrap_or_default();
            metrics.set_lag_seconds(behind.as_secs_f64());
        }
    }
}
