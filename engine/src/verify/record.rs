//! Verify's records on green: `blueshift.verify_run` (one row per run: when, at which L, the
//! outcome — what cutover reads through [`last_run`]) and `blueshift.verify_chunk` (the chunk
//! plan of a run and each chunk's result, so `--resume` compares every chunk exactly once).

use std::time::SystemTime;

use blueshift_decoder::Lsn;
use tokio_postgres::Client;

use super::{VerifyConfig, VerifyError};
use crate::schema::QualifiedName;

/// Verify's records. [`in_place`] checks for the last thing this adds: keep them in step.
const SCHEMA: &str = "
BEGIN;
SET LOCAL client_min_messages = warning;
CREATE SCHEMA IF NOT EXISTS blueshift;
CREATE TABLE IF NOT EXISTS blueshift.verify_run (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    finished_at timestamptz,
    lsn pg_catalog.pg_lsn,
    outcome text NOT NULL DEFAULT 'running'
        CHECK (outcome IN ('running', 'equal', 'different', 'failed')),
    differences bigint,
    slot text,
    publication text,
    depth text,
    invocations integer NOT NULL DEFAULT 1
);
-- Of the differences, sequences behind on green (the cutover copies them): its gate reads it.
ALTER TABLE blueshift.verify_run ADD COLUMN IF NOT EXISTS sequences_behind bigint;
CREATE TABLE IF NOT EXISTS blueshift.verify_chunk (
    run_id bigint NOT NULL REFERENCES blueshift.verify_run (id) ON DELETE CASCADE,
    table_schema text NOT NULL,
    table_name text NOT NULL,
    chunk integer NOT NULL,
    lo text[],
    hi text[],
    lsn pg_catalog.pg_lsn,
    invocation integer,
    blue_rows bigint,
    green_rows bigint,
    differences bigint,
    finished_at timestamptz,
    PRIMARY KEY (run_id, table_schema, table_name, chunk)
);
COMMIT;";

/// Whether verify's records are in place as [`ensure`] makes them (then it has nothing to do:
/// no DDL, no lock on `blueshift.verify_run`).
pub(super) async fn in_place(green: &Client) -> Result<bool, VerifyError> {
    let row = green
        .query_one(
            "SELECT pg_catalog.to_regclass('blueshift.verify_chunk') IS NOT NULL \
                AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute \
                             WHERE attrelid = pg_catalog.to_regclass('blueshift.verify_run') \
                               AND attname = 'sequences_behind' AND NOT attisdropped)",
            &[],
        )
        .await
        .map_err(|e| VerifyError::sql("green", "look for verify's records", e))?;
    Ok(row.get(0))
}

/// Creates the tables when missing.
pub(super) async fn ensure(green: &Client) -> Result<(), VerifyError> {
    green.batch_execute(SCHEMA).await.map_err(|e| {
        VerifyError::sql(
            "green",
            "create verify's records (blueshift.verify_run, blueshift.verify_chunk)",
            e,
        )
    })
}

/// Records a new run; returns its id.
pub(super) async fn start(green: &Client, config: &VerifyConfig) -> Result<i64, VerifyError> {
    let depth = match config.depth {
        super::Depth::Checksum => "checksum",
        super::Depth::Counts => "counts",
    };
    let row = green
        .query_one(
            "INSERT INTO blueshift.verify_run (slot, publication, depth) VALUES ($1, $2, $3) \
             RETURNING id",
            &[&config.slot, &config.publication, &depth],
        )
        .await
        .map_err(|e| VerifyError::sql("green", "record the run", e))?;
    Ok(row.get(0))
}

/// The last run when it did not finish (killed, or failed); counts the new invocation.
pub(super) async fn unfinished(green: &Client) -> Result<Option<i64>, VerifyError> {
    let row = green
        .query_opt(
            "UPDATE blueshift.verify_run SET invocations = invocations + 1, outcome = 'running', \
                    finished_at = NULL \
              WHERE id = (SELECT max(id) FROM blueshift.verify_run) \
                AND outcome IN ('running', 'failed') \
             RETURNING id",
            &[],
        )
        .await
        .map_err(|e| VerifyError::sql("green", "find the run to resume", e))?;
    Ok(row.map(|r| r.get(0)))
}

/// The invocation number of run `id` (1 for the first, 2 for its first resume…).
pub(super) async fn invocation(green: &Client, id: i64) -> Result<i32, VerifyError> {
    let row = green
        .query_one(
            "SELECT invocations FROM blueshift.verify_run WHERE id = $1",
            &[&id],
        )
        .await
        .map_err(|e| VerifyError::sql("green", "read the run", e))?;
    Ok(row.get(0))
}

