//! Conflicts of two-way sync: detected when a change is applied, resolved by a declared policy,
//! recorded in `blueshift.conflict` in the same transaction as the apply.
//!
//! Only an applier given [`ConflictOptions`] (the engine does so in `--bidirectional` mode)
//! looks: forward-only sync pays nothing. Such an applier takes every INSERT, UPDATE and DELETE
//! one at a time, and before each reads the rows it could collide with on the target side,
//! locked (`FOR UPDATE`), with the commit timestamp and origin of their last writer
//! (`pg_xact_commit_timestamp_origin(xmin)`, which needs `track_commit_timestamp = on`):
//!
//! ```text
//!  INSERT ─► a row holds one of its unique values ──────────► insert_exists
//!            rows hold values of two or more unique indexes ─► multiple_unique_conflicts
//!  UPDATE ─► no row has its key ─────────────────────────────► update_missing
//!            another row holds one of its new unique values ─► update_exists (two or more
//!                                                              indexes: multiple_unique_conflicts)
//!            the row was last written by another origin ─────► update_origin_differs
//!  DELETE ─► no row has its key ─────────────────────────────► delete_missing
//!            the row was last written by another origin ─────► delete_origin_differs
//! ```
//!
//! "Another origin" is anything but this direction's own appliers (`blueshift_<slot>_<n>`
//! forward, `blueshift_<slot>_r<n>` reverse): a local writer, or anyone else's replication. A
//! row version committed before two-way mode began ([`ConflictOptions::since`], the reverse
//! direction's `armed_at`) cannot race the other side and is no conflict (the backfill's rows on
//! green are local writes); nor is one whose timestamp is unknown (frozen, or written by the
//! open transaction itself).
//!
//! Each conflict is resolved by the table's [`Policy`] (else the global one) into
//! [`Resolution::ApplyRemote`] (the incoming change is applied; the local rows it collides with
//! on another unique index are deleted first; an UPDATE whose row is missing is inserted as a
//! whole row), [`Resolution::KeepLocal`] (the incoming change is not applied) or a stop
//! ([`ApplyError::Conflict`]). Under `last-writer-wins` the later commit timestamp wins and a
//! tie goes to **blue's** change. A delete has no timestamp left behind, so against an update of
//! the same row the **delete wins** on both sides: `update_missing` keeps local (the row stays
//! deleted) and `delete_origin_differs` applies the delete; both sides then converge whatever
//! order the two streams deliver in.
//!
//! `last-writer-wins` converges only for conflicts on one row: a collision with *another* row on
//! a unique index (`update_exists`, `multiple_unique_conflicts`, `insert_exists` on another key)
//! stops under it ([`Detector::refuses`]) — the winner's side would delete the loser's row while
//! the loser's side keeps its change, and neither side has the row as it was before.
//!
//! Tables found by REPLICA IDENTITY FULL, or without a key, are checked for unique collisions
//! of their INSERTs only; their UPDATEs and DELETEs keep the one-way rule (no row found: stop).
//! Partial and expression unique indexes are not checked.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use blueshift_decoder::pgoutput::{ColumnValue, PgTimestamp, TupleData};
use blueshift_decoder::Lsn;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use crate::client::SqlError;
use crate::error::ApplyError;
use crate::target::TargetTable;
use crate::value::Value;

mod apply;

/// `blueshift.conflict`, created when missing under blueshift's advisory lock for its state.
const SCHEMA: &str = "\
SELECT pg_catalog.pg_advisory_xact_lock(7235342165031183718);
SET LOCAL client_min_messages = warning;
CREATE SCHEMA IF NOT EXISTS blueshift;
CREATE TABLE IF NOT EXISTS blueshift.conflict (
    id bigserial PRIMARY KEY,
    detected_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    slot text NOT NULL,
    direction text NOT NULL,
    kind text NOT NULL,
    relation text NOT NULL,
    key jsonb,
    local_row jsonb,
    remote_row jsonb,
    local_commit_ts timestamptz,
    remote_commit_ts timestamptz NOT NULL,
    local_origin text,
    remote_origin text NOT NULL,
    local_lsn pg_lsn NOT NULL,
    remote_lsn pg_lsn NOT NULL,
    resolution text NOT NULL
)";

