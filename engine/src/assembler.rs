//! The transaction assembler: decoded `pgoutput` messages in, whole committed transactions out.
//!
//! ```text
//! Begin ─ Origin? ─ (Relation | Type | change)* ─ Commit ─────────────────────► Transaction
//! Stream Start(x) ─ Origin? ─ (Relation | Type | change of subxid s)* ─ Stream Stop   (× n,
//!     interleaved with other transactions' blocks and with plain transactions)
//!   … Stream Abort(x, s ≠ x)  drops subtransaction s's changes
//!   … Stream Abort(x, x)      drops the transaction
//!   … Stream Commit(x) ───────────────────────────────────────────────────────► Transaction
//! ```
//!
//! [`TxAssembler`] owns the session's [`RelationCache`], updated by every Relation and Type
//! message (inside streamed blocks too); each change is turned into a [`Change`] carrying the
//! `Arc<RelationInfo>` current when it arrived.
//!
//! **Memory is bounded by configuration** ([`budget`]): every buffered change holds its real
//! bytes (its detached payload, column vectors, its place in the vector: [`buffer`]) of a
//! [`MemoryBudget`], the assembler's own of [`AssemblerOptions::max_memory`] or one shared with
//! the sync's queue; when the bytes are not free, the open transaction holding the most is
//! spilled to a file in [`AssemblerOptions::spill_dir`] (its bytes go back) and from then on
//! its changes are appended there — as they arrive, never first gathered in memory. At commit it is handed over as [`Changes::Spilled`], read back one change at a time;
//! the file is deleted when that reader is dropped, or at once when the transaction aborts.
//! The file format, and why it gives back exactly what was written, is in [`spill`].
//!
//! **Loop prevention**: a transaction whose Origin name starts with
//! [`AssemblerOptions::skip_origin_prefix`] (blueshift's own applied changes coming back) is
//! dropped; its changes are not buffered, and its commit comes out as
//! [`Assembled::Skipped`], whose `end_lsn` lets progress move past it.
//!
//! **Every change fits its relation**: each row image carries one value per column of the
//! latest Relation message, and a key-only old row has values only in replica identity columns
//! ([`shape`]); a change that does not fit is refused with an [`AssembleError`] before it is
//! buffered, so nothing downstream ever indexes a row by a column it does not have.
//!
//! **Taps** (for `sync::streamed`, which applies a streamed transaction while blue sends it):
//! a streamed transaction [`tap`](TxAssembler::tap)ped from its first block on also hands out,
//! as they arrive, a copy of each change it keeps and each Stream Abort
//! ([`Tapped`], [`drain_tapped`](TxAssembler::drain_tapped)); it is still buffered or spilled
//! exactly as any other, so nothing depends on the tap.
//!
//! Two-phase messages are refused (blueshift never requests them), and so is any sequence that
//! is not a well-formed stream, with an [`AssembleError`] naming the xid or LSN.

mod budget;
mod buffer;
mod error;
mod shape;
pub mod spill;

#[cfg(test)]
mod budget_tests;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use blueshift_applier::{Change, Changes, Origin, Transaction};
use blueshift_decoder::pgoutput::{
    BeginBody, CommitBody, OriginBody, PgOutputMessage, PgTimestamp, StreamAbortBody,
    StreamCommitBody, StreamStartBody,
};
use blueshift_decoder::relation::RelationCache;
use blueshift_decoder::{Lsn, Xid};

pub use budget::{Charge, MemoryBudget};
use buffer::TxBuffer;
pub use error::AssembleError;
pub use spill::SpillReader;

/// Settings of a [`TxAssembler`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssemblerOptions {
    /// Bytes of buffered changes, across all open transactions, above which the largest open
    /// transaction is spilled to disk: the size of the assembler's own [`MemoryBudget`]
    /// ([`TxAssembler::new`]); a shared budget ([`TxAssembler::sharing`]) replaces it.
    pub max_memory: usize,
    /// The folder of spill files. It belongs to this assembler alone: it is made private
    /// (`0700`, owned by this user; files `0600`), spill files left in it (by a crashed run)
    /// are removed when the assembler starts, and the folder itself when the assembler drops.
    pub spill_dir: PathBuf,
    /// Transactions whose Origin name starts with this are dropped (loop prevention).
    pub skip_origin_prefix: Option<String>,
}

