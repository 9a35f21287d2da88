//! The backfill's record on green, in the `blueshift` schema: one run per slot, the snapshot
//! generations it copied under, every chunk (finished in the same transaction as its rows), the
//! index and constraint definitions dropped for the load, and the tables declared loaded
//! without a copy (`--no-backfill`).
//!
//! A published table is *loaded* when it has chunks (a run copies them all before streaming
//! goes on) or is declared; sync applies changes only to loaded tables.
//!
//! Everything a restart needs is here, so a `kill -9` at any point leaves a state the next run
//! continues from.

use std::collections::BTreeSet;

use blueshift_decoder::Lsn;
use tokio_postgres::{Client, GenericClient};

use super::BackfillError;
use crate::schema::QualifiedName;

/// The tables, created when missing (idempotent; safe to run concurrently with itself because
/// each statement is `IF NOT EXISTS` and runs under an advisory lock).
const SCHEMA: &str = "\
SELECT pg_catalog.pg_advisory_xact_lock(7235342165031183718);
CREATE SCHEMA IF NOT EXISTS blueshift;
CREATE TABLE IF NOT EXISTS blueshift.backfill_run (
    slot text PRIMARY KEY,
    started_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    finished_at timestamptz,
    keep_indexes boolean NOT NULL
);
CREATE TABLE IF NOT EXISTS blueshift.backfill_generation (
    slot text NOT NULL,
    generation int NOT NULL,
    snapshot_lsn pg_lsn NOT NULL,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (slot, generation)
);
CREATE TABLE IF NOT EXISTS blueshift.backfill_chunk (
    slot text NOT NULL,
    target_schema text NOT NULL,
    target_table text NOT NULL,
    source_schema text NOT NULL,
    source_table text NOT NULL,
    chunk int NOT NULL,
    first_block bigint NOT NULL,
    end_block bigint,
    filenode bigint NOT NULL,
    generation int,
    rows bigint,
    done_at timestamptz,
    PRIMARY KEY (slot, target_schema, target_table, source_schema, source_table, chunk)
);
CREATE TABLE IF NOT EXISTS blueshift.backfill_ddl (
    slot text NOT NULL,
    target_schema text NOT NULL,
    target_table text NOT NULL,
    ordinal int NOT NULL,
    kind text NOT NULL,
    name text NOT NULL,
    definition text NOT NULL,
    restored boolean NOT NULL DEFAULT false,
    PRIMARY KEY (slot, ordinal)
);
CREATE TABLE IF NOT EXISTS blueshift.backfill_declared (
    slot text NOT NULL,
    target_schema text NOT NULL,
    target_table text NOT NULL,
    declared_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (slot, target_schema, target_table)
)";

/// Creates the state tables when missing.
pub(crate) async fn ensure(green: &mut Client) -> Result<(), BackfillError> {
    let tx = green
        .transaction()
        .await
        .map_err(|e| BackfillError::green("open a transaction", e))?;
    tx.batch_execute(SCHEMA).await.map_err(|e| {
        BackfillError::green("create the backfill state tables (blueshift.backfill_*)", e)
    })?;
    tx.commit()
        .await
        .map_err(|e| BackfillError::green("create the backfill state tables", e))
}

/// The run of `slot`, if one was started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) finished: bool,
    pub(crate) keep_indexes: bool,
}

/// Whether the state tables exist at all (without creating them).
pub(crate) async fn exists(green: &impl GenericClient) -> Result<bool, BackfillError> {
    crate::client::relation_exists(green, "blueshift.backfill_run")
        .await
        .map_err(|e| BackfillError::green("look for the backfill state", e))
}

