//! Streamed apply: a large transaction that blue streams while it is still in progress
//! (`pgoutput` protocol 2+, `streaming = on`) is applied on green **as its blocks arrive**, on
//! a connection of its own, and committed at its turn in blue's commit order — so green's lag
//! after a big commit is the commit itself, not the transaction's whole apply time. This is
//! what native apply does with `streaming = parallel`
//! (`applyparallelworker.c`); the spill the assembler writes as the transaction arrives stays the
//! fallback, as native `streaming = on` applies from its file at the commit.
//!
//! ```text
//!  reader ──Stream Start (first block)──► a free streamed applier?  no → spill path only
//!    │                                          │ yes: the assembler taps the xid
//!    │  each change: buffered/spilled as always ─┼─► copy ──► [streamed applier n] BEGIN (first change)
//!    │  Stream Abort(x, s≠x) ────────────────────┼─► ROLLBACK TO SAVEPOINT of s (taken at s's first change)
//!    │  Stream Abort(x, x) ──────────────────────┼─► ROLLBACK; the applier is free again
//!    │  Stream Commit(x): scheduled as always ───►│   job (seq, after, its spill) ─► pool applier:
//!    │                                          └─► Commit(seq) ──► waits for its turn (seq − 1
//!    │                                               committed), tags the origin, COMMIT
//!    └─ the pool applier that took the job waits for the outcome: committed → it records the
//!       commit (durability, order) as for its own; gave up → it applies the spill as today.
//! ```
//!
//! **Connections and origins.** `--stream-apply-max` N appliers (default 2) of their own, beside
//! the `--workers` pool, each with its own replication origin, numbered after the pool's:
//! `blueshift_<slot>_<workers + n>` — so `status`, `cleanup`, `verify` and the cutover's drain
//! see them as they see every applier's. A streamed transaction moves its origin only at its
//! COMMIT (the tag goes in the COMMIT's message, as for every transaction); a rollback never
//! moves it. On start the resume position is the maximum over **every** origin of the slot on
//! green (not only those of this run's settings), so fewer workers or streamed appliers after a
//! restart never apply a transaction twice.
//!
//! **When a transaction is applied streamed.** `--stream-apply on` (the default), protocol 2 or
//! later, a free streamed applier at its first block, no backfill fence in force (fences compare
//! a change's commit position, unknown until the commit) and one-way sync (two-way conflict
//! detection needs it too). Others, and every transaction whose streamed apply gives up, are
//! applied from the spill (or memory) at their turn exactly as before.
//!
//! **Giving up** (rollback on green; the transaction is then applied from its spill at its turn,
//! so nothing is lost and nothing is applied twice — the streamed attempt never committed):
//! - a statement fails (a row missing, a value green refuses, the connection);
//! - a relation description it uses is new and green cannot take it as it is (the reader's
//!   check, done at once; the spill path then holds the line as today);
//! - the reader cannot hand it a change within [`SEND_TIMEOUT`] (its queue, at most
//!   [`QUEUE_BYTES`] of changes, stays full): blue sends faster than it applies, and the reader
//!   must not wait on it;
//! - **the deadlock rule**: the streamed transaction holds row locks while blue's earlier
//!   transactions are still being applied by the pool, and one of them may need a row it
//!   locked — a wait PostgreSQL cannot see as a deadlock, since its other edge is our commit
//!   order. So while it holds a transaction open, a streamed applier watches the commit order:
//!   when a transaction scheduled before it is waiting to commit, no commit happened for
//!   `turn_timeout` (the pool's deadlock breaker's timeout) **and** a session on green waits
//!   for a lock the streamed one holds (`pg_blocking_pids`), it rolls back and gives up; a
//!   stall nobody waits on it for (a big transaction ahead still applying) is waited out. Its
//!   own statements run with `lock_timeout = turn_timeout`, so it never waits on a lock
//!   unboundedly either (a pool transaction waiting for its turn may hold what it needs). The
//!   same rule holds while it waits for its commit turn.
//! - blueshift restarts: green rolls the open transaction back with the connection; blue sends
//!   the transaction again from the slot's position.
//!
//! **Conflicts with later transactions**: a streamed transaction is numbered and scheduled at its
//! Stream Commit like any other (a spilled one as a barrier), so every later transaction that
//! shares a key waits for its commit (writeset rules); transactions scheduled before its commit
//! are all earlier in blue's commit order.
//!
//! **Subtransactions**: a `SAVEPOINT` at each subtransaction's first change (in arrival order);
//! Stream Abort of subtransaction s rolls back to s's savepoint and forgets the savepoints taken
//! after it (they are gone on green). Everything after s's first change up to its abort belongs
//! to s or its children — blue aborts those with it — exactly the truncation native apply does
//! to its stream file (`worker.c`, `subxact_info_*`). An abort of a subtransaction that had no
//! change applied (or whose savepoint an ancestor's rollback removed) does nothing.
//!
//! **Memory**: a streamed applier's queue holds at most [`QUEUE_BYTES`] of changes (their
//! copies share the assembler's bytes, budgeted by `--max-txn-memory`, while those are in
//! memory; a spilled transaction's copies are only these), so N streamed appliers add at most
//! N × [`QUEUE_BYTES`] to the budget.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blueshift_applier::{Applier, ApplyError, ApplyOutcome, Change};
use blueshift_decoder::pgoutput::PgTimestamp;
use blueshift_decoder::{Lsn, Xid};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use super::hold::Hold;
use super::order::CommitOrder;
use super::SyncError;
use crate::assembler::{Tapped, TxAssembler};