/// Records the run's consistent point.
pub(super) async fn set_lsn(green: &Client, id: i64, lsn: Lsn) -> Result<(), VerifyError> {
    green
        .execute(
            "UPDATE blueshift.verify_run SET lsn = $2::pg_catalog.text::pg_catalog.pg_lsn \
              WHERE id = $1",
            &[&id, &lsn.to_string()],
        )
        .await
        .map_err(|e| VerifyError::sql("green", "record the run's consistent point", e))?;
    Ok(())
}

/// Records the run's outcome.
pub(super) async fn finish(
    green: &Client,
    id: i64,
    lsn: Option<Lsn>,
    outcome: &str,
    differences: Option<(u64, u64)>,
) -> Result<(), VerifyError> {
    let count = |d: u64| i64::try_from(d).unwrap_or(i64::MAX);
    let (differences, sequences_behind) = match differences {
        Some((all, sequences)) => (Some(count(all)), Some(count(sequences))),
        None => (None, None),
    };
    green
        .execute(
            "UPDATE blueshift.verify_run SET finished_at = pg_catalog.clock_timestamp(), \
                    outcome = $2, differences = $3, sequences_behind = $5, \
                    lsn = coalesce($4::pg_catalog.text::pg_catalog.pg_lsn, lsn) \
              WHERE id = $1",
            &[
                &id,
                &outcome,
                &differences,
                &lsn.map(|l| l.to_string()),
                &sequences_behind,
            ],
        )
        .await
        .map_err(|e| VerifyError::sql("green", "record the run's outcome", e))?;
    Ok(())
}

/// A chunk of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PlannedChunk {
    pub(super) table: QualifiedName,
    pub(super) chunk: i32,
    /// Exclusive lower key bound (`None`: open).
    pub(super) lo: Option<Vec<String>>,
    /// Inclusive upper key bound (`None`: open).
    pub(super) hi: Option<Vec<String>>,
}

/// A chunk of the plan with its recorded result, if it finished.
#[derive(Debug, Clone)]
pub(super) struct RecordedChunk {
    pub(super) planned: PlannedChunk,
    /// Blue rows, green rows, differences — when finished.
    pub(super) result: Option<(u64, u64, u64)>,
}

