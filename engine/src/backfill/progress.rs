//! Backfill progress, shared between the copy workers (which count) and whoever shows it: the
//! CLI's progress bars on a terminal, periodic log lines otherwise, and the metrics.
//!
//! `blueshift verify` uses the same piece ([`Progress::for_verify`]): its workers count the
//! rows of each chunk compared (blue's), its phases are planning, comparing, checking
//! constraints and done, and the same bars and log lines show it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::metrics::Metrics;
use crate::schema::QualifiedName;

/// Counters of one table.
#[derive(Debug, Default)]
pub struct TableCounters {
    /// Rows streamed so far (including chunks not yet committed).
    pub rows: AtomicU64,
    /// COPY bytes streamed so far.
    pub bytes: AtomicU64,
    /// Chunks finished (committed on green).
    pub chunks_done: AtomicU64,
    /// Chunks planned.
    pub chunks_total: AtomicU64,
    /// Rows blue's statistics expect (`reltuples`), for the ETA; 0 when unknown.
    pub rows_expected: AtomicU64,
}

/// What the backfill is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading schemas and planning.
    Planning,
    /// Copying rows.
    Copying,
    /// Applying the changes made while an interrupted copy was down.
    CatchingUp,
    /// Building indexes and constraints.
    Indexing,
    /// Setting sequences.
    Sequences,
    /// Verify: comparing chunks.
    Comparing,
    /// Verify: checking green's constraints and sequences.
    Checking,
    /// Finished.
    Done,
}

impl Phase {
    /// For messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Planning => "planning",
            Phase::Copying => "copying",
            Phase::CatchingUp => "catching up",
            Phase::Indexing => "building indexes",
            Phase::Sequences => "setting sequences",
            Phase::Comparing => "comparing",
            Phase::Checking => "checking constraints",
            Phase::Done => "done",
        }
    }
}

/// The progress of one backfill.
#[derive(Debug)]
pub struct Progress {
    tables: Mutex<BTreeMap<QualifiedName, Arc<TableCounters>>>,
    phase: Mutex<Phase>,
    started: Instant,
    metrics: Metrics,
    /// `backfill` or `verify`: what the lines say.
    job: &'static str,
}

impl Progress {
    /// Progress that also feeds `metrics`.
    pub fn new(metrics: Metrics) -> Arc<Progress> {
        Arc::new(Progress {
            tables: Mutex::new(BTreeMap::new()),
            phase: Mutex::new(Phase::Planning),
            started: Instant::now(),
            metrics,
            job: "backfill",
        })
    }

    /// The progress of a verify run, which also feeds `metrics` (verify's series).
    pub fn for_verify(metrics: Metrics) -> Arc<Progress> {
        Arc::new(Progress {
            tables: Mutex::new(BTreeMap::new()),
            phase: Mutex::new(Phase::Planning),
            started: Instant::now(),
            metrics,
            job: "verify",
        })
    }

    /// The counters of `table`, created when new.
    pub fn table(&self, table: &QualifiedName) -> Arc<TableCounters> {
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(tables.entry(table.clone()).or_default())
    }

    /// Every table's counters, by name.
    pub fn tables(&self) -> Vec<(QualifiedName, Arc<TableCounters>)> {
        let tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        tables
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect()
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set_phase(&self, phase: Phase) {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = phase;
        tracing::info!(phase = phase.as_str(), "{}", self.job);
    }

    /// Time since the backfill started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub(crate) fn chunk_done(&self, table: &QualifiedName, rows: u64) {
        let counters = self.table(table);
        counters.chunks_done.fetch_add(1, Ordering::Relaxed);
        self.metrics.backfill_chunk_done(rows);
    }

    /// A verify chunk of `table` compared: `blue_rows` and `green_rows` in it, `differences`
    /// found.
    pub(crate) fn verify_chunk_done(
        &self,
        table: &QualifiedName,
        blue_rows: u64,
        green_rows: u64,
        differences: u64,
    ) {
        let counters = self.table(table);
        counters.rows.fetch_add(blue_rows, Ordering::Relaxed);
        counters.chunks_done.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .verify_chunk_done(blue_rows, green_rows, differences);
    }

    /// The metrics this progress feeds.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Sums over every table: (rows, bytes, chunks done, chunks total, rows expected).
    pub fn totals(&self) -> (u64, u64, u64, u64, u64) {
        self.tables().iter().fold((0, 0, 0, 0, 0), |acc, (_, c)| {
            (
                acc.0 + c.rows.load(Ordering::Relaxed),
                acc.1 + c.bytes.load(Ordering::Relaxed),
                acc.2 + c.chunks_done.load(Ordering::Relaxed),
                acc.3 + c.chunks_total.load(Ordering::Relaxed),
                acc.4 + c.rows_expected.load(Ordering::Relaxed),
            )
        })
    }

    /// One line for logs: phase, rows, rate and ETA.
    pub fn summary_line(&self) -> String {
        let (rows, bytes, done, total, expected) = self.totals();
        let secs = self.elapsed().as_secs_f64().max(0.001);
        let rate = rows as f64 / secs;
        // No ETA before anything moved, nor without statistics (expected 0) on blue.
        let eta = if expected > rows && rows > 0 {
            format!(", ETA {:.0} s", (expected - rows) as f64 / rate)
        } else {
            String::new()
        };
        // Verify moves checksums, not rows: it counts no bytes.
        let size = if bytes > 0 || self.job == "backfill" {
            format!(" ({:.1} MB)", bytes as f64 / 1e6)
        } else {
            String::new()
        };
        format!(
            "{} {}: {rows} rows{size} in {secs:.1} s, {rate:.0} rows/s, chunks {done}/{total}{eta}",
            self.job,
            self.phase().as_str(),
        )
    }

    /// Logs [`summary_line`](Self::summary_line) every `every` until dropped: for output that is
    /// not a terminal.
    pub fn log_periodically(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let progress = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                if progress.phase() == Phase::Done {
                    break;
                }
                tracing::info!("{}", progress.summary_line());
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_counts_compared_rows_and_feeds_its_metrics() {
        let metrics = Metrics::for_verify();
        let progress = Progress::for_verify(metrics.clone());
        let t = QualifiedName::new("public", "t");
        progress.table(&t).chunks_total.store(3, Ordering::Relaxed);
        progress.set_phase(Phase::Comparing);
        progress.verify_chunk_done(&t, 100, 99, 1);
        progress.verify_chunk_done(&t, 50, 50, 0);
        assert_eq!(progress.totals(), (150, 0, 2, 3, 0));
        let line = progress.summary_line();
        assert!(
            line.starts_with("verify comparing: 150 rows in "),
            "no bytes for verify: {line}"
        );
        assert!(line.ends_with("chunks 2/3"), "{line}");
        let s = metrics.verify_snapshot();
        assert_eq!(
            (s.blue_rows, s.green_rows, s.chunks, s.differences),
            (150, 149, 2, 1)
        );
        assert_eq!(metrics.snapshot().backfill_rows, 0, "not a backfill");
    }

    #[test]
    fn backfill_lines_keep_their_size() {
        let progress = Progress::new(Metrics::new());
        progress.set_phase(Phase::Copying);
        assert!(progress
            .summary_line()
            .starts_with("backfill copying: 0 rows (0.0 MB) in "));
    }
}
