//! The workers of the comparison and the recorder of finished chunks.
//!
//! Each worker holds one session per side, both in the snapshots at L (the pairs opened all at
//! once), and takes chunks from one queue (`--workers 1` is the serial path); each chunk is
//! compared by [`super::compare`]. Finished chunks go to one recorder, which writes them on green
//! in batches.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_postgres::Client;

use super::chunks::TableChunks;
use super::compare::{compare_chunk, Outcome, Pair};
use super::plan::TablePlan;
use super::point::Point;
use super::record::{self, FinishedChunk, PlannedChunk};
use super::{Depth, Difference, Hashing, TableReport, VerifyConfig, VerifyError, MAX_REPORTED};
use crate::backfill::{Phase, Progress};
use crate::schema::QualifiedName;

/// What every worker adds to.
#[derive(Default)]
pub(super) struct Shared {
    pub(super) tables: HashMap<QualifiedName, TableReport>,
    pub(super) differences: Vec<Difference>,
    pub(super) total: u64,
}

/// A unit of work.
struct Job {
    plan: usize,
    chunk: PlannedChunk,
}

/// Finished chunks recorded on green in one statement at most.
const RECORD_BATCH: usize = 256;

/// Runs the comparison of every table's unfinished chunks (see the module docs), counting into
/// `progress` (and through it the metrics). Each worker opens its own session pair, all at once;
/// finished chunks go to one recorder, which writes them on green in batches (whatever finished
/// while its last write was in flight), so no worker waits for a commit on green.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run(
    config: &VerifyConfig,
    plans: &Arc<Vec<TablePlan>>,
    tables: Vec<TableChunks>,
    point: &Point,
    records: &Arc<Client>,
    run_id: i64,
    invocation: i32,
    progress: &Arc<Progress>,
) -> Result<Outcome, VerifyError> {
    let workers = config.workers.max(1);
    let shared = Arc::new(Mutex::new(Shared::default()));
    let mut queue = VecDeque::new();
    {
        let mut guard = shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for TableChunks {
            plan: index,
            chunks,
            expected_rows,
        } in tables
        {
            let plan = &plans[index];
            let counters = progress.table(&plan.table);
            counters
                .chunks_total
                .store(chunks.len() as u64, Ordering::Relaxed);
            counters
                .rows_expected
                .store(expected_rows, Ordering::Relaxed);
            let report = guard
                .tables
                .entry(plan.table.clone())
                .or_insert_with(|| TableReport {
                    table: plan.table.clone(),
                    blue_rows: 0,
                    green_rows: 0,
                    chunks: 0,
                    chunks_resumed: 0,
                    differences: 0,
                    time: Duration::ZERO,
                    keyless: plan.keyless(),
                });
            let mut earlier = 0;
            for chunk in chunks {
                match chunk.result {
                    Some((blue_rows, green_rows, differences)) => {
                        // Finished by an earlier invocation: shown as done, not counted again
                        // in this process's metrics.
                        counters.rows.fetch_add(blue_rows, Ordering::Relaxed);
                        counters.chunks_done.fetch_add(1, Ordering::Relaxed);
                        report.chunks_resumed += 1;
                        report.blue_rows += blue_rows;
                        report.green_rows += green_rows;
                        report.differences += differences;
                        earlier += differences;
                    }
                    None => queue.push_back(Job {
                        plan: index,
                        chunk: chunk.planned,
                    }),
                }
            }
            guard.total += earlier;
        }
    }
    tracing::info!(
        run = run_id,
        chunks = queue.len(),
        tables = plans.len(),
        workers,
        "comparing"
    );
    let queue = Arc::new(Mutex::new(queue));
    progress.set_phase(Phase::Comparing);
    let (finished, to_record) = tokio::sync::mpsc::channel(workers * 2);
    let recorder = tokio::spawn(recorder(
        Arc::clone(records),
        run_id,
        point.lsn,
        invocation,
        to_record,
    ));
    let mut tasks = JoinSet::new();
    for n in 0..workers {
        let (queue, shared, plans, progress, finished) = (
            Arc::clone(&queue),
            Arc::clone(&shared),
            Arc::clone(plans),
            Arc::clone(progress),
            finished.clone(),
        );
        let (depth, hashing) = (config.depth, config.hashing);
        let keep = n == 0 && config.sample > 0;
        let (config, point) = (config.clone(), point.snapshots());
        tasks.spawn(async move {
            let pair = match Pair::open(&config, &point).await {
                Ok(pair) => pair,
                Err(e) => {
                    clear(&queue);
                    return Err(e);
                }
            };
            let result = worker(
                &pair, &queue, &shared, &plans, depth, hashing, &progress, &finished,
            )
            .await;
            if result.is_err() {
                clear(&queue);
            }
            if keep && result.is_ok() {
                return result.map(|()| Some(pair));
            }
            pair.close().await;
            result.map(|()| None)
        });
    }
    drop(finished);
    let mut failed = None;
    let mut sampler = None;
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(Some(pair))) => sampler = Some(pair),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                failed.get_or_insert(e);
            }
            Err(e) => {
                failed.get_or_insert(VerifyError::Task(e));
            }
        }
    }
    // Every sender is gone: the recorder writes what is left and ends.
    match recorder.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            failed.get_or_insert(e);
        }
        Err(e) => {
            failed.get_or_insert(VerifyError::Task(e));
        }
    }
    if let Some(e) = failed {
        if let Some(pair) = sampler {
            pair.close().await;
        }
        return Err(e);
    }
    let mut sampled = 0;
    if let Some(pair) = sampler {
        let result = super::sample::sample(&pair, plans, config.sample, &shared, progress).await;
        pair.close().await;
        sampled = result?;
    }
    let shared = std::mem::take(
        &mut *shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    Ok(Outcome {
        tables: shared.tables.into_values().collect(),
        differences: shared.differences,
        total: shared.total,
        sampled,
    })
}

