//! A streamed applier's task (see [`super`]): applies the transactions the reader hands it,
//! one at a time — BEGIN at the first change, SAVEPOINT at each subtransaction's first change,
//! ROLLBACK TO SAVEPOINT and ROLLBACK for Stream Aborts, the commit at its turn — and gives a
//! transaction up (rolls it back; the spill path applies it) by the rules in [`super`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blueshift_applier::{Applier, ApplyError, Change};
use blueshift_decoder::pgoutput::PgTimestamp;
use blueshift_decoder::{Lsn, Xid};
use tokio::sync::mpsc;

use super::{Context, Event, Finished, BATCH_CHANGES};
use crate::sync::order::CommitOrder;
use crate::sync::SyncError;

/// Where a streamed applier stands in its current transaction.
#[derive(Debug)]
enum State {
    /// Nothing open on green (no change applied yet, or none asked for).
    Idle,
    /// A transaction open on green; the savepoints live in it, oldest first.
    Open { savepoints: Vec<Xid> },
    /// Given up (rolled back): the rest of the transaction is dropped until its end.
    GaveUp,
}

/// One streamed applier task: applies the transactions the reader hands it, one at a time.
pub(super) async fn run(
    index: usize,
    mut applier: Applier,
    mut queue: mpsc::Receiver<Event>,
    cancelled: Arc<AtomicU64>,
    scheduled: Arc<AtomicU64>,
    context: Context,
) -> Result<(), SyncError> {
    let mut state = State::Idle;
    let mut generation = 0u64;
    let mut xid = Xid(0);
    let mut pending: Option<Event> = None;
    let mut stall = Stall::new(&context.order);
    let check =
        (context.turn_timeout / 4).clamp(Duration::from_millis(10), Duration::from_millis(250));
    loop {
        let event = match pending.take() {
            Some(event) => event,
            None => {
                let open = matches!(state, State::Open { .. });
                tokio::select! {
                    event = queue.recv() => match event {
                        Some(event) => event,
                        None => break,
                    },
                    () = tokio::time::sleep(check), if open => {
                        let cancel = cancelled.load(Ordering::Acquire) == generation;
                        if cancel || stall.blocking(&mut applier, &context, &scheduled).await {
                            tracing::info!(applier = index, xid = %xid, cancelled = cancel, "streamed apply gives up (an earlier transaction may wait for its locks); the transaction is applied from its spill at its turn");
                            give_up(&mut applier, &mut state, &cancelled, generation).await;
                        }
                        continue;
                    }
                }
            }
        };
        match event {
            Event::Begin {
                generation: g,
                xid: x,
            } => {
                // The previous one ended (Commit or Abort) before the reader began this one.
                generation = g;
                xid = x;
                state = State::Idle;
                stall = Stall::new(&context.order);
            }
            Event::Change { subxid, change, .. } => {
                let mut batch = vec![(subxid, change)];
                while batch.len() < BATCH_CHANGES {
                    match queue.try_recv() {
                        Ok(Event::Change { subxid, change, .. }) => batch.push((subxid, change)),
                        Ok(other) => {
                            pending = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                if matches!(state, State::GaveUp) {
                    continue;
                }
                if cancelled.load(Ordering::Acquire) == generation {
                    give_up(&mut applier, &mut state, &cancelled, generation).await;
                    continue;
                }
                if let Err(e) = apply_batch(&mut applier, &mut state, xid, batch, &context).await {
                    tracing::info!(applier = index, xid = %xid, error = %e, "streamed apply failed; the transaction is applied from its spill at its turn");
                    give_up(&mut applier, &mut state, &cancelled, generation).await;
                }
            }
            Event::Abort { subxid } => {
                let result = match (&mut state, subxid) {
                    (State::Open { .. }, None) => {
                        state = State::Idle;
                        applier.rollback().await
                    }
                    (State::Open { savepoints }, Some(subxid)) => {
                        match savepoints.iter().position(|s| *s == subxid) {
                            Some(at) => {
                                savepoints.truncate(at + 1);
                                applier.rollback_to_savepoint(subxid.0).await
                            }
                            None => Ok(()),
                        }
                    }
                    (_, None) => {
                        state = State::Idle;
                        Ok(())
                    }
                    (_, Some(_)) => Ok(()),
                };
                if let Err(e) = result {
                    tracing::info!(applier = index, xid = %xid, error = %e, "streamed apply could not roll back");
                    if applier.is_closed() {
                        return Err(SyncError::apply(0, e));
                    }
                    give_up(&mut applier, &mut state, &cancelled, generation).await;
                }
            }
            Event::Commit {
                seq,
                commit_lsn,
                end_lsn,
                commit_time,
                reply,
            } => {
                let finished = commit(
                    &mut applier,
                    &mut state,
                    seq,
                    (commit_lsn, end_lsn, commit_time),
                    &context,
                    &scheduled,
                )
                .await;
                let fatal = match &finished {
                    Finished::Failed(e) => Some(e.to_string()),
                    _ => None,
                };
                if matches!(finished, Finished::GaveUp) {
                    tracing::info!(applier = index, xid = %xid, seq, "streamed transaction applied from its spill instead");
                }
                state = State::Idle;
                let _ = reply.send(finished);
                if let Some(e) = fatal {
                    // The attempt ends through the pool applier waiting on the ticket.
                    tracing::debug!(applier = index, error = %e, "streamed commit failed");
                    applier.close().await;
                    return Ok(());
                }
            }
        }
    }
    if matches!(state, State::Open { .. }) {
        let _ = applier.rollback().await;
    }
    applier.close().await;
    Ok(())
}

/// Rolls back what is open and drops the rest of the transaction.
async fn give_up(applier: &mut Applier, state: &mut State, cancelled: &AtomicU64, generation: u64) {
    if matches!(state, State::Open { .. }) {
        if let Err(e) = applier.rollback().await {
            tracing::debug!(error = %e, "rollback of a streamed transaction failed");
        }
    }
    *state = State::GaveUp;
    cancelled.store(generation, Ordering::Release);
}

/// Applies `batch` (in blue's order) in the open transaction, opening it and taking each new
/// subtransaction's savepoint first.
async fn apply_batch(
    applier: &mut Applier,
    state: &mut State,
    xid: Xid,
    batch: Vec<(Xid, Change)>,
    context: &Context,
) -> Result<(), ApplyError> {
    if matches!(state, State::Idle) {
        applier.begin_streamed(context.turn_timeout).await?;
        *state = State::Open {
            savepoints: Vec::new(),
        };
    }
    let State::Open { savepoints } = state else {
        return Ok(());
    };
    let mut run: Vec<Change> = Vec::new();
    let mut current = xid;
    for (subxid, change) in batch {
        if subxid != current {
            if !run.is_empty() {
                applier.apply_streamed(std::mem::take(&mut run)).await?;
            }
            current = subxid;
        }
        if subxid != xid && !savepoints.contains(&subxid) {
            if !run.is_empty() {
                applier.apply_streamed(std::mem::take(&mut run)).await?;
            }
            applier.savepoint(subxid.0).await?;
            savepoints.push(subxid);
        }
        run.push(change);
    }
    if !run.is_empty() {
        applier.apply_streamed(run).await?;
    }
    Ok(())
}

/// Waits for `seq`'s turn (giving up by the deadlock rule), then commits.
async fn commit(
    applier: &mut Applier,
    state: &mut State,
    seq: u64,
    (commit_lsn, end_lsn, commit_time): (Lsn, Lsn, PgTimestamp),
    context: &Context,
    scheduled: &AtomicU64,
) -> Finished {
    if !matches!(state, State::Open { .. }) {
        // Nothing applied (given up, or no change reached green): the spill path applies it.
        return Finished::GaveUp;
    }
    let mut stall = Stall::new(&context.order);
    let check =
        (context.turn_timeout / 4).clamp(Duration::from_millis(10), Duration::from_millis(250));
    while !context.order.wait_for(seq - 1, Some(check)).await {
        if stall.blocking(applier, context, scheduled).await {
            tracing::info!(
                seq,
                "streamed transaction holds a lock an earlier one waits for: rolling back"
            );
            if let Err(e) = applier.rollback().await {
                tracing::debug!(error = %e, "rollback of a streamed transaction failed");
            }
            *state = State::Idle;
            return Finished::GaveUp;
        }
    }
    // Verify's hold: the first commit past its position waits for the release.
    context.hold.at_turn(end_lsn, end_lsn).await;
    tracing::debug!(seq, commit_lsn = %commit_lsn, "committing a streamed transaction at its turn");
    match applier.commit_streamed(commit_lsn, commit_time).await {
        Ok(outcome) => {
            blueshift_applier::failpoint::hit("after-green-commit");
            Finished::Committed(outcome)
        }
        Err(e) => Finished::Failed(e),
    }
}

/// The deadlock rule's clock: how long the commit order has not moved while a transaction
/// scheduled before the streamed one waits to commit.
#[derive(Debug)]
struct Stall {
    committed: u64,
    since: Instant,
}

impl Stall {
    fn new(order: &CommitOrder) -> Stall {
        Stall {
            committed: order.committed(),
            since: Instant::now(),
        }
    }

    /// True once nothing committed for `turn_timeout` while something scheduled is
    /// uncommitted.
    fn stalled(&mut self, context: &Context, scheduled: &AtomicU64) -> bool {
        let committed = context.order.committed();
        if committed != self.committed || scheduled.load(Ordering::Acquire) <= committed {
            self.committed = committed;
            self.since = Instant::now();
            return false;
        }
        self.since.elapsed() >= context.turn_timeout
    }

    /// True once [`stalled`](Self::stalled) and a session on green waits for a lock the
    /// streamed applier's holds (an error asking counts as yes: giving up is always safe).
    /// A stall nobody waits on it for starts the clock again.
    async fn blocking(
        &mut self,
        applier: &mut Applier,
        context: &Context,
        scheduled: &AtomicU64,
    ) -> bool {
        if !self.stalled(context, scheduled) {
            return false;
        }
        match applier.blocks_others().await {
            Ok(true) => true,
            Ok(false) => {
                self.since = Instant::now();
                false
            }
            Err(e) => {
                tracing::debug!(error = %e, "could not ask green who waits for the streamed transaction");
                true
            }
        }
    }
}