/// What a message completed.
#[derive(Debug)]
pub enum Assembled {
    /// A committed transaction, to apply.
    Transaction(Transaction),
    /// A committed transaction dropped because its origin starts with
    /// [`AssemblerOptions::skip_origin_prefix`]: nothing to apply, but progress may move past
    /// `end_lsn` once every earlier transaction is durable on the target.
    Skipped {
        /// Its xid on the source.
        xid: Xid,
        /// The LSN of its commit record.
        commit_lsn: Lsn,
        /// The end of its commit record.
        end_lsn: Lsn,
        /// Its commit time.
        commit_time: PgTimestamp,
        /// The origin that caused the drop.
        origin: Origin,
    },
}

/// What a [tapped](TxAssembler::tap) streamed transaction did, in the order blue sent it.
#[derive(Debug)]
pub enum Tapped {
    /// A change it keeps (of subtransaction `subxid`, which is `xid` for the top level).
    Change {
        /// The streamed transaction.
        xid: Xid,
        /// The (sub)transaction that made the change.
        subxid: Xid,
        /// A copy of the change (its values share the buffered change's bytes).
        change: Change,
        /// The bytes the change holds in memory (as the budget counts them).
        size: usize,
    },
    /// Stream Abort: subtransaction `subxid` aborted, or the whole transaction when
    /// `subxid == xid` (it is no longer tapped then).
    Abort {
        /// The streamed transaction.
        xid: Xid,
        /// The subtransaction aborted, or `xid`.
        subxid: Xid,
    },
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AssemblerStats {
    /// Accounted bytes of changes held in memory now, across open transactions.
    pub buffered_bytes: usize,
    /// Open transactions now.
    pub open_transactions: usize,
    /// Bytes written to spill files since start.
    pub spilled_bytes_total: u64,
    /// Transactions spilled since start (each counted once).
    pub spilled_transactions_total: u64,
    /// Transactions dropped for their origin since start.
    pub skipped_transactions_total: u64,
}

/// One open transaction, plain or streamed.
#[derive(Debug)]
struct OpenTxn {
    xid: Xid,
    origin: Option<Origin>,
    /// Dropped for its origin: changes are discarded on arrival.
    skipped: bool,
    buffer: TxBuffer,
}

impl OpenTxn {
    fn new(xid: Xid) -> Self {
        OpenTxn {
            xid,
            origin: None,
            skipped: false,
            buffer: TxBuffer::new(),
        }
    }
}

/// The open plain (Begin … Commit) transaction.
#[derive(Debug)]
struct PlainTxn {
    final_lsn: Lsn,
    txn: OpenTxn,
}

/// Turns a decoded `pgoutput` stream into whole committed transactions; see the module docs.
#[derive(Debug)]
pub struct TxAssembler {
    options: AssemblerOptions,
    relations: RelationCache,
    plain: Option<PlainTxn>,
    streams: HashMap<Xid, OpenTxn>,
    /// The top xid of the streamed block open now (between Stream Start and Stream Stop).
    block: Option<Xid>,
    /// Numbers spill files, so a name is never reused.
    next_file: u64,
    stats: AssemblerStats,
    /// The bytes buffered changes hold.
    budget: MemoryBudget,
    /// The charge of the transaction completed last in memory, until taken.
    completed_charge: Option<Charge>,
    /// Streamed transactions whose changes are also handed out as they arrive.
    tapped: HashSet<Xid>,
    /// What the tapped transactions did since the last [`TxAssembler::drain_tapped`].
    taps: Vec<Tapped>,
}

impl Drop for TxAssembler {
    /// Deletes the open transactions' spill files, then the spill folder when nothing else is
    /// in it (a transaction handed to an applier may still be reading its file: then the folder
    /// stays, and the next start clears it).
    fn drop(&mut self) {
        self.plain = None;
        self.streams.clear();
        if std::fs::remove_dir(&self.options.spill_dir).is_ok() {
            tracing::debug!(dir = %self.options.spill_dir.display(), "spill folder removed");
        }
    }
}

impl TxAssembler {
    /// An assembler with no open transaction. Creates the spill folder if needed (private:
    /// see [`AssemblerOptions::spill_dir`]) and removes spill files a previous run left in it
    /// (the server streams those transactions again).
    pub fn new(options: AssemblerOptions) -> Result<TxAssembler, AssembleError> {
        let budget = MemoryBudget::new(options.max_memory);
        Self::sharing(options, budget)
    }