/// Records the chunk plan (of every table planned): one transaction, the inserts pipelined.
pub(super) async fn plan(
    green: &Client,
    run: i64,
    chunks: &[PlannedChunk],
) -> Result<(), VerifyError> {
    let fail = |e| VerifyError::sql("green", "record the chunk plan", e);
    green.batch_execute("BEGIN").await.map_err(fail)?;
    let statement = green
        .prepare(
            "INSERT INTO blueshift.verify_chunk (run_id, table_schema, table_name, chunk, lo, hi) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .await;
    let inserted = match statement {
        Ok(statement) => {
            let statement = &statement;
            let inserts = chunks.iter().map(|c| async move {
                green
                    .execute(
                        statement,
                        &[&run, &c.table.schema, &c.table.name, &c.chunk, &c.lo, &c.hi],
                    )
                    .await
            });
            futures_util::future::try_join_all(inserts)
                .await
                .map(|_| ())
        }
        Err(e) => Err(e),
    };
    match inserted {
        Ok(()) => green.batch_execute("COMMIT").await.map_err(fail),
        Err(e) => {
            let _ = green.batch_execute("ROLLBACK").await;
            Err(fail(e))
        }
    }
}

/// The recorded chunks of run `run` for `table`.
pub(super) async fn chunks(
    green: &Client,
    run: i64,
    table: &QualifiedName,
) -> Result<Vec<RecordedChunk>, VerifyError> {
    let rows = green
        .query(
            "SELECT chunk, lo, hi, blue_rows, green_rows, differences, finished_at IS NOT NULL \
               FROM blueshift.verify_chunk \
              WHERE run_id = $1 AND table_schema = $2 AND table_name = $3 ORDER BY chunk",
            &[&run, &table.schema, &table.name],
        )
        .await
        .map_err(|e| VerifyError::sql("green", "read the recorded chunks", e))?;
    let count = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
    Ok(rows
        .iter()
        .map(|r| RecordedChunk {
            planned: PlannedChunk {
                table: table.clone(),
                chunk: r.get(0),
                lo: r.get(1),
                hi: r.get(2),
            },
            result: r
                .get::<_, bool>(6)
                .then(|| (count(r.get(3)), count(r.get(4)), count(r.get(5)))),
        })
        .collect())
}

/// A compared chunk and its result, to be recorded.
#[derive(Debug, Clone)]
pub(super) struct FinishedChunk {
    pub(super) chunk: PlannedChunk,
    /// Blue rows, green rows.
    pub(super) rows: (u64, u64),
    pub(super) differences: u64,
}

/// Records finished chunks, in one statement (one commit on green for the batch); returns how
/// many were not recorded finished before (all of them, expected: each chunk is compared once).
/// A chunk is finished in the records only once its result is: a kill before this commit
/// leaves the batch's chunks to `--resume`, which compares them then.
pub(super) async fn chunks_done(
    green: &Client,
    run: i64,
    lsn: Lsn,
    invocation: i32,
    finished: &[FinishedChunk],
) -> Result<u64, VerifyError> {
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let schemas: Vec<&str> = finished
        .iter()
        .map(|f| f.chunk.table.schema.as_str())
        .collect();
    let names: Vec<&str> = finished
        .iter()
        .map(|f| f.chunk.table.name.as_str())
        .collect();
    let chunks: Vec<i32> = finished.iter().map(|f| f.chunk.chunk).collect();
    let blue: Vec<i64> = finished.iter().map(|f| n(f.rows.0)).collect();
    let green_rows: Vec<i64> = finished.iter().map(|f| n(f.rows.1)).collect();
    let differences: Vec<i64> = finished.iter().map(|f| n(f.differences)).collect();
    green
        .execute(
            "UPDATE blueshift.verify_chunk c SET lsn = $2::pg_catalog.text::pg_catalog.pg_lsn, \
                    invocation = $3, blue_rows = f.b, green_rows = f.g, differences = f.d, \
                    finished_at = pg_catalog.clock_timestamp() \
               FROM ROWS FROM (pg_catalog.unnest($4::pg_catalog.text[]), \
                               pg_catalog.unnest($5::pg_catalog.text[]), \
                               pg_catalog.unnest($6::pg_catalog.int4[]), \
                               pg_catalog.unnest($7::pg_catalog.int8[]), \
                               pg_catalog.unnest($8::pg_catalog.int8[]), \
                               pg_catalog.unnest($9::pg_catalog.int8[])) AS f(s, t, n, b, g, d) \
              WHERE c.run_id = $1 AND c.table_schema = f.s AND c.table_name = f.t \
                AND c.chunk = f.n AND c.finished_at IS NULL",
            &[
                &run,
                &lsn.to_string(),
                &invocation,
                &schemas,
                &names,
                &chunks,
                &blue,
                &green_rows,
                &differences,
            ],
        )
        .await
        .map_err(|e| VerifyError::sql("green", "record finished chunks", e))
}

/// A verify run as recorded on green (what cutover reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyRun {
    /// Its id.
    pub id: i64,
    /// When it started.
    pub started_at: SystemTime,
    /// When it finished (`None` while running, or when killed).
    pub finished_at: Option<SystemTime>,
    /// Its consistent point L.
    pub lsn: Option<Lsn>,
    /// `running`, `equal`, `different` or `failed`.
    pub outcome: String,
    /// Differences found.
    pub differences: Option<i64>,
}

/// The latest verify run recorded on green (by id); `None` when verify never ran there.
pub async fn last_run(green: &Client) -> Result<Option<VerifyRun>, tokio_postgres::Error> {
    let exists = crate::client::relation_exists(green, "blueshift.verify_run").await?;
    if !exists {
        return Ok(None);
    }
    let row = green
        .query_opt(
            "SELECT id, started_at, finished_at, lsn::pg_catalog.text, outcome, differences \
               FROM blueshift.verify_run ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await?;
    Ok(row.map(|r| VerifyRun {
        id: r.get(0),
        started_at: r.get(1),
        finished_at: r.get(2),
        lsn: r.get::<_, Option<String>>(3).and_then(|t| t.parse().ok()),
        outcome: r.get(4),
        differences: r.get(5),
    }))
}

/// The latest verify run as the metrics show it (`blueshift_verify_last_run_*`,
/// `blueshift_verified_lsn`: the L of the latest run that found green equal); `None` when
/// verify never ran on green. Two index reads on `blueshift.verify_run`.
pub async fn last_verify(
    green: &Client,
) -> Result<Option<crate::metrics::verify::LastVerify>, tokio_postgres::Error> {
    let Some(last) = last_run(green).await? else {
        return Ok(None);
    };
    let verified = green
        .query_opt(
            "SELECT lsn::pg_catalog.text FROM blueshift.verify_run \
              WHERE outcome = 'equal' AND lsn IS NOT NULL ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await?
        .and_then(|r| r.get::<_, Option<String>>(0))
        .and_then(|t| t.parse::<Lsn>().ok());
    Ok(Some(crate::metrics::verify::LastVerify {
        differences: last
            .differences
            .and_then(|d| u64::try_from(d).ok())
            .unwrap_or(0),
        at: Some(last.finished_at.unwrap_or(last.started_at)),
        outcome: last.outcome,
        verified_lsn: verified.map(|l| l.0),
    }))
}
