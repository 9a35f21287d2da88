//! The reader task: blue's replication stream → `pgoutput` decoder → transaction assembler →
//! scheduler → the appliers' job queue.
//!
//! It skips transactions green already holds (commit LSN at or before the appliers' durable
//! origin progress: that is what makes a restart exactly-once), and when nothing is in flight and
//! no transaction is open, lets a keepalive's position be acknowledged (through the
//! acknowledger, like every other position) so an idle blue releases WAL.
//!
//! **Schema changes wait for green.** Before a transaction is scheduled, every relation
//! description it uses that has not been checked yet (each table's first in a session, and each
//! new one blue sends after an `ALTER TABLE`) is compared with green's table
//! ([`schema::relation`](crate::schema::relation)): a blue column green lacks and the mapping does
//! not exclude, a type green cannot take, a narrower type modifier, a lossy conversion. When green
//! cannot take it, the reader holds that transaction: nothing at or after it is scheduled, so
//! nothing after it commits (the transactions before it finish on the appliers), and the slot is
//! not told about it. It logs what it waits for and the fix, sets the `blueshift_blocked` gauge,
//! and checks green again — after 1 s, then every few seconds — until the operator has fixed
//! green (or declared an exclusion and restarted). Then it forgets what it knew of green's
//! table ([`KeyCatalog::forget`]; the appliers map each new description afresh from green's
//! catalog) and goes on: the same process, nothing lost, nothing reordered. A shutdown while it
//! waits stops cleanly; the held transaction is sent again after a restart.
//!
//! **Streamed transactions** may be applied while blue sends them ([`streamed`](super::streamed)):
//! at a transaction's first streamed block the reader hands it to a free streamed applier and
//! forwards each change the assembler taps (its relation checked against green at once), and
//! at its commit attaches the streamed apply's ticket to its job.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use blueshift_applier::{Mapping, Transaction};
use blueshift_decoder::pgoutput::{PgOutputDecoder, PgOutputMessage};
use blueshift_decoder::relation::RelationInfo;
use blueshift_decoder::stream::{ReplicationFrame, ReplicationStream};
use blueshift_decoder::Lsn;

use super::acknowledge::Acks;
use super::durability::Durability;
use super::order::CommitOrder;
use super::queue::JobSender;
use super::scheduler::Scheduler;
use super::worker::Job;
use super::writeset::KeyCatalog;
use super::SyncError;
use crate::assembler::{Assembled, Charge, Tapped, TxAssembler, SPILLED_CHARGE};
use crate::metrics::{Metrics, Stage};
use crate::schema::relation;

/// The first wait before checking a blocked table on green again; it doubles up to
/// [`BLOCKED_RECHECK_MAX`].
const BLOCKED_RECHECK_FIRST: Duration = Duration::from_secs(1);

/// The longest wait between two checks of a blocked table.
const BLOCKED_RECHECK_MAX: Duration = Duration::from_secs(5);

/// Relation descriptions remembered as checked, per table.
const CHECKED_PER_RELATION: usize = 4;

/// What the reader needs besides the stream.
pub(crate) struct Reader {
    pub(crate) decoder: PgOutputDecoder,
    pub(crate) assembler: TxAssembler,
    pub(crate) scheduler: Scheduler,
    pub(crate) keys: KeyCatalog,
    /// The tables green holds the rows of: reading stops at a change to any other.
    pub(crate) loaded: super::loaded::Loaded,
    /// The declared column mapping, for checking relation descriptions against green.
    pub(crate) mapping: Arc<Mapping>,
    /// Relation descriptions green was found to take, by relation OID (a few per table).
    pub(crate) checked: HashMap<u32, Vec<Arc<RelationInfo>>>,
    /// A connection to green for reading unique indexes and table definitions.
    pub(crate) green: tokio_postgres::Client,
    /// Transactions committing at or before this are on green already.
    pub(crate) resume_after: Lsn,
    /// Stop before the first transaction committed at or after this (a catch-up).
    pub(crate) stop_at: Option<Lsn>,
    pub(crate) order: CommitOrder,
    /// Commits not yet confirmed durable on green.
    pub(crate) durability: Arc<Durability>,
    pub(crate) jobs: JobSender,
    /// Where idle keepalive positions go to be recorded and acknowledged.
    pub(crate) acks: Arc<Acks>,
    pub(crate) metrics: Metrics,
    /// Verify's hold: told when the stream is past its position with nothing in flight.
    pub(crate) hold: Arc<super::hold::Hold>,
    /// Spill totals already reported to the metrics (bytes, transactions).
    pub(crate) spilled: (u64, u64),
    /// The transaction being read carries the cutover's fence marker
    /// ([`FENCE_PREFIX`](crate::cutover::fence::FENCE_PREFIX)): it is applied even with
    /// nothing to write, so green's origins record its commit — the position the cutover's
    /// drain waits for.
    pub(crate) fence_marker: bool,
    /// The spool read before the live stream, which starts at its end ([`super::spool`]).
    pub(crate) replay: Option<Replaying>,
    /// Streamed transactions applied as they arrive (see [`streamed`](super::streamed)).
    pub(crate) streams: super::streamed::StreamApply,
}