    /// An assembler whose buffered changes hold bytes of `budget`, shared with whatever else
    /// holds in-flight transactions (the sync's job queue: see [`budget`]);
    /// `options.max_memory` becomes the budget's size.
    pub fn sharing(
        mut options: AssemblerOptions,
        budget: MemoryBudget,
    ) -> Result<TxAssembler, AssembleError> {
        options.max_memory = budget.limit();
        let dir_error = |source| AssembleError::SpillDir {
            path: options.spill_dir.clone(),
            source,
        };
        spill::prepare_dir(&options.spill_dir).map_err(dir_error)?;
        let removed = spill::remove_leftovers(&options.spill_dir).map_err(dir_error)?;
        if removed > 0 {
            tracing::info!(
                dir = %options.spill_dir.display(),
                files = removed,
                "removed spill files of an earlier run"
            );
        }
        Ok(TxAssembler {
            options,
            relations: RelationCache::new(),
            plain: None,
            streams: HashMap::new(),
            block: None,
            next_file: 0,
            stats: AssemblerStats::default(),
            budget,
            completed_charge: None,
            tapped: HashSet::new(),
            taps: Vec::new(),
        })
    }

    /// The bytes of the budget `message` would be charged if pushed now: what its change holds
    /// in memory ([`buffer`]); 0 when it is not a change, or its transaction is spilled or
    /// dropped for its origin. The sync's reader waits for them before pushing (see [`budget`]).
    pub fn charge_needed(&self, message: &PgOutputMessage) -> usize {
        let Some(size) = buffer::message_size(message) else {
            return 0;
        };
        let open = match (&self.plain, self.block) {
            (Some(plain), _) => Some(&plain.txn),
            (None, Some(top)) => self.streams.get(&top),
            (None, None) => None,
        };
        match open {
            Some(txn) if !txn.skipped && !txn.buffer.is_spilled() => size,
            _ => 0,
        }
    }

    /// The budget buffered changes hold bytes of.
    pub fn budget(&self) -> &MemoryBudget {
        &self.budget
    }

    /// The charge of the transaction [`push`](Self::push) returned last, when it completed in
    /// memory: the bytes its changes hold, for whoever holds them now (a queued job) to give
    /// back when they are dropped. `None` for a spilled or skipped one, or once taken. Left
    /// untaken, it is given back at the next completion.
    pub fn take_charge(&mut self) -> Option<Charge> {
        self.completed_charge.take()
    }

    /// The relations and types the stream has described so far.
    pub fn relations(&self) -> &RelationCache {
        &self.relations
    }

    /// The counters.
    pub fn stats(&self) -> AssemblerStats {
        AssemblerStats {
            open_transactions: self.streams.len() + usize::from(self.plain.is_some()),
            ..self.stats
        }
    }

    /// Whether a plain transaction (Begin … Commit) or a streamed block (Stream Start … Stream
    /// Stop) is open: the stream is in the middle of one. Streamed transactions open between
    /// their blocks do not count (see [`AssemblerStats::open_transactions`]); like PostgreSQL's
    /// own apply worker, a consumer may then still let a keepalive advance its progress, since
    /// such a transaction commits after the keepalive's position and is sent again in full
    /// after a restart.
    pub fn in_transaction(&self) -> bool {
        self.open_xid().is_some()
    }