/// The run of `slot`.
pub(crate) async fn run(
    green: &impl GenericClient,
    slot: &str,
) -> Result<Option<Run>, BackfillError> {
    if !exists(green).await? {
        return Ok(None);
    }
    let row = green
        .query_opt(
            "SELECT finished_at IS NOT NULL, keep_indexes FROM blueshift.backfill_run WHERE slot = $1",
            &[&slot],
        )
        .await
        .map_err(|e| BackfillError::green("read the backfill run", e))?;
    Ok(row.map(|r| Run {
        finished: r.get(0),
        keep_indexes: r.get(1),
    }))
}

/// Deletes every record of `slot`'s run.
pub(crate) async fn forget(
    green: &impl GenericClient,
    slot: &str,
) -> Result<(), tokio_postgres::Error> {
    for table in [
        "backfill_run",
        "backfill_generation",
        "backfill_chunk",
        "backfill_ddl",
        "backfill_declared",
        "source_identity",
    ] {
        // backfill_declared and source_identity (sync::identity) are missing where an older
        // blueshift made the others.
        let exists = crate::client::relation_exists(green, &format!("blueshift.{table}")).await?;
        if exists {
            green
                .execute(
                    &format!("DELETE FROM blueshift.{table} WHERE slot = $1"),
                    &[&slot],
                )
                .await?;
        }
    }
    Ok(())
}

/// Whether the declarations table exists (an older blueshift did not make it).
async fn declarations_exist(green: &impl GenericClient) -> Result<bool, BackfillError> {
    crate::client::relation_exists(green, "blueshift.backfill_declared")
        .await
        .map_err(|e| BackfillError::green("look for the declared tables", e))
}

/// The tables declared loaded without a copy.
pub(crate) async fn declared(
    green: &impl GenericClient,
    slot: &str,
) -> Result<BTreeSet<QualifiedName>, BackfillError> {
    if !declarations_exist(green).await? {
        return Ok(BTreeSet::new());
    }
    let rows = green
        .query(
            "SELECT target_schema, target_table FROM blueshift.backfill_declared WHERE slot = $1",
            &[&slot],
        )
        .await
        .map_err(|e| BackfillError::green("read the declared tables", e))?;
    Ok(rows
        .iter()
        .map(|r| QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)))
        .collect())
}

/// Declares `tables` loaded without a copy (green was loaded another way).
pub(crate) async fn declare(
    green: &impl GenericClient,
    slot: &str,
    tables: &[QualifiedName],
) -> Result<(), BackfillError> {
    for t in tables {
        green
            .execute(
                "INSERT INTO blueshift.backfill_declared (slot, target_schema, target_table) \
                 VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&slot, &t.schema, &t.name],
            )
            .await
            .map_err(|e| BackfillError::green("declare the tables loaded", e))?;
    }
    Ok(())
}

/// The loaded tables: with chunks (planned by a run, which copies them before streaming goes
/// on) or declared. `None` when green records nothing of `slot` at all.
pub(crate) async fn loaded(
    green: &impl GenericClient,
    slot: &str,
) -> Result<Option<BTreeSet<QualifiedName>>, BackfillError> {
    if !exists(green).await? {
        return Ok(None);
    }
    let mut tables = declared(green, slot).await?;
    let rows = green
        .query(
            "SELECT DISTINCT target_schema, target_table FROM blueshift.backfill_chunk \
              WHERE slot = $1",
            &[&slot],
        )
        .await
        .map_err(|e| BackfillError::green("read the copied tables", e))?;
    tables.extend(
        rows.iter()
            .map(|r| QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1))),
    );
    let has_run = run(green, slot).await?.is_some();
    Ok((has_run || !tables.is_empty()).then_some(tables))
}

/// Opens the run of `slot` again to copy more tables (or starts one, keeping what is recorded);
/// a run that is not finished is resumed by the next start whatever happens.
pub(crate) async fn reopen(
    green: &impl GenericClient,
    slot: &str,
    keep_indexes: bool,
) -> Result<(), BackfillError> {
    green
        .execute(
            "INSERT INTO blueshift.backfill_run (slot, keep_indexes) VALUES ($1, $2) \
             ON CONFLICT (slot) DO UPDATE SET finished_at = NULL",
            &[&slot, &keep_indexes],
        )
        .await
        .map_err(|e| BackfillError::green("reopen the backfill run", e))?;
    Ok(())
}