/// At most this many bytes of changes wait in one streamed applier's queue.
pub(crate) const QUEUE_BYTES: usize = 8 * 1024 * 1024;

/// The reader gives a streamed apply up when its queue has no room for this long.
pub(crate) const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// At most this many changes are applied in one pipelined batch.
const BATCH_CHANGES: usize = 4096;

/// Events in one streamed applier's queue at most (besides the bytes bound).
const QUEUE_EVENTS: usize = 16 * 1024;

/// The streamed appliers' default number.
pub(crate) const DEFAULT_MAX: usize = 2;

/// What the reader sends a streamed applier.
#[derive(Debug)]
enum Event {
    /// A new streamed transaction: generation `generation` of this applier.
    Begin { generation: u64, xid: Xid },
    /// A change of subtransaction `subxid` (the top xid for the top level).
    Change {
        subxid: Xid,
        change: Change,
        _bytes: OwnedSemaphorePermit,
    },
    /// Blue aborted subtransaction `subxid`, or the whole transaction (`None`).
    Abort { subxid: Option<Xid> },
    /// Blue committed it; it is transaction `seq` in the commit order.
    Commit {
        seq: u64,
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_time: PgTimestamp,
        reply: oneshot::Sender<Finished>,
    },
}

/// How a streamed transaction ended on green.
#[derive(Debug)]
pub(crate) enum Finished {
    /// Committed at its turn.
    Committed(ApplyOutcome),
    /// Rolled back, nothing of it on green: apply it from its spill (or memory).
    GaveUp,
    /// The COMMIT was sent and failed or was not answered: whether it landed is what green's
    /// origins say, so the attempt ends and resumes from them.
    Failed(ApplyError),
}

/// What the pool applier that takes a streamed transaction's job waits on.
#[derive(Debug)]
pub(crate) struct Ticket {
    reply: oneshot::Receiver<Finished>,
}

impl Ticket {
    /// The streamed apply's outcome: `Some` when committed on green, `None` when the job must
    /// be applied as any other. An error ends the attempt.
    pub(crate) async fn wait(self, seq: u64) -> Result<Option<ApplyOutcome>, SyncError> {
        match self.reply.await {
            Ok(Finished::Committed(outcome)) => Ok(Some(outcome)),
            Ok(Finished::GaveUp) => Ok(None),
            Ok(Finished::Failed(e)) => Err(SyncError::apply(seq, e)),
            // The streamed applier ended without answering (its task failed, which ends the
            // attempt too): whether it committed is for green's origins to say on restart.
            Err(_) => Err(SyncError::AppliersGone),
        }
    }
}

/// One streamed applier, as the reader sees it.
#[derive(Debug)]
struct Handle {
    events: mpsc::Sender<Event>,
    bytes: Arc<Semaphore>,
    /// The generation the reader gave up (the applier rolls it back as soon as it sees it).
    cancelled: Arc<AtomicU64>,
    /// The generation of its current transaction; 0 before the first.
    generation: u64,
    /// The transaction it applies now.
    xid: Option<Xid>,
}