    /// The options it runs with.
    pub fn options(&self) -> &AssemblerOptions {
        &self.options
    }

    /// Forgets every open transaction (deleting their spill files) and the relation cache, as
    /// when replication restarts: the new session sends open transactions and Relation
    /// messages again from their start.
    pub fn reset(&mut self) {
        self.plain = None;
        self.streams.clear();
        self.block = None;
        self.relations.clear();
        self.stats.buffered_bytes = 0;
        self.completed_charge = None;
        self.tapped.clear();
        self.taps.clear();
    }

    /// From now on, hands out what streamed transaction `xid` does as it arrives (see
    /// [`Tapped`]); until its Stream Commit or Stream Abort, or [`untap`](Self::untap).
    pub fn tap(&mut self, xid: Xid) {
        self.tapped.insert(xid);
    }

    /// Stops handing out what `xid` does.
    pub fn untap(&mut self, xid: Xid) {
        self.tapped.remove(&xid);
    }

    /// What the tapped transactions did since the last call, in the order it arrived.
    pub fn drain_tapped(&mut self) -> std::vec::Drain<'_, Tapped> {
        self.taps.drain(..)
    }

    /// Takes the next message of the stream; returns what it completed, if anything.
    ///
    /// On error the assembler's state is unspecified: [`reset`](Self::reset) it and restart
    /// replication from the last confirmed position.
    pub fn push(&mut self, message: PgOutputMessage) -> Result<Option<Assembled>, AssembleError> {
        use PgOutputMessage as M;
        match message {
            M::Begin(begin) => self.begin(begin).map(|()| None),
            M::Commit(commit) => self.commit(commit).map(Some),
            M::Origin(origin) => self.origin(origin).map(|()| None),
            M::Relation(_) | M::Type(_) => {
                self.relations.observe(&message);
                Ok(None)
            }
            M::Insert(_) | M::Update(_) | M::Delete(_) | M::Truncate(_) => {
                self.change(message).map(|()| None)
            }
            // Logical decoding messages are not replicated as changes.
            M::Message(_) => Ok(None),
            M::StreamStart(start) => self.stream_start(start).map(|()| None),
            M::StreamStop => {
                self.block
                    .take()
                    .ok_or(AssembleError::StreamStopOutsideBlock)?;
                Ok(None)
            }
            M::StreamCommit(commit) => self.stream_commit(commit).map(Some),
            M::StreamAbort(abort) => self.stream_abort(abort).map(|()| None),
            M::BeginPrepare(m) => Err(two_phase("Begin Prepare", m.xid, m.gid)),
            M::Prepare(m) => Err(two_phase("Prepare", m.xid, m.gid)),
            M::StreamPrepare(m) => Err(two_phase("Stream Prepare", m.xid, m.gid)),
            M::CommitPrepared(m) => Err(two_phase("Commit Prepared", m.xid, m.gid)),
            M::RollbackPrepared(m) => Err(two_phase("Rollback Prepared", m.xid, m.gid)),
        }
    }

    /// The xid of whatever is open: the plain transaction or the streamed block.
    fn open_xid(&self) -> Option<Xid> {
        self.plain.as_ref().map(|p| p.txn.xid).or(self.block)
    }

    fn begin(&mut self, begin: BeginBody) -> Result<(), AssembleError> {
        if let Some(open) = self.open_xid() {
            return Err(AssembleError::BeginInsideTransaction {
                xid: begin.xid,
                final_lsn: begin.final_lsn,
                open,
            });
        }
        self.plain = Some(PlainTxn {
            final_lsn: begin.final_lsn,
            txn: OpenTxn::new(begin.xid),
        });
        Ok(())
    }

