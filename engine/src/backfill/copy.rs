//! Copying: the chunk plan (block ranges of each source relation on blue) and the copy workers.
//!
//! A worker holds one connection to blue, in a `REPEATABLE READ` transaction that imported the
//! generation's snapshot, and one to green. For each chunk it streams
//! `COPY (SELECT … WHERE ctid >= '(a,0)' AND ctid < '(b,0)') TO STDOUT` from blue into
//! `COPY … FROM STDIN` on green, message by message without parsing rows (binary when every
//! column has the same built-in type on both sides, text otherwise, so green casts), and marks the
//! chunk finished in the same green transaction. Memory per worker is one COPY message plus the
//! client's send buffer, whatever the table size.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use blueshift_decoder::config::ConnectConfig;
use bytes::Bytes;
use futures_util::{pin_mut, SinkExt, StreamExt};
use tokio::sync::Mutex;
use tokio_postgres::Client;

use super::progress::Progress;
use super::state::{self, Chunk};
use super::BackfillError;
use crate::client;
use crate::schema::{quote_ident, QualifiedName};

/// Session settings pinned on both sides, so text COPY output of blue reads back the same on
/// green (dates, intervals, floats, bytea), long copies are not cut by timeouts, and a
/// row-level security policy makes a statement fail rather than filter rows (`row_security =
/// off`, see [`super::security`]).
const PINNED: &[(&str, &str)] = &[
    ("row_security", "off"),
    ("DateStyle", "ISO"),
    ("IntervalStyle", "postgres"),
    ("TimeZone", "UTC"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
    ("client_encoding", "UTF8"),
    ("statement_timeout", "0"),
    ("idle_in_transaction_session_timeout", "0"),
];

/// How one target table is copied.
#[derive(Debug, Clone)]
pub(crate) struct TableCopy {
    /// The table on green (and the published table on blue).
    pub(crate) target: QualifiedName,
    /// Blue's columns to read, quoted, in order.
    pub(crate) blue_columns: Vec<String>,
    /// Green's columns they land in, quoted, in the same order.
    pub(crate) green_columns: Vec<String>,
    /// Every column has the same built-in type on both sides.
    pub(crate) binary: bool,
    /// The publication's row filter (PostgreSQL 15+), as blue printed it.
    pub(crate) row_filter: Option<String>,
    /// When set, the rows go through a staging table and `INSERT … ON CONFLICT (these columns)
    /// DO UPDATE` (a resumed table that may already hold some of them).
    pub(crate) upsert_key: Option<Vec<String>>,
}

impl TableCopy {
    fn format(&self) -> &'static str {
        if self.binary {
            " (FORMAT binary)"
        } else {
            ""
        }
    }

    /// Blue's `COPY … TO STDOUT` for `chunk`.
    pub(crate) fn copy_out_sql(&self, chunk: &Chunk, whole: bool) -> String {
        let columns = self.blue_columns.join(", ");
        if whole && self.row_filter.is_none() {
            return format!(
                "COPY {} ({columns}) TO STDOUT{}",
                chunk.source,
                self.format()
            );
        }
        let mut conditions = Vec::new();
        if !whole {
            conditions.push(format!("ctid >= '({},0)'::tid", chunk.first_block));
            if let Some(end) = chunk.end_block {
                conditions.push(format!("ctid < '({end},0)'::tid"));
            }
        }
        if let Some(filter) = &self.row_filter {
            conditions.push(format!("({filter})"));
        }
        let mut sql = format!("COPY (SELECT {columns} FROM ONLY {}", chunk.source);
        if !conditions.is_empty() {
            let _ = write!(sql, " WHERE {}", conditions.join(" AND "));
        }
        let _ = write!(sql, ") TO STDOUT{}", self.format());
        sql
    }

    /// The staging table of a worker for this table's upserts.
    fn stage(&self, worker: usize) -> String {
        quote_ident(&format!("blueshift_stage_{worker}"))
    }

    /// Green's `COPY … FROM STDIN`.
    pub(crate) fn copy_in_sql(&self, worker: usize) -> String {
        let into = match self.upsert_key {
            Some(_) => self.stage(worker),
            None => self.target.to_string(),
        };
        format!(
            "COPY {into} ({}) FROM STDIN{}",
            self.green_columns.join(", "),
            self.format()
        )
    }

    /// For an upsert: the staging table's creation, the merge, and the cleanup.
    fn upsert_sql(&self, worker: usize, key: &[String]) -> [String; 3] {
        let stage = self.stage(worker);
        let columns = self.green_columns.join(", ");
        let create = format!(
            "CREATE TEMP TABLE IF NOT EXISTS {stage} AS SELECT {columns} FROM {} WITH NO DATA; \
             TRUNCATE {stage}",
            self.target
        );
        let updates: Vec<String> = self
            .green_columns
            .iter()
            .filter(|c| !key.contains(c))
            .map(|c| format!("{c} = EXCLUDED.{c}"))
            .collect();
        let action = if updates.is_empty() {
            "DO NOTHING".to_owned()
        } else {
            format!("DO UPDATE SET {}", updates.join(", "))
        };
        let merge = format!(
            "INSERT INTO {} ({columns}) OVERRIDING SYSTEM VALUE SELECT {columns} FROM {stage} \
             ON CONFLICT ({}) {action}",
            self.target,
            key.join(", ")
        );
        let drop = format!("DROP TABLE {stage}");
        [create, merge, drop]
    }
}