/// The reader's side: which streamed transaction goes to which streamed applier.
#[derive(Debug, Default)]
pub(crate) struct StreamApply {
    handles: Vec<Handle>,
    /// The xids applied streamed now, and their applier.
    active: HashMap<Xid, usize>,
    /// The highest number the scheduler gave out, for the deadlock rule.
    scheduled: Arc<AtomicU64>,
    /// Reused buffer of tapped events.
    taps: Vec<Tapped>,
    /// The commit position of the last transaction scheduled (or the resume position): a
    /// transaction streamed now commits after it.
    last_commit: Lsn,
    /// Transactions committing before this are covered by a backfill fence.
    fenced_until: Lsn,
}

/// What a streamed applier shares with the rest of the attempt.
#[derive(Debug, Clone)]
pub(crate) struct Context {
    pub(crate) order: CommitOrder,
    pub(crate) hold: Arc<Hold>,
    pub(crate) turn_timeout: Duration,
}

impl StreamApply {
    /// No streamed applier: every transaction goes the spill path.
    pub(crate) fn off() -> StreamApply {
        StreamApply::default()
    }

    /// Streamed apply through `appliers` (their tasks are spawned into `tasks`).
    pub(crate) fn start(
        appliers: Vec<Applier>,
        context: &Context,
        (resume_after, fenced_until): (Lsn, Lsn),
        tasks: &mut tokio::task::JoinSet<Result<(), SyncError>>,
    ) -> StreamApply {
        let mut stream = StreamApply {
            last_commit: resume_after,
            fenced_until,
            ..StreamApply::default()
        };
        for (n, applier) in appliers.into_iter().enumerate() {
            let (events, queue) = mpsc::channel(QUEUE_EVENTS);
            let bytes = Arc::new(Semaphore::new(QUEUE_BYTES));
            let cancelled = Arc::new(AtomicU64::new(0));
            tasks.spawn(run(
                n,
                applier,
                queue,
                Arc::clone(&cancelled),
                Arc::clone(&stream.scheduled),
                context.clone(),
            ));
            stream.handles.push(Handle {
                events,
                bytes,
                cancelled,
                generation: 0,
                xid: None,
            });
        }
        stream
    }

    /// Whether `xid` is being applied streamed.
    pub(crate) fn is_applying(&self, xid: Xid) -> bool {
        self.active.contains_key(&xid)
    }

    /// The scheduler gave out number `seq` to the transaction committed at `commit_lsn`.
    pub(crate) fn scheduled(&mut self, seq: u64, commit_lsn: Lsn) {
        self.scheduled.fetch_max(seq, Ordering::Release);
        self.last_commit = self.last_commit.max(commit_lsn);
    }

    /// Stream Start of `xid`'s first block: hands it to a free streamed applier, if any, and
    /// taps it in `assembler`.
    pub(crate) async fn first_block(
        &mut self,
        xid: Xid,
        assembler: &mut TxAssembler,
    ) -> Result<(), SyncError> {
        if self.handles.is_empty() {
            return Ok(());
        }
        // Blue sends commits in commit order: this one commits after the last one scheduled.
        // Fences compare a change's commit position, unknown until the commit: a transaction
        // that could still be under one goes the spill path.
        if self.last_commit < self.fenced_until {
            tracing::debug!(xid = %xid, "a backfill fence may cover the transaction: it goes the spill path");
            return Ok(());
        }
        let Some(n) = self.handles.iter().position(|h| h.xid.is_none()) else {
            tracing::debug!(xid = %xid, "no free streamed applier: the transaction goes the spill path");
            return Ok(());
        };
        let handle = &mut self.handles[n];
        handle.generation += 1;
        handle.xid = Some(xid);
        let generation = handle.generation;
        send(handle, Event::Begin { generation, xid }).await?;
        self.active.insert(xid, n);
        assembler.tap(xid);
        tracing::debug!(xid = %xid, applier = n, "streamed transaction applied as it arrives");
        Ok(())
    }

    /// Whether any transaction is applied streamed now.
    pub(crate) fn is_active(&self) -> bool {
        !self.active.is_empty()
    }

    /// What the tapped transactions did since the last call, to hand over one by one
    /// ([`forward`](Self::forward)); give the vector back with [`put_taps`](Self::put_taps).
    pub(crate) fn take_taps(&mut self, assembler: &mut TxAssembler) -> Vec<Tapped> {
        let mut taps = std::mem::take(&mut self.taps);
        taps.extend(assembler.drain_tapped());
        taps
    }

