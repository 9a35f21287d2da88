//! Backfill: blue's existing rows copied into green, consistent with the replication slot, so
//! that streaming takes over with no gap and nothing applied twice.
//!
//! ```text
//!  blue: CREATE_REPLICATION_SLOT … EXPORT_SNAPSHOT ──▶ snapshot S, consistent point C
//!        N workers: BEGIN REPEATABLE READ; SET TRANSACTION SNAPSHOT 'S'
//!        COPY (SELECT … FROM ONLY leaf WHERE ctid in chunk) TO STDOUT ─┐  (no row parsing)
//!  green:                                   COPY … FROM STDIN ◀─────────┘
//!        + chunk recorded finished, same transaction
//!  then: keys restored → (catch-up, after a resume) → other indexes, FKs → sequences → stream
//! ```
//!
//! # Why the result is exact
//!
//! **One snapshot.** The slot is created with an exported snapshot S at its consistent point C.
//! A transaction is in S exactly when its commit record precedes C, and the slot streams exactly
//! the transactions whose commit record is at or after C. Every copy worker imports S before the
//! replication connection does anything else, so the union of the chunks is blue's state at C
//! and the stream from C carries everything after it: nothing missed, nothing twice.
//!
//! **Chunks.** A relation is split into block ranges (`ctid >= '(a,0)' AND ctid < '(b,0)'`, a
//! TID range scan on PostgreSQL 14+; the last range is open-ended). Under one snapshot the ranges
//! partition the visible rows, so chunks copied by different workers neither overlap nor miss.
//! Each chunk's rows and the record that it is finished commit in one green transaction.
//!
//! **Resume.** A crash ends the snapshot. The next run takes a new one — snapshot generation
//! g, at C_g, from a temporary slot with an exported snapshot while the real slot keeps its
//! place at C_1 — and copies only the unfinished chunks. Each table then has a *fence*: `lo`,
//! the oldest generation among its chunks, and `hi`, the newest. Applying the stream (from the
//! slot, at C_1 or after):
//!
//! - a change to the table in a transaction committed before `lo` is skipped: every chunk was
//!   copied at or after it, so every chunk already contains it;
//! - a change at or after `hi` is applied normally: every chunk predates it;
//! - a change in between meets rows of mixed ages, so it is applied *idempotently*
//!   ("reconcile"): INSERT becomes `INSERT … ON CONFLICT (key) DO UPDATE`, an UPDATE that
//!   carries its whole new row becomes a delete of the old key plus that upsert, DELETE tolerates
//!   a missing row. The last change to a key before `hi` then leaves exactly the row blue had at
//!   `hi`, whatever green held before it; keys with no change in between were copied with the
//!   same value in every generation, because a row that does not change does not move (its ctid
//!   stays in the same chunk). Rows copied again into a table that already holds some of them
//!   (a row that moved between chunks) are loaded with the same upsert.
//!
//!   Two things break "a row that does not change does not move": `VACUUM FULL`/`CLUSTER`/
//!   `TRUNCATE` between generations. Each chunk records its relation's file node; a table whose
//!   file node changed is emptied on green and copied again whole at the new generation (its
//!   fence is then a plain skip). A table without a key on green cannot be upserted and is also
//!   copied again whole. The planner's snapshot transaction keeps a lock on every table it sized
//!   until the copy ends, so no rewrite happens during a copy. One case cannot be reconciled:
//!   an UPDATE inside the window that leaves a TOASTed value unchanged (so blue did not send it)
//!   for a row green does not hold. The applier stops on it rather than guess, and the backfill
//!   copies that table again whole under a new snapshot (its fence becomes a plain skip) and
//!   catches up again.
//!
//! **Crashes between steps.** Index definitions are recorded in the transaction that drops
//! them, each restore in the transaction that restores it, each table's chunk plan in one
//! transaction, and each chunk with its rows; a run that stops anywhere resumes from what green
//! holds. The slot must survive: an unfinished backfill (or green holding progress through the
//! slot) with the slot gone is refused, never silently restarted.
//!
//! **Tables added later.** Green records which published tables it holds the rows of; one
//! added to the publication afterwards (while sync runs or while it is down) is copied by
//! reopening the run for it alone, under a snapshot of its own: its fence then skips what the
//! copy holds, exactly as above (see `start`).
//!
//! **Nothing hidden.** Every copy session sets `row_security = off`, and a table a policy
//! applies to for the connecting role is refused before anything is created (see `security`).
//!
//! Indexes other than keys, unique constraints and foreign keys are rebuilt only once the stream
//! has passed every table's `hi` (a catch-up with one applier, before sync proper starts), so
//! they never see a mixed state.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use blueshift_applier::fence::{Fence, Fences};
use blueshift_decoder::connection::{CreateSlotOptions, ReplicationConnection, SnapshotAction};
use blueshift_decoder::Lsn;
use tokio::sync::Mutex;
use tokio_postgres::Client;

