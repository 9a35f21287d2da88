//! What applying a transaction did: rows by operation, and where green's WAL stood after the
//! commit (for the engine's durability check).

use blueshift_decoder::Lsn;

/// Rows (and tables) touched on green, by operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowCounts {
    /// Rows inserted.
    pub inserted: u64,
    /// Rows updated.
    pub updated: u64,
    /// Rows deleted.
    pub deleted: u64,
    /// Tables truncated.
    pub truncated: u64,
}

impl RowCounts {
    /// Inserted + updated + deleted rows.
    pub fn rows(&self) -> u64 {
        self.inserted + self.updated + self.deleted
    }
}

/// A transaction applied by `begin_and_apply` and not yet committed (or skipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Staged {
    /// The transaction's commit LSN on blue.
    pub commit_lsn: Lsn,
    /// True when green already held it (its commit LSN is at or before the origin's progress):
    /// nothing was sent, and `commit` just reports it.
    pub skipped: bool,
    /// Rows applied so far.
    pub rows: RowCounts,
}

/// The result of applying one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// The transaction's commit LSN on blue.
    pub commit_lsn: Lsn,
    /// True when green already held it: nothing was applied. This is what makes re-delivery
    /// after a restart exactly-once.
    pub skipped: bool,
    /// Rows applied.
    pub rows: RowCounts,
    /// Green's `pg_current_wal_insert_lsn()` right after the COMMIT: the commit is durable once
    /// green's `pg_current_wal_flush_lsn()` reaches it. `None` when skipped.
    pub green_lsn: Option<Lsn>,
}