/// Empties the queue (a worker failed: the others stop after their current chunk).
fn clear(queue: &Mutex<VecDeque<Job>>) {
    queue
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clear();
}

#[allow(clippy::too_many_arguments)]
async fn worker(
    pair: &Pair,
    queue: &Mutex<VecDeque<Job>>,
    shared: &Mutex<Shared>,
    plans: &[TablePlan],
    depth: Depth,
    hashing: Hashing,
    progress: &Progress,
    finished: &tokio::sync::mpsc::Sender<FinishedChunk>,
) -> Result<(), VerifyError> {
    loop {
        let Some(job) = queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop_front()
        else {
            return Ok(());
        };
        let plan = &plans[job.plan];
        let started = Instant::now();
        let result = compare_chunk(pair, plan, &job.chunk, depth, hashing).await?;
        progress.verify_chunk_done(
            &plan.table,
            result.blue_rows,
            result.green_rows,
            result.count,
        );
        {
            let mut s = shared
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            s.total += result.count;
            if let Some(t) = s.tables.get_mut(&plan.table) {
                t.chunks += 1;
                t.blue_rows += result.blue_rows;
                t.green_rows += result.green_rows;
                t.differences += result.count;
                t.time += started.elapsed();
            }
            for d in result.differences {
                if s.differences.len() < MAX_REPORTED {
                    s.differences.push(d);
                }
            }
        }
        let done = FinishedChunk {
            chunk: job.chunk,
            rows: (result.blue_rows, result.green_rows),
            differences: result.count,
        };
        if finished.send(done).await.is_err() {
            // The recorder failed (its error is the run's): nothing more can be recorded.
            return Ok(());
        }
    }
}

/// Records finished chunks on green as they come, in batches (see [`run`]).
async fn recorder(
    records: Arc<Client>,
    run_id: i64,
    lsn: blueshift_decoder::Lsn,
    invocation: i32,
    mut to_record: tokio::sync::mpsc::Receiver<FinishedChunk>,
) -> Result<(), VerifyError> {
    let mut batch = Vec::with_capacity(RECORD_BATCH);
    while let Some(first) = to_record.recv().await {
        batch.push(first);
        while batch.len() < RECORD_BATCH {
            match to_record.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let recorded = record::chunks_done(&records, run_id, lsn, invocation, &batch).await?;
        if recorded != batch.len() as u64 {
            tracing::warn!(
                run = run_id,
                batch = batch.len(),
                recorded,
                "some chunks were recorded finished already"
            );
        }
        for _ in &batch {
            blueshift_applier::failpoint::hit("verify-after-chunk");
        }
        batch.clear();
    }
    Ok(())
}