/// One row of `blueshift.conflict`. The rows go as `jsonb_object` of text values; timestamps as
/// microseconds since the Unix epoch; the local LSN is the target's WAL position at detection.
const RECORD: &str = "\
INSERT INTO blueshift.conflict (slot, direction, kind, relation, key, local_row, remote_row, \
    local_commit_ts, remote_commit_ts, local_origin, remote_origin, local_lsn, remote_lsn, \
    resolution) \
VALUES ($1::pg_catalog.text, $2::pg_catalog.text, $3::pg_catalog.text, $4::pg_catalog.text, \
    CASE WHEN pg_catalog.cardinality($5::pg_catalog.text[]) OPERATOR(pg_catalog.>) 0 \
         THEN pg_catalog.jsonb_object($5::pg_catalog.text[], $6::pg_catalog.text[]) END, \
    $7::pg_catalog.text::pg_catalog.jsonb, \
    pg_catalog.jsonb_object($8::pg_catalog.text[], $9::pg_catalog.text[]), \
    TIMESTAMPTZ 'epoch' OPERATOR(pg_catalog.+) \
        (INTERVAL '1 microsecond' OPERATOR(pg_catalog.*) $10::pg_catalog.float8), \
    TIMESTAMPTZ 'epoch' OPERATOR(pg_catalog.+) \
        (INTERVAL '1 microsecond' OPERATOR(pg_catalog.*) $11::pg_catalog.float8), \
    $12::pg_catalog.text, $13::pg_catalog.text, pg_catalog.pg_current_wal_insert_lsn(), \
    $14::pg_catalog.text::pg_catalog.pg_lsn, $15::pg_catalog.text)";

/// Green's unique indexes on plain columns (valid, not partial, not deferrable), one row per
/// key column in index order.
const UNIQUE_QUERY: &str = "\
SELECT ic.relname::pg_catalog.text, a.attname::pg_catalog.text \
FROM pg_catalog.pg_class c \
JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace \
JOIN pg_catalog.pg_index x ON x.indrelid OPERATOR(pg_catalog.=) c.oid \
JOIN pg_catalog.pg_class ic ON ic.oid OPERATOR(pg_catalog.=) x.indexrelid \
CROSS JOIN LATERAL pg_catalog.unnest(x.indkey::pg_catalog.int2[]) WITH ORDINALITY AS u(attnum, pos) \
JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) c.oid \
     AND a.attnum OPERATOR(pg_catalog.=) u.attnum \
WHERE n.nspname OPERATOR(pg_catalog.=) $1 AND c.relname OPERATOR(pg_catalog.=) $2 \
  AND x.indisunique AND x.indisvalid AND x.indimmediate \
  AND x.indexprs IS NULL AND x.indpred IS NULL AND u.pos OPERATOR(pg_catalog.<=) x.indnkeyatts \
ORDER BY x.indisprimary DESC, ic.relname, u.pos";

/// What to do with a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Policy {
    /// The change with the later commit timestamp wins; a tie goes to blue's; a delete wins over
    /// an update of the same row.
    LastWriterWins,
    /// Blue's change wins on both sides.
    BlueWins,
    /// Green's change wins on both sides.
    GreenWins,
    /// The incoming change is not applied: each side keeps its own row (no convergence).
    Skip,
    /// Stop with an error naming the table, the key and the kind (the default).
    Stop,
}

