//! Turning a transaction's changes into statements on green, in blue's order.
//!
//! Only the columns that land on green are sent (see [`target`](crate::target)): a column
//! dropped on green is left out of every statement, a green-only column takes its default.
//! Consecutive inserts into one table are sent together as multi-row INSERTs (at most
//! `insert_batch_rows` rows and 65535 parameters each; a remainder goes in power-of-two sized
//! statements, so each table needs only a few prepared shapes). An UPDATE sets every column
//! that was sent — an unchanged TOAST value is left out, so green keeps its own copy — and
//! finds its row by the replica identity key, or under REPLICA IDENTITY FULL by the exact image
//! of every old value sent (NULL matching NULL), through an index green has on columns the old
//! row holds values for, touching exactly one row even among duplicates. An UPDATE or DELETE
//! that finds no row means green diverged: an error raised on green itself, never a silent
//! skip. Statements go through the [`Pipeline`](crate::pipeline::Pipeline), answered in order.
//!
//! A TRUNCATE truncates exactly the tables blue sent, as native apply does: `ONLY` each (a
//! partitioned table with its partitions), never `CASCADE`, `RESTART IDENTITY` only when blue
//! ran it. A green table outside that set whose foreign key references one of them would make
//! green's TRUNCATE fail (or, with CASCADE, empty a table blue never touched): it is looked up
//! first and named in [`ApplyError::TruncateReferenced`].

use std::borrow::Cow;
use std::io;
use std::sync::Arc;

use blueshift_decoder::pgoutput::{ColumnValue, OldTuple, ReplicaIdentity, TupleData};
use blueshift_decoder::relation::RelationInfo;
use tokio_postgres::Client;

use crate::chunk::{row_bytes, value_bytes, STATEMENT_MAX_BYTES};
use crate::client::SqlError;
use crate::conflict::{Detector, Remote};
use crate::diagnose;
use crate::error::{ApplyError, ForeignKey, Operation};
use crate::fence::{Action, Fences};
use crate::pipeline::{Pipeline, Prepared as Statement};
use crate::statement::{self, Locate, Shape, StatementCache};
use crate::target::{TargetCache, TargetTable};
use crate::transaction::{Change, Changes, SpilledChanges};
use blueshift_decoder::Lsn;

/// PostgreSQL's limit on the parameters of one statement.
const MAX_PARAMETERS: usize = 65_535;

/// The changes of a transaction, one at a time, borrowed when in memory.
enum Cursor<'c> {
    Memory(std::slice::Iter<'c, Change>),
    Spilled {
        changes: &'c mut dyn SpilledChanges,
        read: u64,
    },
}

impl<'c> Cursor<'c> {
    fn new(changes: &'c mut Changes) -> Self {
        match changes {
            Changes::InMemory(changes) => Cursor::Memory(changes.iter()),
            Changes::Spilled(spilled) => Cursor::Spilled {
                changes: spilled.as_mut(),
                read: 0,
            },
        }
    }

    fn next(&mut self) -> io::Result<Option<Cow<'c, Change>>> {
        match self {
            Cursor::Memory(changes) => Ok(changes.next().map(Cow::Borrowed)),
            Cursor::Spilled { changes, read } => {
                let change = changes.next_change()?;
                if change.is_some() {
                    *read += 1;
                } else if *read != changes.len() {
                    // A spill is read once: applying it again (after a rollback) would silently
                    // apply fewer changes than blue committed.
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "the spilled transaction gave {read} of its {} changes (was it \
                             applied before and rolled back? a spill can be read only once)",
                            changes.len()
                        ),
                    ));
                }
                Ok(change.map(Cow::Owned))
            }
        }
    }
}

/// Writes changes to green inside an open transaction.
pub(crate) struct ChangeWriter<'a> {
    pub(crate) client: &'a Client,
    /// What a backfill already copied (see [`crate::fence`]).
    pub(crate) fences: &'a Fences,
    /// The commit position of the source transaction(s) being written: what fences compare.
    pub(crate) commit_lsn: Lsn,
    pub(crate) targets: &'a mut TargetCache,
    pub(crate) statements: &'a mut StatementCache,
    pub(crate) insert_batch_rows: usize,
    /// Whether the `COMMIT` follows these statements down the pipeline before their answers
    /// are read: an UPDATE or DELETE that finds no row must then fail on green itself (the
    /// checked form of [`statement`](crate::statement)). Otherwise the plain statement is sent,
    /// and its row count read before anything commits.
    pub(crate) commit_in_flight: bool,
    pub(crate) pipeline: Pipeline<'a>,
    /// Fold the changes (a catch-up group held in memory) and apply them as set statements
    /// (see [`crate::fold`], [`crate::set`]).
    pub(crate) fold: bool,
    /// Two-way mode: each change is checked for conflicts first (see [`crate::conflict`]).
    pub(crate) conflicts: Option<(&'a mut Detector, Remote<'a>)>,
    /// Bytes of parameters sent since the pipeline was last drained (see [`crate::chunk`]).
    pub(crate) in_flight_bytes: usize,
}