    fn commit(&mut self, commit: CommitBody) -> Result<Assembled, AssembleError> {
        let Some(plain) = self.plain.take() else {
            return Err(AssembleError::CommitWithoutBegin {
                commit_lsn: commit.commit_lsn,
                end_lsn: commit.end_lsn,
            });
        };
        if plain.final_lsn != commit.commit_lsn {
            let error = AssembleError::CommitLsnMismatch {
                xid: plain.txn.xid,
                final_lsn: plain.final_lsn,
                commit_lsn: commit.commit_lsn,
            };
            self.plain = Some(plain);
            return Err(error);
        }
        self.complete(
            plain.txn,
            commit.commit_lsn,
            commit.end_lsn,
            commit.commit_time,
        )
    }

    /// The open transaction a change or Origin goes to.
    fn target(
        &mut self,
        message: &'static str,
        xid: Option<Xid>,
    ) -> Result<&mut OpenTxn, AssembleError> {
        if let Some(plain) = &mut self.plain {
            return Ok(&mut plain.txn);
        }
        match self.block {
            Some(top) => Ok(self
                .streams
                .get_mut(&top)
                .expect("a block is open only for a transaction in `streams`")),
            None => Err(AssembleError::OutsideTransaction { message, xid }),
        }
    }

    fn origin(&mut self, origin: OriginBody) -> Result<(), AssembleError> {
        let skip = self
            .options
            .skip_origin_prefix
            .as_deref()
            .is_some_and(|prefix| origin.name.starts_with(prefix));
        let txn = self.target("Origin", None)?;
        let mut freed = 0;
        if skip && !txn.skipped {
            txn.skipped = true;
            freed = std::mem::replace(&mut txn.buffer, TxBuffer::new()).bytes();
            tracing::debug!(xid = %txn.xid, origin = %origin.name, "dropping transaction of a skipped origin");
        }
        txn.origin = Some(Origin {
            name: origin.name,
            lsn: origin.commit_lsn,
        });
        self.stats.buffered_bytes -= freed;
        Ok(())
    }

    fn change(&mut self, message: PgOutputMessage) -> Result<(), AssembleError> {
        let name = message.name();
        let prefix = message.stream_xid();
        let in_block = self.block.is_some() && self.plain.is_none();
        let txn = self.target(name, prefix)?;
        let (xid, skipped) = (txn.xid, txn.skipped);
        let subxid = match (in_block, prefix) {
            (true, Some(subxid)) => subxid,
            (false, None) => xid,
            (true, None) => {
                return Err(AssembleError::StreamXidPrefix {
                    message: name,
                    xid,
                    problem: "has no xid prefix inside a streamed block",
                })
            }
            (false, Some(_)) => {
                return Err(AssembleError::StreamXidPrefix {
                    message: name,
                    xid,
                    problem: "has an xid prefix outside any streamed block",
                })
            }
        };
        if skipped {
            return Ok(());
        }
        let change = self.to_change(xid, message)?;
        let size = buffer::change_size(&change);
        if in_block && self.tapped.contains(&xid) {
            self.taps.push(Tapped::Change {
                xid,
                subxid,
                change: change.clone(),
                size,
            });
        }
        let charge = if self.target(name, prefix)?.buffer.is_spilled() {
            None
        } else {
            self.charge(size)?
        };
        let TxAssembler {
            options,
            plain,
            streams,
            block,
            next_file,
            stats,
            ..
        } = self;
        let txn = match (plain, block) {
            (Some(plain), _) => &mut plain.txn,
            (None, Some(top)) => streams
                .get_mut(top)
                .expect("a block is open only for a transaction in `streams`"),
            (None, None) => {
                return Err(AssembleError::OutsideTransaction {
                    message: name,
                    xid: prefix,
                })
            }
        };
        if charge.is_none() && !txn.buffer.is_spilled() {
            // Not even spilling every other open transaction made room: this one goes to disk.
            spill(options, next_file, stats, txn)?;
        }
        let added = txn.buffer.push(xid, subxid, change, size, charge)?;
        stats.buffered_bytes += added.memory;
        stats.spilled_bytes_total += added.spilled;
        Ok(())
    }