/// The relations on blue that hold a published table's rows: the table itself, or the leaf
/// partitions of a partitioned table published through its root; with their sizes in blocks.
pub(crate) async fn sources(
    blue: &Client,
    table: &QualifiedName,
) -> Result<Vec<(QualifiedName, i64, i64)>, BackfillError> {
    let rows = blue
        .query(
            "WITH r AS (SELECT c.oid, c.relkind FROM pg_catalog.pg_class c \
                          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                         WHERE n.nspname = $1 AND c.relname = $2) \
             SELECT n.nspname::text, c.relname::text, \
                    pg_catalog.pg_relation_size(c.oid) \
                      / pg_catalog.current_setting('block_size')::int8, \
                    pg_catalog.pg_relation_filenode(c.oid)::int8 \
               FROM r, LATERAL (SELECT relid FROM pg_catalog.pg_partition_tree(r.oid) \
                                 WHERE isleaf AND r.relkind = 'p' \
                                UNION ALL SELECT r.oid WHERE r.relkind <> 'p') l \
               JOIN pg_catalog.pg_class c ON c.oid = l.relid \
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
              WHERE c.relkind IN ('r', 'm') \
              ORDER BY 1, 2",
            &[&table.schema, &table.name],
        )
        .await
        .map_err(|e| BackfillError::blue(&format!("read the size of {table}"), e))?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)),
                r.get(2),
                r.get::<_, Option<i64>>(3).unwrap_or(0),
            )
        })
        .collect())
}

/// Splits a relation of `blocks` blocks into chunks of about `chunk_blocks`; a relation up to
/// one and a half chunks is one chunk. The last chunk is open-ended.
pub(crate) fn split(
    target: &QualifiedName,
    source: &QualifiedName,
    blocks: i64,
    chunk_blocks: i64,
    filenode: i64,
) -> Vec<Chunk> {
    let chunk_blocks = chunk_blocks.max(1);
    let count = if blocks <= chunk_blocks + chunk_blocks / 2 {
        1
    } else {
        (blocks + chunk_blocks / 2) / chunk_blocks
    };
    (0..count)
        .map(|n| Chunk {
            target: target.clone(),
            source: source.clone(),
            chunk: i32::try_from(n).unwrap_or(i32::MAX),
            first_block: n * chunk_blocks,
            end_block: (n + 1 < count).then_some((n + 1) * chunk_blocks),
            filenode,
            generation: None,
        })
        .collect()
}

/// One unit of work.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub(crate) chunk: Chunk,
    /// The chunk is the relation's only one: no ctid range needed.
    pub(crate) whole: bool,
    pub(crate) table: Arc<TableCopy>,
}

/// Opens a connection with the pinned settings.
pub(crate) async fn connect(
    config: &ConnectConfig,
    side: &'static str,
) -> Result<(Client, tokio::task::JoinHandle<()>), BackfillError> {
    let (client, conn) = client::connect(config, "blueshift backfill")
        .await
        .map_err(BackfillError::Connect)?;
    for (setting, value) in PINNED {
        client
            .execute(
                "SELECT pg_catalog.set_config($1, $2, false)",
                &[setting, value],
            )
            .await
            .map_err(|e| BackfillError::sql(side, &format!("set {setting}"), e))?;
    }
    Ok((client, conn))
}

/// Opens blue's side of a worker: a repeatable-read transaction on `snapshot`.
pub(crate) async fn import(
    source: &ConnectConfig,
    snapshot: &str,
) -> Result<(Client, tokio::task::JoinHandle<()>), BackfillError> {
    let (blue, conn) = connect(source, "blue").await?;
    // The snapshot name comes from the server ([0-9A-F-]); checked anyway.
    if !snapshot.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return Err(BackfillError::Corrupt {
            what: format!("snapshot name {snapshot:?} from blue"),
        });
    }
    blue.batch_execute(&format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{snapshot}'"
    ))
    .await
    .map_err(|e| BackfillError::blue("import the slot's snapshot", e))?;
    Ok((blue, conn))
}