impl ChangeWriter<'_> {
    /// Applies every change, in order, then with `commit` (the origin tag and the `COMMIT`, one
    /// message: `Applier`'s `commit_sql`) sends it behind them, and waits for every answer. `on_spill_error` turns a spill file error into the
    /// transaction's error. The error returned is the first in blue's order: a statement that
    /// failed in the pipeline explains the failures after it.
    pub(crate) async fn write_all(
        &mut self,
        changes: &mut Changes,
        on_spill_error: impl Fn(io::Error) -> ApplyError,
        commit: Option<String>,
    ) -> Result<(), ApplyError> {
        match self.write_changes(changes, on_spill_error).await {
            Ok(()) => {
                if let Some(sql) = commit {
                    let commit_lsn = self.commit_lsn;
                    let sent = self
                        .pipeline
                        .commit(sql, move |source| ApplyError::Transaction {
                            step: "COMMIT",
                            commit_lsn: commit_lsn.to_string(),
                            source,
                        })
                        .await;
                    if let Err(e) = sent {
                        return Err(self.pipeline.explain(e).await);
                    }
                    // Test builds: a crash with the COMMIT on its way, its answer unread (on the
                    // wire session the window is sent by `drain`, which passes it there).
                    if !self.pipeline.is_wire() {
                        crate::failpoint::hit("commit-in-flight");
                    }
                }
                self.pipeline.drain().await
            }
            Err(e) => Err(self.pipeline.explain(e).await),
        }
    }

    async fn write_changes(
        &mut self,
        changes: &mut Changes,
        on_spill_error: impl Fn(io::Error) -> ApplyError,
    ) -> Result<(), ApplyError> {
        if self.fold && self.conflicts.is_none() {
            return self.write_chunked(changes, on_spill_error).await;
        }
        let mut cursor = Cursor::new(changes);
        if self.conflicts.is_some() {
            // One change at a time, each checked against the rows it could collide with.
            loop {
                match cursor.next() {
                    Ok(Some(change)) => self.write_detected(&change).await?,
                    Ok(None) => return Ok(()),
                    Err(e) => return Err(on_spill_error(e)),
                }
            }
        }
        self.write_in_order(|| cursor.next().map_err(&on_spill_error))
            .await
    }

    /// Applies the changes `next` yields, in order: consecutive inserts into one table as
    /// multi-row INSERTs, every other change on its own.
    pub(crate) async fn write_in_order<'c>(
        &mut self,
        mut next: impl FnMut() -> Result<Option<Cow<'c, Change>>, ApplyError>,
    ) -> Result<(), ApplyError> {
        let mut batch: Vec<Cow<'_, TupleData>> = Vec::new();
        let mut batch_bytes = 0;
        let mut batch_target: Option<Arc<TargetTable>> = None;
        loop {
            let change = match next()? {
                Some(change) => change,
                None => break,
            };
            let (relation, row) = match change {
                Cow::Borrowed(Change::Insert { relation, new }) => {
                    (Cow::Borrowed(relation), Cow::Borrowed(new))
                }
                Cow::Owned(Change::Insert { relation, new }) => {
                    (Cow::Owned(relation), Cow::Owned(new))
                }
                other => {
                    if let Some(target) = batch_target.take() {
                        self.insert(&target, &batch).await?;
                        batch.clear();
                    }
                    self.write_one(&other).await?;
                    continue;
                }
            };
            if self.action(&relation) == Action::Skip {
                continue;
            }
            let target = self.resolve(&relation).await?;
            let same = batch_target
                .as_ref()
                .is_some_and(|t| Arc::ptr_eq(t, &target));
            if !same || batch.len() >= self.max_rows(&target) || batch_bytes >= STATEMENT_MAX_BYTES
            {
                if let Some(previous) = batch_target.take() {
                    self.insert(&previous, &batch).await?;
                    batch.clear();
                }
                batch_bytes = 0;
            }
            batch_target = Some(target);
            batch_bytes += row_bytes(&row);
            batch.push(row);
        }
        if let Some(target) = batch_target {
            self.insert(&target, &batch).await?;
        }
        Ok(())
    }

    /// What the fences say about changes to `relation` in this transaction.
    pub(crate) fn action(&self, relation: &RelationInfo) -> Action {
        let name = relation.name();
        self.fences
            .action(name.schema(), &name.name, self.commit_lsn)
    }

    /// The target table of `relation`, loaded from green's catalog on first use.
    pub(crate) async fn resolve(
        &mut self,
        relation: &Arc<RelationInfo>,
    ) -> Result<Arc<TargetTable>, ApplyError> {
        self.targets.resolve(self.client, relation).await
    }

    /// Rows per INSERT statement on `target`.
    fn max_rows(&self, target: &TargetTable) -> usize {
        match target.columns.len() {
            0 => 1,
            width => self.insert_batch_rows.clamp(1, MAX_PARAMETERS / width),
        }
    }

    /// Inserts `rows` into `target`: full statements of `max_rows`, the rest in powers of two.
    pub(crate) async fn insert(
        &mut self,
        target: &Arc<TargetTable>,
        rows: &[Cow<'_, TupleData>],
    ) -> Result<(), ApplyError> {
        let upsert = self
            .fences
            .action(&target.schema, &target.name, self.commit_lsn)
            == Action::Reconcile;
        if upsert && target.green_key.is_empty() {
            return Err(ApplyError::CannotReconcile {
                table: target.display.clone(),
                reason: "green's table has no primary key to merge an INSERT on",
            });
        }
        let max = self.max_rows(target);
        let mut rest = rows;
        while !rest.is_empty() {
            let n = if rest.len() >= max {
                max
            } else {
                1 << rest.len().ilog2()
            };
            let (chunk, after) = rest.split_at(n);
            rest = after;
            let mut params = Vec::with_capacity(n * target.columns.len());
            for row in chunk {
                check_width(target, row)?;
                for column in &target.columns {
                    let value = &row.columns[column.blue];
                    if matches!(value, ColumnValue::UnchangedToast) {
                        return Err(ApplyError::ToastInInsert {
                            table: target.display.clone(),
                            column: column.name.clone(),
                        });
                    }
                    params.push(value.clone());
                }
            }
            let shape = if upsert {
                Shape::Upsert { rows: n }
            } else {
                Shape::Insert { rows: n }
            };
            let statement = self.statement(target, &shape).await?;
            self.hold(params.iter().map(value_bytes).sum()).await?;
            self.pipeline
                .send(Arc::clone(target), shape, statement, params)
                .await?;
        }
        Ok(())
    }

    /// Applies one UPDATE, DELETE or TRUNCATE (or a lone INSERT).
    pub(crate) async fn write_one(&mut self, change: &Change) -> Result<(), ApplyError> {
        match change {
            Change::Insert { relation, new } => {
                let target = self.resolve(relation).await?;
                self.insert(&target, &[Cow::Borrowed(new)]).await
            }
            Change::Update { relation, old, new } => {
                let action = self.action(relation);
                if action == Action::Skip {
                    return Ok(());
                }
                let target = self.resolve(relation).await?;
                check_width(&target, new)?;
                let set: Box<[usize]> = present(&target, new);
                if action == Action::Reconcile {
                    if set.len() == target.columns.len() {
                        // The whole new row: the old one goes (if green has it), this one is
                        // merged in by its key.
                        if let Some(old) = old {
                            self.delete(relation, &target, old, false).await?;
                        }
                        return self.insert(&target, &[Cow::Borrowed(new)]).await;
                    }
                    if old.is_some() {
                        return Err(ApplyError::CannotReconcile {
                            table: target.display.clone(),
                            reason: "an UPDATE that changed the key (or under REPLICA IDENTITY \
                                     FULL) left a TOASTed value unchanged, so blue did not send it",
                        });
                    }
                    // Same key, unchanged TOAST kept from green's row: it must be there.
                }
                let (locate, source) =
                    locate(&target, relation, Operation::Update, old.as_ref(), new)?;
                let mut params: Vec<ColumnValue> = set
                    .iter()
                    .map(|&c| new.columns[target.columns[c].blue].clone())
                    .collect();
                push_locating(&mut params, &target, &locate, source);
                let shape = Shape::Update {
                    set,
                    locate,
                    checked: self.commit_in_flight,
                };
                let statement = self.statement(&target, &shape).await?;
                self.hold(params.iter().map(value_bytes).sum()).await?;
                self.pipeline.send(target, shape, statement, params).await
            }
            Change::Delete { relation, old } => {
                let action = self.action(relation);
                if action == Action::Skip {
                    return Ok(());
                }
                let target = self.resolve(relation).await?;
                self.delete(relation, &target, old, action == Action::Apply)
                    .await
            }
            Change::Truncate {
                relations,
                cascade,
                restart_identity,
            } => {
                let mut targets = Vec::with_capacity(relations.len());
                for relation in relations {
                    if self.action(relation) != Action::Skip {
                        targets.push(self.resolve(relation).await?);
                    }
                }
                if targets.is_empty() {
                    return Ok(());
                }
                // Not pipelined: an unprepared statement is sent in two steps.
                self.pipeline.drain().await?;
                let listed = targets
                    .iter()
                    .map(|t| format!("\"{}\"", t.display))
                    .collect::<Vec<_>>()
                    .join(", ");
                if *cascade {
                    tracing::debug!(tables = %listed, "blue truncated with CASCADE: green truncates only the tables blue sent");
                }
                let referencing = referencing_tables(self.client, &targets).await?;
                if !referencing.is_empty() {
                    return Err(ApplyError::TruncateReferenced {
                        tables: listed,
                        referencing,
                    });
                }
                let names: Vec<(&str, bool)> = targets
                    .iter()
                    .map(|t| (t.quoted.as_str(), t.partitioned))
                    .collect();
                let sql = statement::truncate_sql(&names, *restart_identity);
                let table = targets
                    .iter()
                    .map(|t| t.display.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                self.pipeline
                    .run(&sql, move |source| ApplyError::Statement {
                        table: table.clone(),
                        operation: Operation::Truncate,
                        culprit: None,
                        source: diagnose::redact(source),
                    })
                    .await?;
                self.pipeline.rows.truncated += u64::try_from(targets.len()).unwrap_or(u64::MAX);
                Ok(())
            }
        }
    }

    /// Deletes the row `old` identifies; a missing row is an error only when `must_touch`.
    async fn delete(
        &mut self,
        relation: &RelationInfo,
        target: &Arc<TargetTable>,
        old: &OldTuple,
        must_touch: bool,
    ) -> Result<(), ApplyError> {
        let (locate, source) = locate(target, relation, Operation::Delete, Some(old), old.tuple())?;
        let mut params = Vec::with_capacity(locate.columns().len());
        push_locating(&mut params, target, &locate, source);
        let shape = Shape::Delete {
            locate,
            checked: must_touch && self.commit_in_flight,
        };
        let statement = self.statement(target, &shape).await?;
        self.hold(params.iter().map(value_bytes).sum()).await?;
        self.pipeline
            .send_checked(Arc::clone(target), shape, statement, params, must_touch)
            .await
    }

    /// The prepared statement of `shape` on `target`, prepared on first use.
    pub(crate) async fn statement(
        &mut self,
        target: &TargetTable,
        shape: &Shape,
    ) -> Result<Statement, ApplyError> {
        if let Some(statement) = self.statements.get(target.id, shape) {
            return Ok(statement);
        }
        let operation = shape.operation();
        let sql = statement::sql(target, shape);
        let statement = self
            .pipeline
            .prepare(sql, |source| ApplyError::Statement {
                table: target.display.clone(),
                operation,
                culprit: None,
                source: diagnose::redact(source),
            })
            .await?;
        tracing::debug!(table = %target.display, operation = %operation, cached = self.statements.len(), "statement prepared");
        if let Some(evicted) = self
            .statements
            .insert(target.id, shape.clone(), statement.clone())
        {
            self.pipeline.forget(evicted);
        }
        Ok(statement)
    }
}

/// Green's foreign keys that reference one of `targets` (or their partitions) from a table
/// outside them and their partitions: what would make a TRUNCATE of exactly `targets` fail.
const REFERENCING_SQL: &str = "\
WITH named AS ( \
  SELECT c.oid FROM pg_catalog.pg_class c \
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
    JOIN ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), pg_catalog.unnest($2::pg_catalog.text[])) AS t(nspname, relname) \
      ON n.nspname = t.nspname AND c.relname = t.relname), \