use crate::metrics::Metrics;
use crate::schema::{self, quote_ident, QualifiedName, Verdict};
use crate::sync::SyncConfig;

mod catalog;
pub mod copy;
mod error;
pub mod indexes;
pub mod progress;
mod security;
mod start;
mod state;

pub use error::BackfillError;
use start::Start;

pub use progress::{Phase, Progress, TableCounters};

/// When sync backfills.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BackfillMode {
    /// When the slot is new, or an earlier backfill is unfinished.
    #[default]
    Auto,
    /// Always (a new copy when no backfill is unfinished: green's tables must be empty).
    Always,
    /// Never: green was loaded otherwise (every published table is declared loaded at the
    /// first start). An unfinished backfill, or a table published since, is then an error.
    Never,
}

/// How to backfill.
#[derive(Debug, Clone)]
pub struct BackfillOptions {
    /// When.
    pub mode: BackfillMode,
    /// Parallel copy workers (connections to each side).
    pub copy_workers: usize,
    /// Target chunk size; a relation smaller than one and a half chunks is not split.
    pub chunk_bytes: u64,
    /// Keep green's indexes and constraints during the load instead of rebuilding them after.
    pub keep_indexes: bool,
    /// `maintenance_work_mem` for index builds.
    pub maintenance_work_mem: String,
    /// Stop after the backfill (`blueshift backfill`) instead of streaming on.
    pub only: bool,
}

impl Default for BackfillOptions {
    fn default() -> Self {
        BackfillOptions {
            mode: BackfillMode::Auto,
            copy_workers: 2,
            chunk_bytes: 64 << 20,
            keep_indexes: false,
            maintenance_work_mem: "256MB".to_owned(),
            only: false,
        }
    }
}

/// What a backfill did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackfillSummary {
    /// Whether it ran at all.
    pub ran: bool,
    /// Rows copied in this run.
    pub rows: u64,
    /// Chunks copied in this run.
    pub chunks: u64,
    /// Chunks already finished by an earlier run.
    pub chunks_resumed: u64,
    /// Snapshot generations so far (1 unless resumed).
    pub generations: usize,
    /// Indexes and constraints rebuilt.
    pub indexes: usize,
    /// Sequences set.
    pub sequences: usize,
}