impl Policy {
    /// Its name on the command line and in the settings file.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::LastWriterWins => "last-writer-wins",
            Policy::BlueWins => "blue-wins",
            Policy::GreenWins => "green-wins",
            Policy::Skip => "skip",
            Policy::Stop => "stop",
        }
    }

    /// Every policy, for help texts.
    pub const ALL: [Policy; 5] = [
        Policy::LastWriterWins,
        Policy::BlueWins,
        Policy::GreenWins,
        Policy::Skip,
        Policy::Stop,
    ];
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Policy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Policy::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown conflict policy \"{s}\" — use one of {}",
                    Policy::ALL.map(Policy::as_str).join(", ")
                )
            })
    }
}

/// The policy of each table (`schema.name`), else the global one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policies {
    /// For tables not named.
    pub default: Policy,
    /// By table, `schema.name` unquoted.
    pub tables: BTreeMap<String, Policy>,
}

impl Default for Policies {
    fn default() -> Self {
        Policies {
            default: Policy::Stop,
            tables: BTreeMap::new(),
        }
    }
}

impl Policies {
    /// The policy of `table` (`schema.name`).
    pub fn of(&self, table: &str) -> Policy {
        self.tables.get(table).copied().unwrap_or(self.default)
    }
}

/// The kinds of conflict, named as PostgreSQL 18 names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// An INSERT found a row holding one of its unique values.
    InsertExists,
    /// An UPDATE found no row with its key.
    UpdateMissing,
    /// A DELETE found no row with its key.
    DeleteMissing,
    /// An UPDATE's row was last written by another origin.
    UpdateOriginDiffers,
    /// A DELETE's row was last written by another origin.
    DeleteOriginDiffers,
    /// An UPDATE's new unique values are held by another row.
    UpdateExists,
    /// A change collides with rows on two or more unique indexes.
    MultipleUniqueConflicts,
}

impl Kind {
    /// The name in logs, metrics and `blueshift.conflict`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::InsertExists => "insert_exists",
            Kind::UpdateMissing => "update_missing",
            Kind::DeleteMissing => "delete_missing",
            Kind::UpdateOriginDiffers => "update_origin_differs",
            Kind::DeleteOriginDiffers => "delete_origin_differs",
            Kind::UpdateExists => "update_exists",
            Kind::MultipleUniqueConflicts => "multiple_unique_conflicts",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What was done about a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resolution {
    /// The incoming change was applied.
    ApplyRemote,
    /// The incoming change was not applied.
    KeepLocal,
    /// Sync stopped.
    Stop,
}

impl Resolution {
    /// The name in metrics and `blueshift.conflict`.
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::ApplyRemote => "apply_remote",
            Resolution::KeepLocal => "keep_local",
            Resolution::Stop => "stop",
        }
    }
}

/// The side an applier writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Green: the forward direction's appliers; the incoming changes are blue's.
    Green,
    /// Blue: the reverse direction's appliers; the incoming changes are green's.
    Blue,
}

/// How an applier detects and resolves conflicts (two-way mode).
#[derive(Debug, Clone)]
pub struct ConflictOptions {
    /// The forward slot (recorded with each conflict).
    pub slot: String,
    /// `forward` or `reverse` (recorded, and the metrics' label).
    pub direction: &'static str,
    /// The side this applier writes to.
    pub target: Side,
    /// This direction's origins are this prefix followed by digits only.
    pub own_origin_prefix: String,
    /// The policies.
    pub policies: Arc<Policies>,
    /// When two-way mode began (the reverse direction's `armed_at`), microseconds since the Unix
    /// epoch; 0 while it is not armed (every local row version is then older). Shared with the
    /// engine, which sets it when it arms or finds the reverse direction.
    pub since: Arc<AtomicI64>,
}

impl PartialEq for ConflictOptions {
    fn eq(&self, other: &Self) -> bool {
        self.slot == other.slot
            && self.direction == other.direction
            && self.target == other.target
            && self.own_origin_prefix == other.own_origin_prefix
            && self.policies == other.policies
            && Arc::ptr_eq(&self.since, &other.since)
    }
}

impl Eq for ConflictOptions {}

