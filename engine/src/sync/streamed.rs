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
use std::time::Duration;

use blueshift_applier::{Applier, ApplyError, ApplyOutcome, Change};
use blueshift_decoder::pgoutput::PgTimestamp;
use blueshift_decoder::{Lsn, Xid};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use super::hold::Hold;
use super::order::CommitOrder;
use super::SyncError;
use task::run;

mod task;
use crate::assembler::{Tapped, TxAssembler};

/// At most this many bytes of changes wait in one streamed applier's queue.
pub(crate) const QUEUE_BYTES: usize = 4 * 1024 * 1024;

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

/// The streamed appliers of an attempt: `config.stream_apply_max` of them when streamed apply
/// is on, the protocol is 2 or later and sync is one-way (none otherwise), each with its origin
/// numbered after the pool's (`blueshift_<slot>_<workers + n>`).
pub(crate) async fn connect(
    config: &super::SyncConfig,
    direction: &super::direction::Direction,
    version: blueshift_decoder::pgoutput::ProtocolVersion,
) -> Result<Vec<Applier>, SyncError> {
    use blueshift_decoder::pgoutput::ProtocolVersion;
    let on = config.stream_apply
        && version >= ProtocolVersion::V2
        && !config.bidirectional
        && *direction == super::direction::Direction::Forward;
    let count = if on { config.stream_apply_max } else { 0 };
    let mut appliers = Vec::with_capacity(count);
    for n in 0..count {
        let mut options = blueshift_applier::ApplierOptions::new(
            direction.origin_name(&config.slot, config.workers + n),
        );
        // Durability is confirmed separately (sync::durability), as for the pool.
        options.synchronous_commit = blueshift_applier::SynchronousCommit::Off;
        options.mapping = Arc::clone(&config.mapping);
        options.fold = false;
        options.application_name = format!("blueshift streamed apply {}", config.slot);
        let origin = options.origin_name.clone();
        let applier = Applier::connect(&config.target, options)
            .await
            .map_err(|source| SyncError::ApplierSetup { origin, source })?;
        appliers.push(applier);
    }
    Ok(appliers)
}

/// The maximum durable progress over **every** origin of `slot` on green
/// (`blueshift_<slot>_<n>`, whatever `n`): streamed appliers, and pool appliers of a run with
/// more workers, committed under origins this run's pool does not read.
pub(crate) async fn durable(green: &tokio_postgres::Client, slot: &str) -> Result<Lsn, SyncError> {
    let origins = crate::status::origin::read(green, slot)
        .await
        .map_err(|source| {
            let name = format!("{}{slot}_<n>", super::ORIGIN_PREFIX);
            SyncError::ApplierSetup {
                origin: name.clone(),
                source: ApplyError::Origin {
                    action: "read the progress of",
                    name,
                    source,
                },
            }
        })?;
    Ok(crate::status::durable_position(&origins).unwrap_or(Lsn::INVALID))
}