/// Backfills when `options.mode` says so (see [`BackfillMode`]), and finishes an interrupted one.
pub async fn run(
    config: &SyncConfig,
    options: &BackfillOptions,
    metrics: &Metrics,
    progress: &Arc<Progress>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<BackfillSummary, BackfillError> {
    let (mut green, green_conn) = copy::connect(&config.target, "green").await?;
    let (blue, blue_conn) = copy::connect(&config.source, "blue").await?;
    let shutdown: Shutdown = futures_util::FutureExt::shared(Box::pin(shutdown));
    let result = run_with(
        config, options, metrics, progress, &mut green, &blue, shutdown,
    )
    .await;
    crate::client::close(green, green_conn).await;
    crate::client::close(blue, blue_conn).await;
    if result.is_ok() {
        progress.set_phase(Phase::Done);
    }
    result
}

/// The shutdown request, shared by every step that waits on it.
type Shutdown = futures_util::future::Shared<
    std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>>,
>;

async fn run_with(
    config: &SyncConfig,
    options: &BackfillOptions,
    metrics: &Metrics,
    progress: &Arc<Progress>,
    green: &mut Client,
    blue: &Client,
    shutdown: Shutdown,
) -> Result<BackfillSummary, BackfillError> {
    let slot = config.slot.as_str();
    let start = start::decide(config, options, green, blue).await?;
    if start == Start::Nothing {
        return Ok(BackfillSummary::default());
    }
    let previous = state::run(&*green, slot).await?;
    // The slot exists unless a fresh copy creates it.
    let slot_exists = start != Start::Fresh || catalog::slot_exists(blue, slot).await?;
    state::ensure(green).await?;
    progress.set_phase(Phase::Planning);
    let plan = schema::plan(blue, &*green, Some(&config.publication), &config.mapping).await?;
    let published: BTreeSet<QualifiedName> = plan.tables.iter().map(|t| t.table.clone()).collect();
    // The tables this run copies: all of them when fresh; those of the run (not the ones
    // declared loaded) when resuming; the added ones when adding.
    let declared = state::declared(&*green, slot).await?;
    let mut tables: BTreeMap<QualifiedName, Arc<copy::TableCopy>> = BTreeMap::new();
    for t in &plan.tables {
        let copied = match &start {
            Start::Add(added) => added.contains(&t.table),
            Start::Resume => !declared.contains(&t.table),
            Start::Fresh | Start::Nothing => true,
        };
        if !copied {
            continue;
        }
        if !t.on_green || t.verdict == Verdict::Blocked {
            let reason = t
                .notes
                .iter()
                .map(|n| n.message.clone())
                .chain(
                    t.columns
                        .iter()
                        .filter(|c| c.verdict == Verdict::Blocked)
                        .map(|c| format!("column {}: {}", quote_ident(&c.name), c.note)),
                )
                .collect::<Vec<_>>()
                .join("; ");
            return Err(BackfillError::Blocked {
                table: t.table.clone(),
                reason,
            });
        }
        let mappings = t.column_mappings();
        let binary = t.binary_compatible();
        tables.insert(
            t.table.clone(),
            Arc::new(copy::TableCopy {
                target: t.table.clone(),
                blue_columns: mappings.iter().map(|m| quote_ident(&m.blue)).collect(),
                green_columns: mappings.iter().map(|m| quote_ident(&m.green)).collect(),
                binary,
                row_filter: catalog::row_filter(blue, &config.publication, &t.table).await?,
                upsert_key: None,
            }),
        );
    }
    let names: Vec<QualifiedName> = tables.keys().cloned().collect();
    // Row-level security: refused before anything is created, for what is still to copy.
    let to_copy = state::uncopied(&*green, slot, &names).await?;
    security::check(blue, &*green, &to_copy).await?;
    // So are sequences blueshift may not read: the copy would otherwise end on them.
    crate::sequence::check_readable(blue, &config.publication).await?;
    let keep_indexes = match &start {
        Start::Fresh => {
            for name in &names {
                if !catalog::is_empty(&*green, name).await? {
                    return Err(BackfillError::NotEmpty {
                        table: name.clone(),
                    });
                }
            }
            state::start(&*green, slot, options.keep_indexes).await?;
            if !options.keep_indexes {
                let ddl = indexes::read(green, &names).await?;
                indexes::drop_all(green, slot, &ddl).await?;
            }
            tracing::info!(slot, tables = names.len(), "backfill started");
            options.keep_indexes
        }
        Start::Add(added) => {
            for name in &names {
                if !catalog::is_empty(&*green, name).await? {
                    return Err(BackfillError::AddedNotEmpty {
                        table: name.clone(),
                    });
                }
            }
            // Their indexes stay (see `start`); from here on, the run is unfinished and every
            // start resumes it before streaming.
            let keep = previous.map_or(options.keep_indexes, |r| r.keep_indexes);
            state::reopen(&*green, slot, keep).await?;
            let list: Vec<String> = added.iter().map(ToString::to_string).collect();
            tracing::info!(slot, tables = %list.join(", "), "copying the tables added to the publication");
            keep
        }
        Start::Resume | Start::Nothing => {
            tracing::info!(slot, "resuming the unfinished backfill");
            previous.map_or(options.keep_indexes, |r| r.keep_indexes)
        }
    };

    let mut summary = BackfillSummary {
        ran: true,
        ..BackfillSummary::default()
    };
    let mut slot_exists = slot_exists;
    let mut resets = 0;
    loop {
        if !all_copied(&*green, slot, &tables).await? {
            copy_generation(
                config,
                options,
                green,
                &mut tables,
                slot_exists,
                progress,
                &mut summary,
                shutdown.clone(),
            )
            .await?;
            slot_exists = true;
        }

        // Fences, and whether any table needs the stream to reconcile it before its other
        // indexes.
        let fences = fences(&*green, slot).await?;
        let reconcile_until = tables
            .keys()
            .filter_map(|t| fences.get(&t.schema, &t.name))
            .filter(|f| f.reconcile_before > f.skip_before)
            .map(|f| f.reconcile_before)
            .max();
        progress.set_phase(Phase::Indexing);
        if !keep_indexes {
            summary.indexes += restore_indexes(config, options, indexes::Phase::Keys, None).await?;
        }
        let Some(until) = reconcile_until else { break };
        progress.set_phase(Phase::CatchingUp);
        tracing::info!(until = %until, "applying the changes made while the copy was interrupted");
        match crate::sync::catch_up(config, metrics, until).await {
            Ok(()) => break,
            // A table published after this run was planned: no longer published, it cannot be
            // copied; else the next attempt plans it.
            Err(crate::sync::SyncError::TableAdded { table }) if !published.contains(&table) => {
                return Err(BackfillError::NotPublished {
                    table,
                    publication: config.publication.clone(),
                });
            }
            // A change that cannot be reconciled with the rows copied (an UPDATE that left a
            // TOASTed value unchanged for a row green lacks): copy that table again whole
            // under a new snapshot, which the stream then only skips up to.
            Err(e) if resets < 3 => {
                let Some(table) = unreconcilable(&e, &tables) else {
                    return Err(BackfillError::CatchUp(Box::new(e)));
                };
                resets += 1;
                tracing::warn!(table = %table, error = %e, "cannot reconcile the table with the stream; copying it again whole");
                reset_table(green, slot, &table).await?;
            }
            Err(e) => return Err(BackfillError::CatchUp(Box::new(e))),
        }
    }
    progress.set_phase(Phase::Indexing);
    if !keep_indexes {
        summary.indexes += restore_indexes(config, options, indexes::Phase::Rest, None).await?;
    }
    progress.set_phase(Phase::Sequences);
    let synced = crate::sequence::copy(
        blue,
        &*green,
        &config.publication,
        config.mapping.renames(),
        crate::sequence::CopyMode::Exact,
    )
    .await?;
    summary.sequences = synced.set;
    state::finish(&*green, slot).await?;
    summary.generations = state::generations(&*green, slot).await?.len();
    tracing::info!(
        rows = summary.rows,
        chunks = summary.chunks,
        resumed_chunks = summary.chunks_resumed,
        generations = summary.generations,
        indexes = summary.indexes,
        sequences = summary.sequences,
        elapsed = ?progress.elapsed(),
        "backfill finished"
    );
    Ok(summary)
}

/// Takes a snapshot generation and copies every unfinished chunk under it.
#[allow(clippy::too_many_arguments)]
async fn copy_generation(
    config: &SyncConfig,
    options: &BackfillOptions,
    green: &mut Client,
    tables: &mut BTreeMap<QualifiedName, Arc<copy::TableCopy>>,
    slot_exists: bool,
    progress: &Arc<Progress>,
    summary: &mut BackfillSummary,
    shutdown: Shutdown,
) -> Result<(), BackfillError> {
    let slot = config.slot.as_str();
    let workers = options.copy_workers.max(1);
    let keep_indexes = state::run(&*green, slot)
        .await?
        .is_some_and(|r| r.keep_indexes);
    // The snapshot: from the slot itself when it is new, else from a temporary slot (gone with
    // its connection) while the real slot stays where it is.
    let mut repl = ReplicationConnection::connect(&config.source)
        .await
        .map_err(BackfillError::Replication)?;
    let (slot_name, temporary) = if slot_exists {
        // Unique per attempt and within the 63 bytes of a name.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        (format!("blueshift_bf_{}_{nanos}", std::process::id()), true)
    } else {
        (slot.to_owned(), false)
    };
    // Blue's identity for the slot guard, asked first: the exported snapshot lives only until
    // the replication connection's next command.
    let identity = if temporary {
        None
    } else {
        Some(crate::slot_guard::BlueIdentity::from(
            &repl
                .identify_system()
                .await
                .map_err(BackfillError::Replication)?,
        ))
    };
    let created = repl
        .create_slot(
            &slot_name,
            CreateSlotOptions {
                temporary,
                snapshot: SnapshotAction::Export,
                two_phase: false,
            },
        )
        .await
        .map_err(BackfillError::Replication)?;
    if let Some(identity) = &identity {
        // The real slot: green records it at its consistent point before anything streams.
        crate::slot_guard::record(green, slot, identity, created.consistent_point, true)
            .await
            .map_err(|e| BackfillError::SlotGuard(Box::new(e)))?;
    }
    let snapshot = created
        .snapshot_name
        .clone()
        .ok_or_else(|| BackfillError::Corrupt {
            what: "answer to CREATE_REPLICATION_SLOT … EXPORT_SNAPSHOT without a snapshot"
                .to_owned(),
        })?;
    let generation = state::add_generation(&*green, slot, created.consistent_point).await?;
    tracing::info!(slot = %slot_name, temporary, generation, consistent_point = %created.consistent_point, "snapshot taken");
    // The plan: chunks recorded on the first generation; file nodes checked on later ones.
    // Sizes are read inside the snapshot too (the replication connection stays idle meanwhile).
    let (planner_client, planner_conn) = copy::import(&config.source, &snapshot).await?;
    let planner = &planner_client;
    let chunk_blocks = i64::try_from(options.chunk_bytes / 8192).unwrap_or(i64::MAX);
    let mut current: BTreeMap<QualifiedName, Vec<(QualifiedName, i64, i64)>> = BTreeMap::new();
    for table in tables.keys() {
        current.insert(table.clone(), copy::sources(planner, table).await?);
    }
    let plan_table = |table: &QualifiedName| -> Vec<state::Chunk> {
        current
            .get(table)
            .into_iter()
            .flatten()
            .flat_map(|(source, blocks, filenode)| {
                copy::split(table, source, *blocks, chunk_blocks, *filenode)
            })
            .collect()
    };
    // Per table: nothing copied yet (or never planned: a crash while planning, a table added to
    // the publication) → planned afresh; partly copied → reconciled ("mixed"), or copied again
    // whole when its relations were rewritten since (VACUUM FULL, CLUSTER, TRUNCATE, partitions
    // attached or detached) or green has no key to merge on; all copied → nothing.
    let chunks = state::chunks(&*green, slot).await?;
    let mut replan: Vec<(QualifiedName, bool)> = Vec::new();
    let mut mixed: Vec<QualifiedName> = Vec::new();
    for (table, sources) in &current {
        let mine: Vec<&state::Chunk> = chunks.iter().filter(|c| &c.target == table).collect();
        let done = mine.iter().filter(|c| c.generation.is_some()).count();
        if mine.is_empty() && !catalog::is_empty(&*green, table).await? {
            // Never planned (published after this run began), yet green holds rows of it.
            return Err(BackfillError::AddedNotEmpty {
                table: table.clone(),
            });
        }
        if done == 0 {
            replan.push((table.clone(), false));
            continue;
        }
        if done == mine.len() {
            continue;
        }
        let same_sources = sources.iter().all(|(source, _, filenode)| {
            mine.iter()
                .any(|c| &c.source == source && c.filenode == *filenode)
        }) && mine
            .iter()
            .all(|c| sources.iter().any(|(source, _, _)| &c.source == source));
        if same_sources && !keep_indexes {
            mixed.push(table.clone());
        } else {
            replan.push((table.clone(), true));
        }
    }
    if !mixed.is_empty() {
        // Mixed tables get their key back first, to upsert on.
        restore_indexes(config, options, indexes::Phase::Keys, Some(&mixed)).await?;
    }
    for table in mixed {
        match catalog::green_key(&*green, &table).await? {
            Some(key) => {
                if let Some(copy) = tables.get_mut(&table) {
                    Arc::make_mut(copy).upsert_key = Some(key);
                }
            }
            None => replan.push((table, true)),
        }
    }
    for (table, truncate) in &replan {
        let tx = green
            .transaction()
            .await
            .map_err(|e| BackfillError::green("open a transaction", e))?;
        if *truncate {
            tracing::warn!(table = %table, "copying the table again whole (rewritten on blue since the interrupted copy, or no key on green to merge on)");
        }
        state::clear_table(&tx, slot, table, *truncate).await?;
        state::add_chunks(&tx, slot, &plan_table(table)).await?;
        tx.commit()
            .await
            .map_err(|e| BackfillError::green("plan a table", e))?;
    }
    let chunks = state::chunks(&*green, slot).await?;
    let sizes: HashMap<&QualifiedName, i64> = current
        .values()
        .flatten()
        .map(|(source, blocks, _)| (source, *blocks))
        .collect();

    // Progress, and the queue: biggest relations first so the long chunks start early.
    let mut per_source: HashMap<(QualifiedName, QualifiedName), usize> = HashMap::new();
    for c in &chunks {
        *per_source
            .entry((c.target.clone(), c.source.clone()))
            .or_default() += 1;
    }
    for table in tables.keys() {
        let counters = progress.table(table);
        let mine = chunks.iter().filter(|c| &c.target == table);
        let (total, done) = mine.fold((0u64, 0u64), |(t, d), c| {
            (t + 1, d + u64::from(c.generation.is_some()))
        });
        counters.chunks_total.store(total, Ordering::Relaxed);
        counters.chunks_done.store(done, Ordering::Relaxed);
        summary.chunks_resumed += done;
        let expected = catalog::row_estimate(planner, table).await?;
        counters.rows_expected.store(expected, Ordering::Relaxed);
    }
    let mut todo: Vec<copy::Job> = chunks
        .iter()
        .filter(|c| c.generation.is_none())
        .filter_map(|c| {
            let table = tables.get(&c.target)?;
            Some(copy::Job {
                whole: per_source
                    .get(&(c.target.clone(), c.source.clone()))
                    .copied()
                    == Some(1),
                chunk: c.clone(),
                table: Arc::clone(table),
            })
        })
        .collect();
    todo.sort_by_key(|j| {
        std::cmp::Reverse(
            j.chunk
                .blocks(sizes.get(&j.chunk.source).copied().unwrap_or(0)),
        )
    });
    summary.chunks = todo.len() as u64;
    progress.set_phase(Phase::Copying);
    let queue = Arc::new(Mutex::new(VecDeque::from(todo)));
    // Read before any worker starts: rows they count belong to this generation.
    let rows_before = progress.totals().0;
    // Each worker runs on a thread of its own with a single-threaded runtime: a chunk is
    // millions of small COPY messages handed between a connection task and the worker, and
    // keeping those hand-offs on one thread avoids a cross-thread wake-up per row.
    let mut threads = Vec::with_capacity(workers);
    let mut ready = Vec::with_capacity(workers);
    for n in 0..workers {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<bool>();
        ready.push(ready_rx);
        let job = copy::WorkerJob {
            n,
            source: config.source.clone(),
            target: config.target.clone(),
            snapshot: snapshot.clone(),
            slot: slot.to_owned(),
            generation,
            queue: Arc::clone(&queue),
            progress: Arc::clone(progress),
        };
        let thread = std::thread::Builder::new()
            .name(format!("blueshift-copy-{n}"))
            .spawn(move || job.run(ready_tx))
            .map_err(|e| BackfillError::Corrupt {
                what: format!("failure to start a copy thread: {e}"),
            })?;
        threads.push(thread);
    }
    // Every worker holds the snapshot (or failed): the replication connection may go, and a
    // temporary slot with it.
    for r in ready {
        let _ = r.await;
    }
    if let Err(e) = repl.close().await {
        tracing::debug!(error = %e, "the replication connection did not close cleanly");
    }
    let joined = {
        let queue = Arc::clone(&queue);
        let join = tokio::task::spawn_blocking(move || {
            threads
                .into_iter()
                .map(|t| {
                    t.join().unwrap_or_else(|_| {
                        Err(BackfillError::Corrupt {
                            what: "panic in a copy thread".to_owned(),
                        })
                    })
                })
                .collect::<Vec<_>>()
        });
        tokio::pin!(join);
        tokio::pin!(shutdown);
        let mut interrupted = false;
        loop {
            tokio::select! {
                done = &mut join => break done.map_err(BackfillError::Task)?,
                () = &mut shutdown, if !interrupted => {
                    // Workers finish the chunk in hand; the rest waits for the next run.
                    queue.lock().await.clear();
                    interrupted = true;
                }
            }
        }
        .into_iter()
        .collect::<Result<Vec<()>, BackfillError>>()
        .and_then(|v| {
            if interrupted {
                Err(BackfillError::Interrupted)
            } else {
                Ok(v)
            }
        })
    };
    // The planner's snapshot transaction held a lock on every table it sized, so no rewrite
    // (VACUUM FULL, CLUSTER, TRUNCATE) could move rows between chunks during the copy.
    crate::client::close(planner_client, planner_conn).await;
    joined?;
    summary.rows = progress.totals().0 - rows_before;
    Ok(())
}

/// Restores the dropped indexes and constraints of `phase` (of `only` tables, when given) with
/// the copy workers' parallelism.
async fn restore_indexes(
    config: &SyncConfig,
    options: &BackfillOptions,
    phase: indexes::Phase,
    only: Option<&[QualifiedName]>,
) -> Result<usize, BackfillError> {
    indexes::restore(
        &config.target,
        &config.slot,
        phase,
        only,
        options.copy_workers.max(1),
        &options.maintenance_work_mem,
    )
    .await
}

/// Whether every published table is planned and every chunk copied (a run that stopped while
/// restoring indexes or catching up needs no new snapshot).
async fn all_copied(
    green: &Client,
    slot: &str,
    tables: &BTreeMap<QualifiedName, Arc<copy::TableCopy>>,
) -> Result<bool, BackfillError> {
    let chunks = state::chunks(green, slot).await?;
    Ok(chunks.iter().all(|c| c.generation.is_some())
        && tables.keys().all(|t| chunks.iter().any(|c| &c.target == t)))
}

/// The table named by a catch-up error that re-copying it repairs.
fn unreconcilable(
    e: &crate::sync::SyncError,
    tables: &BTreeMap<QualifiedName, Arc<copy::TableCopy>>,
) -> Option<QualifiedName> {
    use blueshift_applier::ApplyError;
    let crate::sync::SyncError::Apply { source, .. } = e else {
        return None;
    };
    let (ApplyError::CannotReconcile { table, .. } | ApplyError::RowNotFound { table, .. }) =
        source
    else {
        return None;
    };
    tables
        .keys()
        .find(|t| format!("{}.{}", t.schema, t.name) == *table)
        .cloned()
}

/// Empties `table` on green and forgets its chunks, in one transaction: it is copied again
/// whole under the next snapshot.
async fn reset_table(
    green: &mut Client,
    slot: &str,
    table: &QualifiedName,
) -> Result<(), BackfillError> {
    let tx = green
        .transaction()
        .await
        .map_err(|e| BackfillError::green("open a transaction", e))?;
    state::clear_table(&tx, slot, table, true).await?;
    tx.commit()
        .await
        .map_err(|e| BackfillError::green("reset a table", e))
}

/// Whether green holds a backfill record of `slot`: if so, whether it finished and how many
/// of the indexes and constraints it dropped are not restored yet.
pub async fn recorded(
    green: &impl tokio_postgres::GenericClient,
    slot: &str,
) -> Result<Option<(bool, i64)>, tokio_postgres::Error> {
    let exists = crate::client::relation_exists(green, "blueshift.backfill_run").await?;
    if !exists {
        return Ok(None);
    }
    let row = green
        .query_opt(
            "SELECT finished_at IS NOT NULL, (SELECT pg_catalog.count(*) FROM blueshift.backfill_ddl d \
              WHERE d.slot = r.slot AND NOT d.restored) FROM blueshift.backfill_run r WHERE slot = $1",
            &[&slot],
        )
        .await?;
    if row.is_some() {
        return Ok(row.map(|r| (r.get(0), r.get(1))));
    }
    // Tables declared loaded by --no-backfill, without a run: a finished record too.
    let declared = crate::client::relation_exists(green, "blueshift.backfill_declared").await?;
    if !declared {
        return Ok(None);
    }
    let any: bool = green
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM blueshift.backfill_declared WHERE slot = $1)",
            &[&slot],
        )
        .await?
        .get(0);
    Ok(any.then_some((true, 0)))
}