/// A conflict stopped sync (policy `stop`): the text names the table, the key, the kind and
/// the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    /// The kind.
    pub kind: Kind,
    /// The table, `schema.name`.
    pub table: String,
    /// `(k)=(v)` of the row's key, when it has one.
    pub key: String,
    /// `forward` or `reverse`.
    pub direction: &'static str,
    /// Stopped by `last-writer-wins` on a collision with another row (see
    /// `Detector::refuses`), not by the policy `stop`.
    pub between_rows: bool,
}

impl Stopped {
    /// Why sync stopped and what to do, for the error text.
    pub fn reason(&self) -> &'static str {
        if self.between_rows {
            "the incoming change collides with another row (another key) on a unique index, \
             and last-writer-wins cannot make both sides converge on that (the losing row would \
             be deleted on one side only) — make the two rows' unique values differ by hand on \
             both sides, or give this table another policy (skip keeps each side's rows; stop), \
             and start sync again"
        } else {
            "the conflict policy is \"stop\" — decide which side wins and start sync again with \
             --conflict-policy last-writer-wins|blue-wins|green-wins|skip (or a policy for this \
             table under [reverse.conflict_policy_tables] in the settings file)"
        }
    }
}

/// What an incoming change collides with on the target's unique indexes.
#[derive(Debug)]
pub(crate) struct Collisions {
    /// The local rows, each once.
    pub(crate) locals: Vec<Local>,
    /// How many unique indexes it collides on.
    pub(crate) indexes: usize,
    /// Whether one of the rows is another row than the incoming one (an UPDATE's collision is
    /// always with another row; an INSERT's is when the row does not hold its key).
    pub(crate) other_rows: bool,
}

/// A local row an incoming change collides with.
#[derive(Debug, Clone)]
pub(crate) struct Local {
    /// `tableoid`, for deleting exactly it.
    tableoid: i64,
    /// `ctid` as text.
    ctid: String,
    /// The row as `row_to_json`.
    json: String,
    /// Its last writer's commit time, microseconds since the Unix epoch (unknown: frozen, or
    /// the open transaction).
    commit_ts: Option<i64>,
    /// Its last writer's origin name; `None` for a local writer (roident 0).
    origin: Option<String>,
    /// The last writer's roident (NULL when unknown).
    roident: Option<i64>,
}

/// The incoming change's transaction.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Remote<'t> {
    pub(crate) commit_lsn: Lsn,
    pub(crate) commit_time: PgTimestamp,
    /// The transaction's origin on its side, when it was replayed there from elsewhere.
    pub(crate) origin: Option<&'t str>,
}

/// A unique index of green's table, by its columns in [`TargetTable::columns`].
#[derive(Debug, Clone)]
struct Unique {
    name: String,
    columns: Vec<usize>,
}

/// An applier's conflict state: the options, green's unique indexes and the lookups prepared
/// per table, and the conflicts of the open transaction (counted once it commits).
#[derive(Debug)]
pub(crate) struct Detector {
    pub(crate) options: ConflictOptions,
    uniques: HashMap<u64, Arc<Vec<Unique>>>,
    lookups: HashMap<(u64, Vec<usize>), Statement>,
    deletes: HashMap<u64, Statement>,
    /// Detected in the open transaction.
    pending: Vec<(Kind, Resolution)>,
    /// Committed, not yet taken by the engine.
    committed: Vec<(Kind, Resolution)>,
}

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

impl Detector {
    pub(crate) fn new(options: ConflictOptions) -> Self {
        Detector {
            options,
            uniques: HashMap::new(),
            lookups: HashMap::new(),
            deletes: HashMap::new(),
            pending: Vec::new(),
            committed: Vec::new(),
        }
    }

    /// Creates `blueshift.conflict` when missing.
    pub(crate) async fn set_up(client: &Client) -> Result<(), ApplyError> {
        client
            .batch_execute(&format!("BEGIN; {SCHEMA}; COMMIT"))
            .await
            .map_err(|e| ApplyError::Catalog {
                table: "blueshift.conflict".to_owned(),
                source: SqlError::from(e),
            })
    }