    /// `size` bytes of the budget for a change to buffer; while they are not free, the largest
    /// open transaction in memory is spilled (its bytes go back). `None` when none is left.
    fn charge(&mut self, size: usize) -> Result<Option<Charge>, AssembleError> {
        loop {
            if let Some(charge) = self.budget.try_charge(size) {
                return Ok(Some(charge));
            }
            if !self.spill_largest()? {
                return Ok(None);
            }
        }
    }

    /// Spills the open transaction holding the most memory, giving its bytes back to the
    /// budget; false when no open transaction holds any.
    pub fn spill_largest(&mut self) -> Result<bool, AssembleError> {
        {
            let largest = self
                .plain
                .iter_mut()
                .map(|p| &mut p.txn)
                .chain(self.streams.values_mut())
                .filter(|t| t.buffer.bytes() > 0)
                .max_by_key(|t| t.buffer.bytes());
            let Some(txn) = largest else {
                return Ok(false);
            };
            spill(&self.options, &mut self.next_file, &mut self.stats, txn)?;
        }
        Ok(true)
    }

    /// The [`Change`] a change message stands for, with the relations' current descriptions;
    /// refused when its rows do not fit them (see [`shape`]).
    fn to_change(&self, xid: Xid, message: PgOutputMessage) -> Result<Change, AssembleError> {
        let relation = |oid| {
            self.relations
                .require(oid)
                .map_err(|source| AssembleError::UnknownRelation { xid, source })
        };
        let name = message.name();
        let change = match message {
            PgOutputMessage::Insert(m) => Change::Insert {
                relation: relation(m.relation)?,
                new: m.new,
            },
            PgOutputMessage::Update(m) => Change::Update {
                relation: relation(m.relation)?,
                old: m.old,
                new: m.new,
            },
            PgOutputMessage::Delete(m) => Change::Delete {
                relation: relation(m.relation)?,
                old: m.old,
            },
            PgOutputMessage::Truncate(m) => Change::Truncate {
                relations: m
                    .relations
                    .iter()
                    .map(|oid| relation(*oid))
                    .collect::<Result<_, _>>()?,
                cascade: m.cascade,
                restart_identity: m.restart_identity,
            },
            other => unreachable!("{} is not a change message", other.name()),
        };
        shape::check(xid, name, &change)?;
        Ok(change)
    }

    fn stream_start(&mut self, start: StreamStartBody) -> Result<(), AssembleError> {
        if let Some(open) = self.open_xid() {
            return Err(AssembleError::StreamMisplaced {
                message: "Stream Start",
                xid: start.xid,
                open,
            });
        }
        let known = self.streams.contains_key(&start.xid);
        match (start.first_segment, known) {
            (true, true) => return Err(AssembleError::StreamRestarted { xid: start.xid }),
            (false, false) => {
                return Err(AssembleError::UnknownStreamedTransaction {
                    message: "Stream Start",
                    xid: start.xid,
                })
            }
            (true, false) => {
                self.streams.insert(start.xid, OpenTxn::new(start.xid));
            }
            (false, true) => {}
        }
        self.block = Some(start.xid);
        Ok(())
    }

    /// Removes streamed transaction `xid` for a Stream Commit or Stream Abort.
    fn take_stream(&mut self, message: &'static str, xid: Xid) -> Result<OpenTxn, AssembleError> {
        if let Some(open) = self.open_xid() {
            return Err(AssembleError::StreamMisplaced { message, xid, open });
        }
        self.streams
            .remove(&xid)
            .ok_or(AssembleError::UnknownStreamedTransaction { message, xid })
    }

    fn stream_commit(&mut self, commit: StreamCommitBody) -> Result<Assembled, AssembleError> {
        let txn = self.take_stream("Stream Commit", commit.xid)?;
        self.tapped.remove(&commit.xid);
        self.complete(txn, commit.commit_lsn, commit.end_lsn, commit.commit_time)
    }