truncated AS ( \
  SELECT named.oid AS relid FROM named \
  UNION SELECT p.relid FROM named CROSS JOIN LATERAL pg_catalog.pg_partition_tree(named.oid) p) \
SELECT DISTINCT rn.nspname::text, r.relname::text, k.conname::text, \
       fn.nspname::text || '.' || f.relname::text \
  FROM pg_catalog.pg_constraint k \
  JOIN pg_catalog.pg_class r ON r.oid = k.conrelid \
  JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace \
  JOIN pg_catalog.pg_class f ON f.oid = k.confrelid \
  JOIN pg_catalog.pg_namespace fn ON fn.oid = f.relnamespace \
 WHERE k.contype = 'f' AND k.conparentid = 0 \
   AND k.confrelid IN (SELECT relid FROM truncated) \
   AND k.conrelid NOT IN (SELECT relid FROM truncated) \
 ORDER BY 1, 2, 3";

/// The foreign keys of [`REFERENCING_SQL`].
async fn referencing_tables(
    client: &Client,
    targets: &[Arc<TargetTable>],
) -> Result<Vec<ForeignKey>, ApplyError> {
    let schemas: Vec<&str> = targets.iter().map(|t| t.schema.as_str()).collect();
    let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
    let rows = client
        .query(REFERENCING_SQL, &[&schemas, &names])
        .await
        .map_err(|e| ApplyError::Catalog {
            table: targets
                .iter()
                .map(|t| t.display.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            source: SqlError::from(e),
        })?;
    Ok(rows
        .iter()
        .map(|r| {
            let (schema, name): (String, String) = (r.get(0), r.get(1));
            ForeignKey {
                table: format!("{schema}.{name}"),
                schema,
                name,
                constraint: r.get(2),
                referenced: r.get(3),
            }
        })
        .collect())
}

/// A row must carry one value per column of its relation: checked before any
/// [`TargetColumn::blue`](crate::target::TargetColumn::blue) index reads it.
pub(crate) fn check_width(target: &TargetTable, row: &TupleData) -> Result<(), ApplyError> {
    if row.columns.len() == target.blue_width {
        Ok(())
    } else {
        Err(ApplyError::RowShape {
            table: target.display.clone(),
            expected: target.blue_width,
            got: row.columns.len(),
        })
    }
}

/// Indexes (in `target.columns`) of the carried columns that have a value in `row` (not
/// unchanged TOAST). `row` has passed [`check_width`].
fn present(target: &TargetTable, row: &TupleData) -> Box<[usize]> {
    target
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| !matches!(row.columns[c.blue], ColumnValue::UnchangedToast))
        .map(|(i, _)| i)
        .collect()
}