    /// A transaction begins: forget what a rolled-back attempt detected.
    pub(crate) fn begin(&mut self) {
        self.pending.clear();
    }

    /// The open transaction committed.
    pub(crate) fn committed(&mut self) {
        self.committed.append(&mut self.pending);
    }

    /// The conflicts of committed transactions since the last call.
    pub(crate) fn take(&mut self) -> Vec<(Kind, Resolution)> {
        std::mem::take(&mut self.committed)
    }

    /// Forgets what was read of green's tables.
    pub(crate) fn forget_tables(&mut self) {
        self.uniques.clear();
        self.lookups.clear();
        self.deletes.clear();
    }

    /// Green's unique indexes of `target` whose every column is carried.
    async fn uniques(
        &mut self,
        client: &Client,
        target: &TargetTable,
    ) -> Result<Arc<Vec<Unique>>, ApplyError> {
        if let Some(found) = self.uniques.get(&target.id) {
            return Ok(Arc::clone(found));
        }
        let rows = client
            .query(UNIQUE_QUERY, &[&target.schema, &target.name])
            .await
            .map_err(|e| catalog(target, e))?;
        let mut found: Vec<(String, Option<Vec<usize>>)> = Vec::new();
        for row in rows {
            let (index, column): (String, String) = (row.get(0), row.get(1));
            if found.last().is_none_or(|(name, _)| *name != index) {
                found.push((index, Some(Vec::new())));
            }
            let slot = &mut found.last_mut().expect("pushed above").1;
            match target.columns.iter().position(|c| c.name == column) {
                Some(c) => {
                    if let Some(columns) = slot {
                        columns.push(c);
                    }
                }
                // A column blue does not send: the index cannot be checked.
                None => *slot = None,
            }
        }
        let uniques: Arc<Vec<Unique>> = Arc::new(
            found
                .into_iter()
                .filter_map(|(name, columns)| {
                    Some(Unique {
                        name,
                        columns: columns?,
                    })
                })
                .filter(|u| !u.columns.is_empty())
                .collect(),
        );
        self.uniques.insert(target.id, Arc::clone(&uniques));
        Ok(uniques)
    }

    /// The rows of `target` whose `columns` equal `row`'s values, locked, with their last
    /// writer; none when one of the values is NULL or not sent.
    pub(crate) async fn lookup(
        &mut self,
        client: &Client,
        target: &TargetTable,
        columns: &[usize],
        row: &TupleData,
    ) -> Result<Vec<Local>, ApplyError> {
        let mut values = Vec::with_capacity(columns.len());
        for &c in columns {
            match Value::of(&row.columns[target.columns[c].blue]) {
                Some(Value::Null) | None => return Ok(Vec::new()),
                Some(v) => values.push(v),
            }
        }
        let key = (target.id, columns.to_vec());
        let statement = match self.lookups.get(&key) {
            Some(s) => s.clone(),
            None => {
                let s = client
                    .prepare(&lookup_sql(target, columns))
                    .await
                    .map_err(|e| catalog(target, e))?;
                self.lookups.insert(key, s.clone());
                s
            }
        };
        let refs: Vec<&(dyn ToSql + Sync)> =
            values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        let rows = client
            .query(&statement, &refs)
            .await
            .map_err(|e| statement_error(target, e))?;
        Ok(rows
            .iter()
            .map(|r| Local {
                tableoid: r.get(0),
                ctid: r.get(1),
                json: r.get(2),
                commit_ts: r.get(3),
                roident: r.get(4),
                origin: r.get(5),
            })
            .collect())
    }

