//! The applier's session on green: its options and the settings pinned at connect.
//!
//! Pinned so that apply means the same thing whatever green's defaults are:
//! `session_replication_role = replica` (user triggers and foreign-key checks do not fire, as in
//! native logical replication apply), and the settings that fix how text values are read back:
//! `DateStyle = ISO`, `TimeZone = UTC`, `IntervalStyle = postgres`, `extra_float_digits = 3`,
//! `bytea_output = hex`, `client_encoding = UTF8`; and `row_security = off`, so that a
//! row-level security policy on green makes a statement fail instead of silently filtering the
//! rows an UPDATE or DELETE reaches; and `default_transaction_read_only = off`, so that an
//! applier keeps writing on a database the cutover fenced (`ALTER DATABASE … SET
//! default_transaction_read_only = on` stops every other session's writes). Values go through
//! `set_config` as parameters.

use std::sync::Arc;

use tokio_postgres::Client;

use crate::client::SqlError;
use crate::error::ApplyError;
use crate::mapping::Mapping;

/// `synchronous_commit` for the applier's transactions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SynchronousCommit {
    /// Each COMMIT waits for green's WAL flush (and synchronous standbys): a committed
    /// transaction is durable when `commit` returns.
    #[default]
    On,
    /// COMMIT returns before green's WAL is flushed, as native apply does, for speed. The engine
    /// must then treat a commit as durable only once green's `pg_current_wal_flush_lsn()` has
    /// reached the [`ApplyOutcome::green_lsn`](crate::ApplyOutcome::green_lsn) it reported,
    /// and never acknowledge it to blue's slot before.
    Off,
    /// Waits for the local flush only, not for synchronous standbys.
    Local,
}

impl SynchronousCommit {
    /// The setting's value.
    pub fn as_str(self) -> &'static str {
        match self {
            SynchronousCommit::On => "on",
            SynchronousCommit::Off => "off",
            SynchronousCommit::Local => "local",
        }
    }
}

/// How an applier connects and applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplierOptions {
    /// The replication origin that records this applier's progress on green, e.g.
    /// `blueshift_<slot>_<n>`: at most 63 bytes, created when missing.
    pub origin_name: String,
    /// `application_name` of the session, unless the connection settings name one.
    pub application_name: String,
    /// `synchronous_commit` of the session.
    pub synchronous_commit: SynchronousCommit,
    /// Prepared statements kept per applier.
    pub statement_cache_capacity: usize,
    /// Most rows in one multi-row INSERT (also bounded by 65535 parameters per statement).
    pub insert_batch_rows: usize,
    /// Most statements sent ahead of their answers within a transaction; 1 is the serial path.
    /// On the wire session (see [`wire`](Self::wire)) it bounds a window: a `Sync` goes after
    /// this many statements, and their answers are read before more are sent.
    pub pipeline_depth: usize,
    /// Apply over the applier's own pipelined session (see the crate's `wire` module: one
    /// `Sync` per window); off: over tokio-postgres, one `Sync` per statement. Two-way
    /// (conflict-detecting) appliers always use tokio-postgres.
    pub wire: bool,
    /// The declared column mapping: renames, exclusions, accepted lossy casts (see
    /// [`mapping`](crate::mapping)).
    pub mapping: Arc<Mapping>,
    /// What a backfill already copied, per table: skipped or applied idempotently.
    pub fences: Arc<crate::fence::Fences>,
    /// Two-way mode: detect, resolve and record conflicts (see [`crate::conflict`]); `None`
    /// (one-way sync) checks nothing.
    pub conflicts: Option<crate::conflict::ConflictOptions>,
    /// Fold a catch-up group, or one large source transaction (in memory or spilled, chunk by
    /// chunk), per key and apply it as set statements (see the crate's `fold`, `set` and
    /// `chunk` modules); off: every change in blue's order, row by row. Never in two-way mode.
    pub fold: bool,
}

impl ApplierOptions {
    /// Defaults for an applier recording its progress in `origin_name`.
    pub fn new(origin_name: impl Into<String>) -> Self {
        ApplierOptions {
            origin_name: origin_name.into(),
            application_name: "blueshift applier".to_owned(),
            synchronous_commit: SynchronousCommit::default(),
            statement_cache_capacity: 512,
            insert_batch_rows: 256,
            pipeline_depth: 1024,
            wire: true,
            mapping: Arc::default(),
            fences: Arc::default(),
            conflicts: None,
            fold: true,
        }
    }
}

/// The settings pinned on an applier's session (see the module docs), in the order they are set.
pub(crate) fn settings(options: &ApplierOptions) -> [(&'static str, &str); 10] {
    [
        ("session_replication_role", "replica"),
        ("default_transaction_read_only", "off"),
        ("row_security", "off"),
        ("DateStyle", "ISO"),
        ("TimeZone", "UTC"),
        ("IntervalStyle", "postgres"),
        ("extra_float_digits", "3"),
        ("bytea_output", "hex"),
        ("client_encoding", "UTF8"),
        ("synchronous_commit", options.synchronous_commit.as_str()),
    ]
}

/// Pins the session settings.
pub(crate) async fn pin(client: &Client, options: &ApplierOptions) -> Result<(), ApplyError> {
    for (setting, value) in settings(options) {
        client
            .execute(
                "SELECT pg_catalog.set_config($1, $2, false)",
                &[&setting, &value],
            )
            .await
            .map_err(|e| ApplyError::Session {
                setting,
                source: SqlError::from(e),
            })?;
    }
    Ok(())
}