/// A spool being replayed, then kept until green's durable position passes its end.
pub(crate) struct Replaying {
    /// `None` once every frame was read.
    pub(crate) replay: Option<super::spool::Replay>,
    pub(crate) folder: std::path::PathBuf,
    pub(crate) end: Lsn,
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
            let frame = match self.replayed()? {
                Some(frame) => tokio::select! {
                    biased;
                    () = &mut shutdown => return Ok(scheduled),
                    () = std::future::ready(()) => Some(frame),
                },
                None => tokio::select! {
                    biased;
                    () = &mut shutdown => return Ok(scheduled),
                    frame = stream.next() => frame.map_err(SyncError::Source)?,
                },
            };
            let Some(frame) = frame else {
                return Err(SyncError::SourceEnded);
            };
            match frame {
                ReplicationFrame::XLogData {
                    wal_start, data, ..
                } => {
                    let mut message =
                        self.decoder
                            .decode(data)
                            .map_err(|source| SyncError::Decode {
                                lsn: wal_start,
                                source,
                            })?;
                    // blueshift's own tables are never replicated; a loaded table that changed
                    // on blue stops reading (see `identity`).
                    let keep = match self.loaded.filter(&mut message) {
                        Ok(keep) => keep,
                        Err(SyncError::SourceChanged {
                            changed,
                            publication,
                        }) => {
                            let slot = self.loaded.slot().to_owned();
                            return Err(super::identity::forget_and_fail(
                                &mut self.green,
                                &slot,
                                &publication,
                                changed.0,
                            )
                            .await);
                        }
                        Err(e) => return Err(e),
                    };
                    if !keep {
                        continue;
                    }
                    // The one memory budget (see `assembler::budget`): wait for the appliers to
                    // give bytes back, unless spilling is what makes room.
                    if !self
                        .make_room(self.assembler.charge_needed(&message), &mut shutdown)
                        .await
                    {
                        return Ok(scheduled);
                    }
                    if let PgOutputMessage::Message(m) = &message {
                        if m.transactional
                            && m.xid.is_none()
                            && m.prefix == crate::cutover::fence::FENCE_PREFIX
                        {
                            self.fence_marker = true;
                        }
                    }
                    if let PgOutputMessage::StreamStart(start) = &message {
                        if start.first_segment {
                            self.streams
                                .first_block(start.xid, &mut self.assembler)
                                .await?;
                        }
                    }
                    let pushed =
                        self.assembler
                            .push(message)
                            .map_err(|source| SyncError::Assemble {
                                lsn: wal_start,
                                source,
                            })?;
                    self.forward_taps().await?;
                    let Some(assembled) = pushed else {
                        continue;
                    };
                    // The bytes its changes hold of the budget, carried by its job from here.
                    let charge = self.assembler.take_charge();
                    if self
                        .stop_at
                        .is_some_and(|stop| assembled_commit(&assembled) >= stop)
                    {
                        return Ok(scheduled);
                    }
                    if let Assembled::Transaction(tx) = &assembled {
                        if tx.commit_lsn > self.resume_after
                            && !self.admit(tx, &mut shutdown).await?
                        {
                            return Ok(scheduled);
                        }
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
                    self.dispatch(assembled, received, charge).await?;
                    scheduled += 1;
                    self.trim_spool();
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
                        self.metrics.lag().caught_up();
                        self.hold.idle_at(wal_end);
                    }
                    self.trim_spool();
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
            self.metrics
                .set_queue_depth("apply", u64::try_from(self.jobs.depth()).unwrap_or(0));
        }
    }

    /// The spool's next frame while one is replayed.
    fn replayed(&mut self) -> Result<Option<ReplicationFrame>, SyncError> {
        let Some(replay) = self.replay.as_mut().and_then(|r| r.replay.as_mut()) else {
            return Ok(None);
        };
        if let Some((wal_start, data)) = replay.next_frame()? {
            return Ok(Some(ReplicationFrame::XLogData {
                wal_start,
                wal_end: wal_start,
                server_time: 0,
                data,
            }));
        }
        tracing::info!(file = ?replay.path(), end = %replay.end, "spool replayed: reading blue's stream from its end");
        if let Some(r) = self.replay.as_mut() {
            r.replay = None;
        }
        Ok(None)
    }