/// The published tables green holds the rows of through `slot`: copied by a backfill (or being
/// copied: a run copies every table it planned before streaming goes on), or declared loaded by
/// `--no-backfill`. Sync applies changes only to these.
pub async fn loaded(
    green: &impl tokio_postgres::GenericClient,
    slot: &str,
) -> Result<BTreeSet<QualifiedName>, BackfillError> {
    Ok(state::loaded(green, slot).await?.unwrap_or_default())
}

/// Forgets that green holds `table` through `slot` (its rows stay): the next start copies it
/// again as a table added to the publication, into an empty green table.
pub(crate) async fn forget_loaded(
    green: &impl tokio_postgres::GenericClient,
    slot: &str,
    table: &QualifiedName,
) -> Result<(), tokio_postgres::Error> {
    state::forget_loaded(green, slot, table).await
}

/// Deletes green's backfill record of `slot` (green's rows stay).
pub async fn forget(
    green: &impl tokio_postgres::GenericClient,
    slot: &str,
) -> Result<(), tokio_postgres::Error> {
    state::forget(green, slot).await
}

/// The fences of `slot`'s backfill, by table (empty when there is none): what the appliers skip
/// and what they apply idempotently (see the module docs).
pub async fn fences(
    green: &impl tokio_postgres::GenericClient,
    slot: &str,
) -> Result<Fences, BackfillError> {
    let mut fences = Fences::default();
    if state::run(green, slot).await?.is_none() {
        return Ok(fences);
    }
    let generations: HashMap<i32, Lsn> =
        state::generations(green, slot).await?.into_iter().collect();
    let chunks = state::chunks(green, slot).await?;
    let mut by_table: BTreeMap<QualifiedName, (Lsn, Lsn)> = BTreeMap::new();
    for c in &chunks {
        let Some(lsn) = c.generation.and_then(|g| generations.get(&g)).copied() else {
            continue;
        };
        let entry = by_table.entry(c.target.clone()).or_insert((lsn, lsn));
        entry.0 = entry.0.min(lsn);
        entry.1 = entry.1.max(lsn);
    }
    for (table, (lo, hi)) in by_table {
        fences.insert(
            table.schema,
            table.name,
            Fence {
                skip_before: lo,
                reconcile_before: hi,
            },
        );
    }
    Ok(fences)
}
