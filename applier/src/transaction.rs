//! What an applier applies: one source transaction, whole, in the order blue committed it.
//!
//! The engine's transaction assembler builds these from the decoded stream (Begin … Commit, or
//! the blocks of a streamed transaction up to its Stream Commit). Every change carries the
//! relation description that was current when blue sent it, so a table whose columns change
//! mid-stream is applied with the right columns before and after.
//!
//! A transaction larger than the assembler's memory limit lives in a spill file; its changes
//! are then read back one by one through [`SpilledChanges`], so memory stays bounded by
//! configuration, not by transaction size.

use std::fmt;
use std::io;
use std::sync::Arc;

use blueshift_decoder::pgoutput::{OldTuple, PgTimestamp, TupleData};
use blueshift_decoder::relation::RelationInfo;
use blueshift_decoder::{Lsn, Xid};

/// One row change (or a TRUNCATE) of a source transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A row inserted.
    Insert {
        /// The table, as its last Relation message described it.
        relation: Arc<RelationInfo>,
        /// The new row.
        new: TupleData,
    },
    /// A row updated.
    Update {
        /// The table.
        relation: Arc<RelationInfo>,
        /// The old key (`K`) or whole old row (`O`); `None` when the key did not change and the
        /// replica identity is not FULL: the key is then taken from `new`.
        old: Option<OldTuple>,
        /// The new row; unchanged TOASTed values are `ColumnValue::UnchangedToast`.
        new: TupleData,
    },
    /// A row deleted.
    Delete {
        /// The table.
        relation: Arc<RelationInfo>,
        /// The old key or whole old row.
        old: OldTuple,
    },
    /// Tables truncated together.
    Truncate {
        /// The tables.
        relations: Vec<Arc<RelationInfo>>,
        /// `TRUNCATE … CASCADE`.
        cascade: bool,
        /// `TRUNCATE … RESTART IDENTITY`.
        restart_identity: bool,
    },
}

/// Where a transaction was replayed from, when blue itself applied it from another node
/// (the pgoutput Origin message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The replication origin's name on blue.
    pub name: String,
    /// The commit LSN on the origin's own server.
    pub lsn: Lsn,
}

/// One committed source transaction.
#[derive(Debug)]
pub struct Transaction {
    /// Its xid on blue (wraps around: an identifier among those in flight, not an order).
    pub xid: Xid,
    /// The LSN of its commit record on blue: what green's replication origin records, and the
    /// order in which transactions are committed on green.
    pub commit_lsn: Lsn,
    /// The end of its commit record: the position the slot may be told is flushed once green
    /// durably holds this transaction.
    pub end_lsn: Lsn,
    /// Its commit time on blue.
    pub commit_time: PgTimestamp,
    /// Set when blue replayed it from another node.
    pub origin: Option<Origin>,
    /// Its changes, in blue's order.
    pub changes: Changes,
}

/// The changes of a transaction: in memory, or read back from a spill file.
#[derive(Debug)]
pub enum Changes {
    /// Held in memory.
    InMemory(Vec<Change>),
    /// Spilled to disk; read them in order, once.
    Spilled(Box<dyn SpilledChanges>),
}

impl Changes {
    /// The relation descriptions the changes refer to, each once (by pointer), in order of first
    /// use.
    pub fn relations(&self) -> Vec<Arc<RelationInfo>> {
        match self {
            Changes::InMemory(changes) => {
                let mut out: Vec<Arc<RelationInfo>> = Vec::new();
                for change in changes {
                    let relations = match change {
                        Change::Insert { relation, .. }
                        | Change::Update { relation, .. }
                        | Change::Delete { relation, .. } => std::slice::from_ref(relation),
                        Change::Truncate { relations, .. } => relations.as_slice(),
                    };
                    for relation in relations {
                        // Runs of changes to one table are the common case: the last one first.
                        if out.last().is_some_and(|r| Arc::ptr_eq(r, relation)) {
                            continue;
                        }
                        if !out.iter().any(|r| Arc::ptr_eq(r, relation)) {
                            out.push(Arc::clone(relation));
                        }
                    }
                }
                out
            }
            Changes::Spilled(spilled) => spilled.relations(),
        }
    }

    /// The changes held in memory, or `None` when spilled.
    pub fn in_memory(&self) -> Option<&[Change]> {
        match self {
            Changes::InMemory(changes) => Some(changes),
            Changes::Spilled(_) => None,
        }
    }
}

/// The changes of a spilled transaction, read back in order.
pub trait SpilledChanges: Send + Sync + fmt::Debug {
    /// The next change; `None` after the last.
    fn next_change(&mut self) -> io::Result<Option<Change>>;

    /// How many changes there are in all.
    fn len(&self) -> u64;

    /// Goes back to the first change: the next [`next_change`](Self::next_change) returns it
    /// again. The applier does this only within one attempt to apply the transaction (a folded
    /// attempt that failed and was rolled back is applied again in blue's order).
    fn rewind(&mut self) -> io::Result<()>;

    /// The relation descriptions the changes refer to, each once (read without reading the
    /// changes: the engine checks them against green before the transaction is applied). It may
    /// also hold descriptions only changes of aborted subtransactions referred to.
    fn relations(&self) -> Vec<Arc<RelationInfo>>;

    /// True when there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