    /// Removes the replayed spool once green's durable position passed its end.
    fn trim_spool(&mut self) {
        if let Some(r) = &self.replay {
            if r.replay.is_none() && self.acks.wanted() >= r.end {
                super::spool::discard(&r.folder, "green's durable position passed its end");
                self.metrics.set_spool_bytes(0);
                self.replay = None;
            }
        }
    }

    /// Before a change of `cost` bytes is pushed: while the budget lacks them and the assembler
    /// holds less than half of it, the rest is held by queued and applying transactions, which
    /// give it back as they commit — waiting for them frees memory sooner than a spill file
    /// would. Otherwise (or once they are free) the assembler charges the change, spilling its
    /// largest open transaction if it must. False when `shutdown` completed first.
    ///
    /// It waits only for bytes the appliers can give back: what the assembler itself holds
    /// comes back only by spilling, so a wait that needs it would never end.
    async fn make_room(
        &self,
        cost: usize,
        shutdown: &mut (impl Future<Output = ()> + Unpin),
    ) -> bool {
        let budget = self.assembler.budget();
        loop {
            let assembling = self.assembler.stats().buffered_bytes;
            if cost == 0
                || budget.available() >= cost
                || assembling.saturating_add(cost) > budget.limit()
                || assembling >= budget.limit() / 2
            {
                return true;
            }
            tokio::select! {
                () = &mut *shutdown => return false,
                () = budget.wait_for(cost) => {}
            }
        }
    }

    /// The budget's bytes a spilled transaction holds while queued and applied (its reader):
    /// taken when free; else made free by spilling what the assembler holds, when that is what
    /// stands in the way, or waited for from the appliers.
    async fn charge_spilled(&mut self, commit_lsn: Lsn) -> Result<Charge, SyncError> {
        let budget = self.assembler.budget().clone();
        let bytes = SPILLED_CHARGE.min(budget.limit());
        loop {
            if let Some(charge) = budget.try_charge(bytes) {
                return Ok(charge);
            }
            let assembling = self.assembler.stats().buffered_bytes;
            if assembling.saturating_add(bytes) > budget.limit() {
                self.assembler
                    .spill_largest()
                    .map_err(|source| SyncError::Assemble {
                        lsn: commit_lsn,
                        source,
                    })?;
                continue;
            }
            // Held by queued and applying transactions, which give it back as they commit.
            budget.wait_for(bytes).await;
        }
    }