    /// The rows other than `except` that hold one of `row`'s values of a unique index of
    /// `target`, with how many indexes they violate.
    pub(crate) async fn unique_collisions(
        &mut self,
        client: &Client,
        target: &TargetTable,
        row: &TupleData,
        except: Option<&Local>,
    ) -> Result<Collisions, ApplyError> {
        let uniques = self.uniques(client, target).await?;
        let key = target_key(target);
        let mut found: Vec<Local> = Vec::new();
        // Rows holding the incoming row's key (an INSERT's same row, not another one).
        let mut same_key: Vec<usize> = Vec::new();
        let mut indexes = 0;
        for unique in uniques.iter() {
            let rows = self.lookup(client, target, &unique.columns, row).await?;
            let mut violated = false;
            let is_key = except.is_none() && !key.is_empty() && same_columns(&unique.columns, &key);
            for local in rows {
                if except.is_some_and(|e| e.same_row(&local)) {
                    continue;
                }
                violated = true;
                let at = match found.iter().position(|f| f.same_row(&local)) {
                    Some(at) => at,
                    None => {
                        found.push(local);
                        found.len() - 1
                    }
                };
                if is_key {
                    same_key.push(at);
                }
            }
            if violated {
                tracing::debug!(table = %target.display, index = %unique.name, "incoming change collides on a unique index");
                indexes += 1;
            }
        }
        let other_rows = (0..found.len()).any(|at| !same_key.contains(&at));
        Ok(Collisions {
            locals: found,
            indexes,
            other_rows,
        })
    }

    /// Whether the table's policy, `last-writer-wins`, cannot promise that both sides converge
    /// on this conflict: the incoming change collides with *another* row (another key) on a
    /// unique index. The winner's side would delete the loser's row, the loser's side keep its
    /// own change, and a row overwritten on one side cannot be put back from the other:
    /// `update_exists`, `multiple_unique_conflicts` and `insert_exists` on another key stop.
    pub(crate) fn refuses(&self, table: &str, collisions: &Collisions) -> bool {
        self.options.policies.of(table) == Policy::LastWriterWins && collisions.other_rows
    }

    /// The stop of a conflict [`Detector::refuses`] to resolve.
    pub(crate) fn refusal(&self, target: &TargetTable, kind: Kind, row: &TupleData) -> ApplyError {
        ApplyError::Conflict(Box::new(Stopped {
            kind,
            table: target.display.clone(),
            key: key_text(target, row),
            direction: self.options.direction,
            between_rows: true,
        }))
    }