    /// Gives back the (drained) vector of [`take_taps`](Self::take_taps), for reuse.
    pub(crate) fn put_taps(&mut self, taps: Vec<Tapped>) {
        self.taps = taps;
    }

    /// Hands one tapped event to its applier. `admitted` says whether green takes the
    /// relation description a change uses (the reader's check, done at once): false gives that
    /// transaction's streamed apply up.
    pub(crate) async fn forward(
        &mut self,
        tap: Tapped,
        admitted: bool,
        assembler: &mut TxAssembler,
    ) -> Result<(), SyncError> {
        match tap {
            Tapped::Change {
                xid,
                subxid,
                change,
                size,
            } => {
                let Some(&n) = self.active.get(&xid) else {
                    return Ok(());
                };
                if !admitted {
                    tracing::info!(xid = %xid, "a table's new definition must be checked at the commit: the streamed transaction is applied from its spill");
                    self.give_up(xid, assembler);
                    return Ok(());
                }
                let handle = &self.handles[n];
                if handle.cancelled.load(Ordering::Acquire) == handle.generation {
                    // The applier gave up on its own: stop copying changes to it.
                    self.give_up(xid, assembler);
                    return Ok(());
                }
                let permits = u32::try_from(size.clamp(1, QUEUE_BYTES)).unwrap_or(u32::MAX);
                let acquired = tokio::time::timeout(
                    SEND_TIMEOUT,
                    Arc::clone(&handle.bytes).acquire_many_owned(permits),
                )
                .await;
                let Ok(Ok(bytes)) = acquired else {
                    tracing::info!(xid = %xid, waited = ?SEND_TIMEOUT, "the streamed applier does not keep up: the transaction is applied from its spill");
                    self.give_up(xid, assembler);
                    return Ok(());
                };
                let event = Event::Change {
                    subxid,
                    change,
                    _bytes: bytes,
                };
                send(&self.handles[n], event).await
            }
            Tapped::Abort { xid, subxid } => {
                let Some(&n) = self.active.get(&xid) else {
                    return Ok(());
                };
                let whole = subxid == xid;
                if whole {
                    self.active.remove(&xid);
                    self.handles[n].xid = None;
                }
                let subxid = (!whole).then_some(subxid);
                send(&self.handles[n], Event::Abort { subxid }).await
            }
        }
    }

    /// Stops applying `xid` streamed: its applier rolls back; its spill applies it.
    fn give_up(&mut self, xid: Xid, assembler: &mut TxAssembler) {
        if let Some(n) = self.active.get(&xid) {
            let handle = &self.handles[*n];
            handle.cancelled.store(handle.generation, Ordering::Release);
        }
        // Still active: its Commit or Abort frees the applier, in the queue's order.
        assembler.untap(xid);
    }

    /// `xid` completed without anything to apply on green (dropped for its origin, already on
    /// green, empty): its applier rolls back and is free.
    pub(crate) async fn abort(&mut self, xid: Xid) -> Result<(), SyncError> {
        let Some(n) = self.active.remove(&xid) else {
            return Ok(());
        };
        self.handles[n].xid = None;
        send(&self.handles[n], Event::Abort { subxid: None }).await
    }

    /// `xid` committed on blue and is transaction `seq`: its applier commits it at its turn;
    /// the ticket says how that went. `None` when it is not applied streamed.
    pub(crate) async fn commit(
        &mut self,
        xid: Xid,
        seq: u64,
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_time: PgTimestamp,
    ) -> Result<Option<Ticket>, SyncError> {
        let Some(n) = self.active.remove(&xid) else {
            return Ok(None);
        };
        self.handles[n].xid = None;
        let (reply, ticket) = oneshot::channel();
        let event = Event::Commit {
            seq,
            commit_lsn,
            end_lsn,
            commit_time,
            reply,
        };
        send(&self.handles[n], event).await?;
        Ok(Some(Ticket { reply: ticket }))
    }
}

async fn send(handle: &Handle, event: Event) -> Result<(), SyncError> {
    handle
        .events
        .send(event)
        .await
        .map_err(|_| SyncError::AppliersGone)
}

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
async fn run(
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