/// A copy worker, run on a thread of its own.
pub(crate) struct WorkerJob {
    pub(crate) n: usize,
    pub(crate) source: ConnectConfig,
    pub(crate) target: ConnectConfig,
    pub(crate) snapshot: String,
    pub(crate) slot: String,
    pub(crate) generation: i32,
    pub(crate) queue: Arc<Mutex<VecDeque<Job>>>,
    pub(crate) progress: Arc<Progress>,
}

impl WorkerJob {
    /// Imports the snapshot (then says so on `ready`, whatever the outcome) and copies jobs
    /// from the queue until it is empty. On error the queue is emptied, so the other workers
    /// stop after their chunk in hand.
    pub(crate) fn run(
        self,
        ready: tokio::sync::oneshot::Sender<bool>,
    ) -> Result<(), BackfillError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| BackfillError::Corrupt {
                what: format!("failure to start a copy runtime: {e}"),
            });
        let runtime = match runtime {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready.send(false);
                return Err(e);
            }
        };
        let queue = Arc::clone(&self.queue);
        let result = runtime.block_on(async move {
            let imported = import(&self.source, &self.snapshot).await;
            let _ = ready.send(imported.is_ok());
            let (blue, blue_conn) = imported?;
            let result = worker(
                self.n,
                blue,
                self.source.user().to_owned(),
                self.target,
                self.slot,
                self.generation,
                self.queue,
                self.progress,
            )
            .await;
            // `worker` dropped the client: its connection ends with a Terminate.
            client::finish(blue_conn).await;
            result
        });
        if result.is_err() {
            queue.blocking_lock().clear();
        }
        result
    }
}

/// A worker: copies jobs from the queue until it is empty.
#[allow(clippy::too_many_arguments)]
async fn worker(
    n: usize,
    blue: Client,
    blue_role: String,
    target: ConnectConfig,
    slot: String,
    generation: i32,
    queue: Arc<Mutex<VecDeque<Job>>>,
    progress: Arc<Progress>,
) -> Result<(), BackfillError> {
    let (mut green, green_conn) = connect(&target, "green").await?;
    green
        .batch_execute("SET session_replication_role = replica; SET synchronous_commit = off")
        .await
        .map_err(|e| BackfillError::green("set up the copy session", e))?;
    loop {
        let Some(job) = queue.lock().await.pop_front() else {
            break;
        };
        let rows = copy_chunk(n, &blue, &mut green, &slot, generation, &job, &progress)
            .await
            .map_err(|e| {
                let (source, target_table) = (&job.chunk.source, &job.chunk.target);
                super::security::refine(e, source, target_table, &blue_role, target.user())
            })?;
        progress.chunk_done(&job.chunk.target, rows);
        tracing::debug!(table = %job.chunk.target, source = %job.chunk.source, chunk = job.chunk.chunk, rows, "chunk copied");
    }
    blue.batch_execute("COMMIT")
        .await
        .map_err(|e| BackfillError::blue("end the snapshot transaction", e))?;
    client::close(green, green_conn).await;
    Ok(())
}