/// Forgets the chunks of `target` and, with `empty_rows`, deletes its rows on green (`DELETE`,
/// not `TRUNCATE`: foreign keys kept by --keep-indexes would refuse that); run it in the
/// transaction that plans the table again, or before a new copy of it.
pub(crate) async fn clear_table(
    green: &impl GenericClient,
    slot: &str,
    target: &QualifiedName,
    empty_rows: bool,
) -> Result<(), BackfillError> {
    if empty_rows {
        green
            .batch_execute(&format!("DELETE FROM {target}"))
            .await
            .map_err(|e| BackfillError::green(&format!("empty {target}"), e))?;
    }
    green
        .execute(
            "DELETE FROM blueshift.backfill_chunk WHERE slot = $1 AND target_schema = $2 \
             AND target_table = $3",
            &[&slot, &target.schema, &target.name],
        )
        .await
        .map_err(|e| BackfillError::green("forget a table's chunks", e))?;
    Ok(())
}

/// Forgets that green holds `table` (its chunks or its declaration); its rows stay.
pub(crate) async fn forget_loaded(
    green: &impl GenericClient,
    slot: &str,
    table: &QualifiedName,
) -> Result<(), tokio_postgres::Error> {
    for records in ["backfill_chunk", "backfill_declared"] {
        let present =
            crate::client::relation_exists(green, &format!("blueshift.{records}")).await?;
        if present {
            green
                .execute(
                    &format!(
                        "DELETE FROM blueshift.{records} WHERE slot = $1 \
                          AND target_schema = $2 AND target_table = $3"
                    ),
                    &[&slot, &table.schema, &table.name],
                )
                .await?;
        }
    }
    Ok(())
}

/// Forgets every record of `slot`'s run and starts a new one.
pub(crate) async fn start(
    green: &impl GenericClient,
    slot: &str,
    keep_indexes: bool,
) -> Result<(), BackfillError> {
    forget(green, slot)
        .await
        .map_err(|e| BackfillError::green("clear an earlier backfill run", e))?;
    green
        .execute(
            "INSERT INTO blueshift.backfill_run (slot, keep_indexes) VALUES ($1, $2)",
            &[&slot, &keep_indexes],
        )
        .await
        .map_err(|e| BackfillError::green("record the backfill run", e))?;
    Ok(())
}

/// Marks the run finished.
pub(crate) async fn finish(green: &impl GenericClient, slot: &str) -> Result<(), BackfillError> {
    green
        .execute(
            "UPDATE blueshift.backfill_run SET finished_at = pg_catalog.now() WHERE slot = $1",
            &[&slot],
        )
        .await
        .map_err(|e| BackfillError::green("record the end of the backfill", e))?;
    Ok(())
}

/// Records snapshot generation `generation`, taken at `lsn`; returns its number.
pub(crate) async fn add_generation(
    green: &impl GenericClient,
    slot: &str,
    lsn: Lsn,
) -> Result<i32, BackfillError> {
    let row = green
        .query_one(
            "INSERT INTO blueshift.backfill_generation (slot, generation, snapshot_lsn) \
             SELECT $1, coalesce(pg_catalog.max(generation), 0) OPERATOR(pg_catalog.+) 1, $2::pg_catalog.text::pg_catalog.pg_lsn \
               FROM blueshift.backfill_generation WHERE slot = $1 \
             RETURNING generation",
            &[&slot, &lsn.to_string()],
        )
        .await
        .map_err(|e| BackfillError::green("record the snapshot", e))?;
    Ok(row.get(0))
}