    /// Whether `local` was last written by another origin than this direction's, after two-way
    /// mode began.
    pub(crate) fn origin_differs(&self, local: &Local) -> bool {
        let Some(ts) = local.commit_ts else {
            return false;
        };
        let since = self.options.since.load(Ordering::Acquire);
        if since == 0 || ts < since {
            return false;
        }
        match (&local.origin, local.roident) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(name), Some(_)) => !name
                .strip_prefix(self.options.own_origin_prefix.as_str())
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
        }
    }

    /// What the policy of `table` says about `kind` against `locals` (empty for a missing row).
    pub(crate) fn resolve(
        &self,
        kind: Kind,
        table: &str,
        remote: Remote<'_>,
        locals: &[Local],
    ) -> Resolution {
        let remote_is_blue = self.options.target == Side::Green;
        let remote_wins = |yes: bool| {
            if yes {
                Resolution::ApplyRemote
            } else {
                Resolution::KeepLocal
            }
        };
        match self.options.policies.of(table) {
            Policy::Stop => Resolution::Stop,
            Policy::Skip => Resolution::KeepLocal,
            Policy::BlueWins => remote_wins(remote_is_blue),
            Policy::GreenWins => remote_wins(!remote_is_blue),
            Policy::LastWriterWins => match kind {
                // No timestamp of the delete is left: the delete wins, on both sides.
                Kind::UpdateMissing | Kind::DeleteMissing => Resolution::KeepLocal,
                Kind::DeleteOriginDiffers => Resolution::ApplyRemote,
                Kind::InsertExists
                | Kind::UpdateOriginDiffers
                | Kind::UpdateExists
                | Kind::MultipleUniqueConflicts => {
                    let remote_ts = remote.commit_time.0.saturating_add(PG_EPOCH_UNIX_MICROS);
                    let newest = locals.iter().filter_map(|l| l.commit_ts).max();
                    remote_wins(match newest {
                        None => true,
                        Some(local) if remote_ts == local => remote_is_blue,
                        Some(local) => remote_ts > local,
                    })
                }
            },
        }
    }

    /// Records a conflict in `blueshift.conflict` (in the open transaction) and counts it once
    /// the transaction commits; a stop is returned as the error.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn record(
        &mut self,
        client: &Client,
        target: &TargetTable,
        kind: Kind,
        resolution: Resolution,
        remote: Remote<'_>,
        remote_row: &TupleData,
        locals: &[Local],
    ) -> Result<(), ApplyError> {
        let key = key_text(target, remote_row);
        let direction = self.options.direction;
        if resolution == Resolution::Stop {
            return Err(ApplyError::Conflict(Box::new(Stopped {
                kind,
                table: target.display.clone(),
                key,
                direction,
                between_rows: false,
            })));
        }
        tracing::info!(direction, kind = %kind, table = %target.display, resolution = resolution.as_str(), "conflict");
        let (key_names, key_values) = texts(target, remote_row, &target_key(target));
        let all: Vec<usize> = (0..target.columns.len()).collect();
        let (names, values) = texts(target, remote_row, &all);
        let local_row = match locals {
            [] => None,
            [one] => Some(one.json.clone()),
            many => Some(format!(
                "[{}]",
                many.iter()
                    .map(|l| l.json.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            )),
        };
        let newest = locals.iter().max_by_key(|l| l.commit_ts);
        let local_ts = newest.and_then(|l| l.commit_ts).map(|t| t as f64);
        let local_origin = newest.map(|l| match (&l.origin, l.roident) {
            (Some(name), _) => name.clone(),
            (None, Some(_)) => "local".to_owned(),
            (None, None) => "unknown".to_owned(),
        });
        let remote_ts = remote.commit_time.0.saturating_add(PG_EPOCH_UNIX_MICROS) as f64;
        let remote_origin = remote.origin.unwrap_or("local");
        let remote_lsn = remote.commit_lsn.to_string();
        client
            .execute(
                RECORD,
                &[
                    &self.options.slot,
                    &direction,
                    &kind.as_str(),
                    &target.display,
                    &key_names,
                    &key_values,
                    &local_row,
                    &names,
                    &values,
                    &local_ts,
                    &remote_ts,
                    &local_origin,
                    &remote_origin,
                    &remote_lsn,
                    &resolution.as_str(),
                ],
            )
            .await
            .map_err(|e| ApplyError::Catalog {
                table: "blueshift.conflict".to_owned(),
                source: SqlError::from(e),
            })?;
        self.pending.push((kind, resolution));
        Ok(())
    }

    /// Deletes exactly the rows `locals` (an incoming change that wins over them).
    pub(crate) async fn delete(
        &mut self,
        client: &Client,
        target: &TargetTable,
        locals: &[Local],
    ) -> Result<(), ApplyError> {
        let statement = match self.deletes.get(&target.id) {
            Some(s) => s.clone(),
            None => {
                let sql = format!(
                    "DELETE FROM {} WHERE tableoid OPERATOR(pg_catalog.=) \
                     $1::pg_catalog.int8::pg_catalog.oid AND ctid OPERATOR(pg_catalog.=) \
                     $2::pg_catalog.text::pg_catalog.tid",
                    target.quoted
                );
                let s = client.prepare(&sql).await.map_err(|e| catalog(target, e))?;
                self.deletes.insert(target.id, s.clone());
                s
            }
        };
        for local in locals {
            client
                .execute(&statement, &[&local.tableoid, &local.ctid])
                .await
                .map_err(|e| statement_error(target, e))?;
        }
        Ok(())
    }
}