    /// Waits until green can take every relation description `tx` uses (see the module docs);
    /// false when `shutdown` completed first.
    async fn admit(
        &mut self,
        tx: &Transaction,
        shutdown: &mut (impl Future<Output = ()> + Unpin),
    ) -> Result<bool, SyncError> {
        for relation in tx.changes.relations() {
            if self.is_checked(&relation) {
                continue;
            }
            let mut wait = BLOCKED_RECHECK_FIRST;
            let mut waited = false;
            loop {
                let type_names = self.assembler.relations();
                let blocked = relation::check(
                    &self.green,
                    &relation,
                    |oid| type_names.type_name(oid),
                    &self.mapping,
                )
                .await
                .map_err(|source| SyncError::RelationCheck {
                    table: relation.name().to_string(),
                    source,
                })?;
                let Some(blocked) = blocked else { break };
                self.metrics.set_blocked(true);
                tracing::warn!(
                    table = %blocked.table,
                    commit_lsn = %tx.commit_lsn,
                    retry_in = ?wait,
                    "sync is blocked: green cannot take blue's change to this table losslessly, so \
                     nothing from this transaction on is applied; waiting for green to be fixed: {blocked}"
                );
                waited = true;
                tokio::select! {
                    () = &mut *shutdown => return Ok(false),
                    () = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(BLOCKED_RECHECK_MAX);
            }
            let name = relation.name();
            if waited {
                tracing::info!(table = %name, commit_lsn = %tx.commit_lsn, "green takes blue's change to this table now; sync goes on");
                self.metrics.set_blocked(false);
            }
            // Green's unique keys of the table are read again for the new description.
            self.keys.forget(name.schema(), &name.name);
            let versions = self.checked.entry(relation.oid().0).or_default();
            if versions.len() >= CHECKED_PER_RELATION {
                versions.remove(0);
            }
            versions.push(relation);
        }
        Ok(true)
    }

    /// Hands what the streamed transactions did to their streamed appliers (see
    /// [`streamed`](super::streamed)).
    async fn forward_taps(&mut self) -> Result<(), SyncError> {
        if !self.streams.is_active() {
            return Ok(());
        }
        let mut taps = self.streams.take_taps(&mut self.assembler);
        let mut result = Ok(());
        for tap in taps.drain(..) {
            if result.is_err() {
                continue;
            }
            let admitted = match &tap {
                Tapped::Change { change, .. } => self.admit_now(change).await,
                Tapped::Abort { .. } => Ok(true),
            };
            result = match admitted {
                Ok(admitted) => {
                    self.streams
                        .forward(tap, admitted, &mut self.assembler)
                        .await
                }
                Err(e) => Err(e),
            };
        }
        self.streams.put_taps(taps);
        result
    }

    /// Whether green takes every relation description `change` uses, checked once without
    /// waiting (a streamed apply gives up otherwise, and [`admit`](Self::admit) waits at the
    /// commit as for any transaction).
    async fn admit_now(&mut self, change: &blueshift_applier::Change) -> Result<bool, SyncError> {
        use blueshift_applier::Change as C;
        let relations = match change {
            C::Insert { relation, .. }
            | C::Update { relation, .. }
            | C::Delete { relation, .. } => std::slice::from_ref(relation),
            C::Truncate { relations, .. } => relations.as_slice(),
        };
        for relation in relations {
            if self.is_checked(relation) {
                continue;
            }
            let type_names = self.assembler.relations();
            let blocked = relation::check(
                &self.green,
                relation,
                |oid| type_names.type_name(oid),
                &self.mapping,
            )
            .await
            .map_err(|source| SyncError::RelationCheck {
                table: relation.name().to_string(),
                source,
            })?;
            if blocked.is_some() {
                return Ok(false);
            }
            let name = relation.name();
            self.keys.forget(name.schema(), &name.name);
            let versions = self.checked.entry(relation.oid().0).or_default();
            if versions.len() >= CHECKED_PER_RELATION {
                versions.remove(0);
            }
            versions.push(Arc::clone(relation));
        }
        Ok(true)
    }

    /// Whether `relation` (the same `Arc`, or an equal description) was checked.
    fn is_checked(&self, relation: &Arc<RelationInfo>) -> bool {
        self.checked.get(&relation.oid().0).is_some_and(|versions| {
            versions
                .iter()
                .any(|r| Arc::ptr_eq(r, relation) || **r == **relation)
        })
    }

    async fn dispatch(
        &mut self,
        assembled: Assembled,
        received: std::time::Instant,
        charge: Option<Charge>,
    ) -> Result<(), SyncError> {
        let xid = match &assembled {
            Assembled::Transaction(tx) => tx.xid,
            Assembled::Skipped { xid, .. } => *xid,
        };
        let (tx, end_lsn, commit_lsn) = match assembled {
            Assembled::Transaction(tx) => {
                let (end, commit) = (tx.end_lsn, tx.commit_lsn);
                // Nothing left to apply (it changed only blueshift's own tables, or nothing):
                // passed through to keep the order, like one dropped for its origin, so the
                // other direction's bookkeeping never counts as applied.
                // The cutover's fence marker is the exception: green's origins must record it.
                let fence = std::mem::take(&mut self.fence_marker);
                let tx = (fence || !matches!(tx.changes.in_memory(), Some([]))).then_some(tx);
                (tx, end, commit)
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
            return self.streams.abort(xid).await;
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
        self.streams.scheduled(slot.seq, commit_lsn);
        // Applied as blue sent it: its streamed applier commits it at its turn.
        let streamed = match &tx {
            Some(tx) if self.streams.is_applying(xid) => {
                self.streams
                    .commit(xid, slot.seq, tx.commit_lsn, end_lsn, tx.commit_time)
                    .await?
            }
            _ => {
                self.streams.abort(xid).await?;
                None
            }
        };
        // From here until it commits on green, its commit time is what the lag grows from.
        if let Some(at) = tx.as_ref().and_then(|tx| tx.commit_time.to_system_time()) {
            self.metrics.lag().received(slot.seq, at);
        }
        // Its changes' bytes stay charged until the job is dropped (applied and committed); a
        // spilled one holds its reader's buffer, charged here.
        let memory = match (charge, &tx) {
            (Some(charge), _) => Some(charge),
            (None, Some(tx)) if tx.changes.in_memory().is_none() => {
                Some(self.charge_spilled(commit_lsn).await?)
            }
            (None, _) => None,
        };
        self.metrics.stage(Stage::Schedule, received.elapsed());
        let job = Job {
            queued: std::time::Instant::now(),
            seq: slot.seq,
            after: slot.after,
            deps: slot.deps,
            barrier: slot.barrier,
            tx,
            end_lsn,
            _memory: memory,
            streamed,
        };
        self.jobs
            .send(job)
            .await
            .map_err(|_| SyncError::AppliersGone)
    }
}