/// One chunk: a block range of one source relation (a table or a leaf partition on blue),
/// copied into one target table on green.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chunk {
    pub(crate) target: QualifiedName,
    pub(crate) source: QualifiedName,
    pub(crate) chunk: i32,
    pub(crate) first_block: i64,
    /// Exclusive; `None` for the last chunk of a relation, which takes every block after
    /// `first_block` (rows added after planning land there).
    pub(crate) end_block: Option<i64>,
    /// The relation's file node on blue when planned: a rewrite changes it.
    pub(crate) filenode: i64,
    /// The generation it was copied under, once finished.
    pub(crate) generation: Option<i32>,
}

impl Chunk {
    /// Blocks it spans, for progress (the last chunk counts what was planned).
    pub(crate) fn blocks(&self, planned_end: i64) -> i64 {
        self.end_block
            .unwrap_or(planned_end)
            .saturating_sub(self.first_block)
            .max(0)
    }
}

/// Records the planned chunks (not finished).
pub(crate) async fn add_chunks(
    green: &impl GenericClient,
    slot: &str,
    chunks: &[Chunk],
) -> Result<(), BackfillError> {
    let statement = green
        .prepare(
            "INSERT INTO blueshift.backfill_chunk (slot, target_schema, target_table, \
             source_schema, source_table, chunk, first_block, end_block, filenode) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .await
        .map_err(|e| BackfillError::green("record the chunks", e))?;
    for c in chunks {
        green
            .execute(
                &statement,
                &[
                    &slot,
                    &c.target.schema,
                    &c.target.name,
                    &c.source.schema,
                    &c.source.name,
                    &c.chunk,
                    &c.first_block,
                    &c.end_block,
                    &c.filenode,
                ],
            )
            .await
            .map_err(|e| BackfillError::green("record the chunks", e))?;
    }
    Ok(())
}

/// Every chunk of the run, in plan order.
pub(crate) async fn chunks(
    green: &impl GenericClient,
    slot: &str,
) -> Result<Vec<Chunk>, BackfillError> {
    let rows = green
        .query(
            "SELECT target_schema, target_table, source_schema, source_table, chunk, \
                    first_block, end_block, generation, filenode \
               FROM blueshift.backfill_chunk WHERE slot = $1 \
              ORDER BY target_schema, target_table, source_schema, source_table, chunk",
            &[&slot],
        )
        .await
        .map_err(|e| BackfillError::green("read the chunks", e))?;
    Ok(rows
        .iter()
        .map(|r| Chunk {
            target: QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)),
            source: QualifiedName::new(r.get::<_, String>(2), r.get::<_, String>(3)),
            chunk: r.get(4),
            first_block: r.get(5),
            end_block: r.get(6),
            generation: r.get(7),
            filenode: r.get(8),
        })
        .collect())
}

/// Those of `tables` with a chunk still to copy, or none planned yet.
pub(crate) async fn uncopied(
    green: &impl GenericClient,
    slot: &str,
    tables: &[QualifiedName],
) -> Result<BTreeSet<QualifiedName>, BackfillError> {
    let chunks = chunks(green, slot).await?;
    Ok(tables
        .iter()
        .filter(|t| {
            let mut mine = chunks.iter().filter(|c| &c.target == *t).peekable();
            mine.peek().is_none() || mine.any(|c| c.generation.is_none())
        })
        .cloned()
        .collect())
}

/// Marks a chunk finished; runs in the transaction that loaded its rows.
pub(crate) async fn finish_chunk(
    green: &impl GenericClient,
    slot: &str,
    chunk: &Chunk,
    generation: i32,
    rows: u64,
) -> Result<(), BackfillError> {
    let rows = i64::try_from(rows).unwrap_or(i64::MAX);
    let updated = green
        .execute(
            "UPDATE blueshift.backfill_chunk SET generation = $7, rows = $8, done_at = pg_catalog.now() \
              WHERE slot = $1 AND target_schema = $2 AND target_table = $3 \
                AND source_schema = $4 AND source_table = $5 AND chunk = $6 \
                AND generation IS NULL",
            &[
                &slot,
                &chunk.target.schema,
                &chunk.target.name,
                &chunk.source.schema,
                &chunk.source.name,
                &chunk.chunk,
                &generation,
                &rows,
            ],
        )
        .await
        .map_err(|e| BackfillError::green("record a finished chunk", e))?;
    if updated == 1 {
        Ok(())
    } else {
        // Another process finished it: two backfills of one slot at once.
        Err(BackfillError::Concurrent {
            slot: slot.to_owned(),
        })
    }
}