impl Local {
    fn same_row(&self, other: &Local) -> bool {
        self.tableoid == other.tableoid && self.ctid == other.ctid
    }
}

/// The key columns to name a row by: blue's replica identity key, else green's primary key.
fn target_key(target: &TargetTable) -> Vec<usize> {
    if !target.key.is_empty() && !target.identity_full {
        target.key.clone()
    } else {
        target.green_key.clone()
    }
}

/// Whether two column lists name the same columns, in any order.
fn same_columns(a: &[usize], b: &[usize]) -> bool {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort_unstable();
    b.sort_unstable();
    a == b
}

/// `(k1, k2)=(v1, v2)` of `row`'s key, or `(no key)`.
fn key_text(target: &TargetTable, row: &TupleData) -> String {
    let (names, values) = texts(target, row, &target_key(target));
    if names.is_empty() {
        return "(no key)".to_owned();
    }
    format!(
        "({})=({})",
        names.join(", "),
        values
            .iter()
            .map(|v| v.as_deref().unwrap_or("NULL"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Green's names and the text of `row`'s values of `columns` (unchanged TOAST left out;
/// binary values as `\x` hex).
fn texts(
    target: &TargetTable,
    row: &TupleData,
    columns: &[usize],
) -> (Vec<String>, Vec<Option<String>>) {
    let mut names = Vec::with_capacity(columns.len());
    let mut values = Vec::with_capacity(columns.len());
    for &c in columns {
        let Some(column) = target.columns.get(c) else {
            continue;
        };
        let value = match row.columns.get(column.blue) {
            Some(ColumnValue::Null) => None,
            Some(ColumnValue::Text(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            Some(ColumnValue::Binary(b)) => {
                let mut hex = String::with_capacity(2 + 2 * b.len());
                hex.push_str("\\x");
                for byte in b.iter() {
                    hex.push_str(&format!("{byte:02x}"));
                }
                Some(hex)
            }
            Some(ColumnValue::UnchangedToast) | None => continue,
        };
        names.push(column.name.clone());
        values.push(value);
    }
    (names, values)
}

/// `SELECT` of the rows whose `columns` equal the parameters, locked, with their last writer.
fn lookup_sql(target: &TargetTable, columns: &[usize]) -> String {
    let conditions: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(n, &c)| {
            let column = &target.columns[c];
            format!(
                "t.{} OPERATOR({}) ${}",
                column.quoted,
                column.equality,
                n + 1
            )
        })
        .collect();
    format!(
        "SELECT t.tableoid::pg_catalog.int8, t.ctid::pg_catalog.text, \
                pg_catalog.row_to_json(t.*)::pg_catalog.text, \
                (pg_catalog.extract('epoch', c.\"timestamp\") OPERATOR(pg_catalog.*) 1000000)::pg_catalog.int8, \
                c.roident::pg_catalog.int8, o.roname::pg_catalog.text \
           FROM {} AS t \
           LEFT JOIN LATERAL pg_catalog.pg_xact_commit_timestamp_origin(t.xmin) AS c ON true \
           LEFT JOIN pg_catalog.pg_replication_origin AS o ON o.roident OPERATOR(pg_catalog.=) c.roident \
          WHERE {} FOR UPDATE OF t",
        target.quoted,
        conditions.join(" AND ")
    )
}

fn catalog(target: &TargetTable, e: tokio_postgres::Error) -> ApplyError {
    ApplyError::Catalog {
        table: target.display.clone(),
        source: SqlError::from(e),
    }
}

fn statement_error(target: &TargetTable, e: tokio_postgres::Error) -> ApplyError {
    ApplyError::Statement {
        table: target.display.clone(),
        operation: crate::error::Operation::Update,
        culprit: None,
        source: crate::diagnose::redact(SqlError::from(e)),
    }
}

#[cfg(test)]
mod tests;