async fn copy_chunk(
    worker: usize,
    blue: &Client,
    green: &mut Client,
    slot: &str,
    generation: i32,
    job: &Job,
    progress: &Progress,
) -> Result<u64, BackfillError> {
    let table = &job.table;
    let what = || {
        format!(
            "copy {} (chunk {} of {})",
            table.target, job.chunk.chunk, job.chunk.source
        )
    };
    let tx = green
        .transaction()
        .await
        .map_err(|e| BackfillError::green(&what(), e))?;
    let upsert = table
        .upsert_key
        .as_ref()
        .map(|key| table.upsert_sql(worker, key));
    if let Some([create, _, _]) = &upsert {
        tx.batch_execute(create)
            .await
            .map_err(|e| BackfillError::green(&what(), e))?;
    }
    let sink = tx
        .copy_in::<_, Bytes>(&table.copy_in_sql(worker))
        .await
        .map_err(|e| BackfillError::green(&what(), e))?;
    let stream = blue
        .copy_out(&table.copy_out_sql(&job.chunk, job.whole))
        .await
        .map_err(|e| BackfillError::blue(&what(), e))?;
    pin_mut!(sink);
    pin_mut!(stream);
    let counter = progress.table(&table.target);
    // Live progress counts COPY messages (one per row, plus a binary COPY's trailer); once the
    // chunk is in, green's own count replaces them, and a chunk that fails counts nothing.
    let mut counted = 0u64;
    let streamed = async {
        while let Some(data) = stream.next().await {
            let data = data.map_err(|e| BackfillError::blue(&what(), e))?;
            counter
                .bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            counter.rows.fetch_add(1, Ordering::Relaxed);
            counted += 1;
            // `feed`, not `send`: `send` flushes every row as a write of its own.
            sink.feed(data)
                .await
                .map_err(|e| BackfillError::green(&what(), e))?;
        }
        sink.as_mut()
            .finish()
            .await
            .map_err(|e| BackfillError::green(&what(), e))
    }
    .await;
    counter.rows.fetch_sub(counted, Ordering::Relaxed);
    let rows = streamed?;
    counter.rows.fetch_add(rows, Ordering::Relaxed);
    if let Some([_, merge, drop]) = &upsert {
        tx.batch_execute(merge)
            .await
            .map_err(|e| BackfillError::green(&what(), e))?;
        tx.batch_execute(drop)
            .await
            .map_err(|e| BackfillError::green(&what(), e))?;
    }
    state::finish_chunk(&tx, slot, &job.chunk, generation, rows).await?;
    tx.commit()
        .await
        .map_err(|e| BackfillError::green(&what(), e))?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> TableCopy {
        TableCopy {
            target: QualifiedName::new("public", "t x"),
            blue_columns: vec!["\"id\"".into(), "\"name\"".into()],
            green_columns: vec!["\"id\"".into(), "\"full_name\"".into()],
            binary: false,
            row_filter: None,
            upsert_key: None,
        }
    }

    #[test]
    fn small_relations_are_one_chunk() {
        let t = QualifiedName::new("public", "t");
        assert_eq!(split(&t, &t, 0, 100, 1).len(), 1);
        assert_eq!(split(&t, &t, 150, 100, 1).len(), 1);
        let chunks = split(&t, &t, 1000, 100, 1);
        assert_eq!(chunks.len(), 10);
        assert_eq!(chunks[0].first_block, 0);
        assert_eq!(chunks[0].end_block, Some(100));
        assert_eq!(chunks[9].first_block, 900);
        assert_eq!(chunks[9].end_block, None);
        // Contiguous, covering every block.
        for w in chunks.windows(2) {
            assert_eq!(w[0].end_block, Some(w[1].first_block));
        }
    }

    #[test]
    fn copy_statements_quote_and_range() {
        let t = table();
        let mut chunk = split(&t.target, &t.target, 1000, 100, 1).remove(3);
        assert_eq!(
            t.copy_out_sql(&chunk, false),
            "COPY (SELECT \"id\", \"name\" FROM ONLY \"public\".\"t x\" WHERE ctid >= '(300,0)'::tid \
             AND ctid < '(400,0)'::tid) TO STDOUT"
        );
        chunk.end_block = None;
        let mut filtered = table();
        filtered.row_filter = Some("id > 5".into());
        filtered.binary = true;
        assert_eq!(
            filtered.copy_out_sql(&chunk, false),
            "COPY (SELECT \"id\", \"name\" FROM ONLY \"public\".\"t x\" WHERE ctid >= '(300,0)'::tid \
             AND (id > 5)) TO STDOUT (FORMAT binary)"
        );
        assert_eq!(
            t.copy_out_sql(&chunk, true),
            "COPY \"public\".\"t x\" (\"id\", \"name\") TO STDOUT"
        );
        assert_eq!(
            t.copy_in_sql(0),
            "COPY \"public\".\"t x\" (\"id\", \"full_name\") FROM STDIN"
        );
    }

    #[test]
    fn upserts_merge_through_a_stage() {
        let mut t = table();
        t.upsert_key = Some(vec!["\"id\"".into()]);
        assert_eq!(
            t.copy_in_sql(2),
            "COPY \"blueshift_stage_2\" (\"id\", \"full_name\") FROM STDIN"
        );
        let [_, merge, _] = t.upsert_sql(2, &["\"id\"".to_owned()]);
        assert_eq!(
            merge,
            "INSERT INTO \"public\".\"t x\" (\"id\", \"full_name\") OVERRIDING SYSTEM VALUE \
             SELECT \"id\", \"full_name\" FROM \"blueshift_stage_2\" ON CONFLICT (\"id\") \
             DO UPDATE SET \"full_name\" = EXCLUDED.\"full_name\""
        );
    }
}