/// Snapshot positions by generation.
pub(crate) async fn generations(
    green: &impl GenericClient,
    slot: &str,
) -> Result<Vec<(i32, Lsn)>, BackfillError> {
    let rows = green
        .query(
            "SELECT generation, snapshot_lsn::text FROM blueshift.backfill_generation \
              WHERE slot = $1 ORDER BY generation",
            &[&slot],
        )
        .await
        .map_err(|e| BackfillError::green("read the snapshot generations", e))?;
    rows.iter()
        .map(|r| {
            let text: String = r.get(1);
            let lsn = text.parse().map_err(|_| BackfillError::Corrupt {
                what: format!("snapshot position {text:?} in blueshift.backfill_generation"),
            })?;
            Ok((r.get(0), lsn))
        })
        .collect()
}

/// A dropped index or constraint, to restore after the load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ddl {
    pub(crate) table: QualifiedName,
    pub(crate) ordinal: i32,
    pub(crate) kind: super::indexes::Kind,
    pub(crate) name: String,
    pub(crate) definition: String,
    pub(crate) restored: bool,
}

/// Records definitions (in the transaction that drops them).
pub(crate) async fn add_ddl(
    green: &impl GenericClient,
    slot: &str,
    ddl: &[Ddl],
) -> Result<(), BackfillError> {
    for d in ddl {
        green
            .execute(
                "INSERT INTO blueshift.backfill_ddl (slot, target_schema, target_table, ordinal, \
                 kind, name, definition) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &slot,
                    &d.table.schema,
                    &d.table.name,
                    &d.ordinal,
                    &d.kind.as_str(),
                    &d.name,
                    &d.definition,
                ],
            )
            .await
            .map_err(|e| BackfillError::green("record a dropped index or constraint", e))?;
    }
    Ok(())
}

/// Every recorded definition, in drop order.
pub(crate) async fn ddl(green: &impl GenericClient, slot: &str) -> Result<Vec<Ddl>, BackfillError> {
    let rows = green
        .query(
            "SELECT target_schema, target_table, ordinal, kind, name, definition, restored \
               FROM blueshift.backfill_ddl WHERE slot = $1 ORDER BY ordinal",
            &[&slot],
        )
        .await
        .map_err(|e| BackfillError::green("read the dropped indexes and constraints", e))?;
    rows.iter()
        .map(|r| {
            let kind: String = r.get(3);
            Ok(Ddl {
                table: QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)),
                ordinal: r.get(2),
                kind: super::indexes::Kind::parse(&kind).ok_or_else(|| BackfillError::Corrupt {
                    what: format!("kind {kind:?} in blueshift.backfill_ddl"),
                })?,
                name: r.get(4),
                definition: r.get(5),
                restored: r.get(6),
            })
        })
        .collect()
}

/// Marks a definition restored (in the transaction that restores it).
pub(crate) async fn ddl_restored(
    green: &impl GenericClient,
    slot: &str,
    ordinal: i32,
) -> Result<(), BackfillError> {
    green
        .execute(
            "UPDATE blueshift.backfill_ddl SET restored = true WHERE slot = $1 AND ordinal = $2",
            &[&slot, &ordinal],
        )
        .await
        .map_err(|e| BackfillError::green("record a restored index or constraint", e))?;
    Ok(())
}