    fn stream_abort(&mut self, abort: StreamAbortBody) -> Result<(), AssembleError> {
        if abort.subxid == abort.xid {
            let txn = self.take_stream("Stream Abort", abort.xid)?;
            if self.tapped.remove(&abort.xid) {
                self.taps.push(Tapped::Abort {
                    xid: abort.xid,
                    subxid: abort.xid,
                });
            }
            self.stats.buffered_bytes -= txn.buffer.bytes();
            tracing::debug!(xid = %abort.xid, spilled = txn.buffer.is_spilled(), "streamed transaction aborted");
            // Dropping the buffer deletes its spill file.
            return Ok(());
        }
        if let Some(open) = self.open_xid() {
            return Err(AssembleError::StreamMisplaced {
                message: "Stream Abort",
                xid: abort.xid,
                open,
            });
        }
        let txn =
            self.streams
                .get_mut(&abort.xid)
                .ok_or(AssembleError::UnknownStreamedTransaction {
                    message: "Stream Abort",
                    xid: abort.xid,
                })?;
        let freed = txn.buffer.abort_subxact(abort.subxid);
        if self.tapped.contains(&abort.xid) {
            self.taps.push(Tapped::Abort {
                xid: abort.xid,
                subxid: abort.subxid,
            });
        }
        self.stats.buffered_bytes -= freed;
        tracing::debug!(xid = %abort.xid, subxid = %abort.subxid, "subtransaction aborted");
        Ok(())
    }

    /// The output for a committed transaction.
    fn complete(
        &mut self,
        txn: OpenTxn,
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_time: PgTimestamp,
    ) -> Result<Assembled, AssembleError> {
        self.stats.buffered_bytes -= txn.buffer.bytes();
        self.completed_charge = None;
        if txn.skipped {
            self.stats.skipped_transactions_total += 1;
            return Ok(Assembled::Skipped {
                xid: txn.xid,
                commit_lsn,
                end_lsn,
                commit_time,
                origin: txn
                    .origin
                    .expect("a transaction is skipped only for its Origin"),
            });
        }
        let (changes, charge) = txn.buffer.finish(txn.xid)?;
        self.completed_charge = charge;
        Ok(Assembled::Transaction(Transaction {
            xid: txn.xid,
            commit_lsn,
            end_lsn,
            commit_time,
            origin: txn.origin,
            changes,
        }))
    }
}

/// Moves `txn`'s changes held in memory to a new spill file; every later change goes there.
fn spill(
    options: &AssemblerOptions,
    next_file: &mut u64,
    stats: &mut AssemblerStats,
    txn: &mut OpenTxn,
) -> Result<(), AssembleError> {
    let name = spill::file_name(txn.xid, *next_file);
    *next_file += 1;
    let writer = spill::SpillWriter::create(&options.spill_dir, &name).map_err(|source| {
        AssembleError::Spill {
            xid: txn.xid,
            path: options.spill_dir.join(&name),
            source,
        }
    })?;
    let (freed, written) = txn.buffer.spill(txn.xid, writer)?;
    stats.buffered_bytes -= freed;
    stats.spilled_bytes_total += written;
    stats.spilled_transactions_total += 1;
    tracing::debug!(
        xid = %txn.xid,
        bytes = freed,
        limit = options.max_memory,
        file = %name,
        "transaction spilled to disk"
    );
    Ok(())
}

fn two_phase(message: &'static str, xid: Xid, gid: String) -> AssembleError {
    AssembleError::TwoPhaseNotRequested { message, xid, gid }
}

/// The memory a spilled transaction holds while queued or applied: its reader's buffer and
/// bookkeeping, and the change being read.
pub const SPILLED_CHARGE: usize = 128 * 1024;

/// Drains `changes` into a vector: the in-memory ones as they are, spilled ones read back.
/// For tests and small transactions; appliers should stream spilled changes instead.
pub fn collect_changes(changes: Changes) -> std::io::Result<Vec<Change>> {
    match changes {
        Changes::InMemory(changes) => Ok(changes),
        Changes::Spilled(mut reader) => {
            let mut out = Vec::new();
            while let Some(change) = reader.next_change()? {
                out.push(change);
            }
            Ok(out)
        }
    }
}