/// How to find the row of an UPDATE or DELETE, and the row image holding the values to find it
/// by: the old tuple when sent (whole under REPLICA IDENTITY FULL, else the key), else the new
/// row's key columns.
pub(crate) fn locate<'t>(
    target: &TargetTable,
    relation: &RelationInfo,
    operation: Operation,
    old: Option<&'t OldTuple>,
    new: &'t TupleData,
) -> Result<(Locate, &'t TupleData), ApplyError> {
    let by_key = |source: &'t TupleData| {
        if target.key.is_empty() {
            Err(ApplyError::NoReplicaIdentity {
                table: target.display.clone(),
                operation,
            })
        } else {
            Ok((Locate::Key(target.key.clone().into()), source))
        }
    };
    match old {
        Some(OldTuple::Full(old)) => {
            check_width(target, old)?;
            Ok((full(target, old), old))
        }
        Some(OldTuple::Key(old)) => {
            check_width(target, old)?;
            by_key(old)
        }
        None if relation.replica_identity() == ReplicaIdentity::Full => {
            Ok((full(target, new), new))
        }
        None => by_key(new),
    }
}

/// How a REPLICA IDENTITY FULL change finds its row in `row`'s image: by every value blue sent,
/// through the first of green's usable indexes whose every column has a value in `row` that is
/// not NULL (an equality never matches NULL), else by reading the table.
fn full(target: &TargetTable, row: &TupleData) -> Locate {
    let columns = present(target, row);
    let index = target.full_indexes.iter().position(|index| {
        index.columns.iter().all(|(c, _)| {
            columns.contains(c)
                && !matches!(row.columns[target.columns[*c].blue], ColumnValue::Null)
        })
    });
    Locate::Full { columns, index }
}

/// Appends the values the WHERE clause finds the row by.
fn push_locating(
    params: &mut Vec<ColumnValue>,
    target: &TargetTable,
    locate: &Locate,
    source: &TupleData,
) {
    for &c in locate.columns() {
        params.push(match &source.columns[target.columns[c].blue] {
            ColumnValue::UnchangedToast => ColumnValue::Null,
            value => value.clone(),
        });
    }
}

#[cfg(test)]
mod tests;
