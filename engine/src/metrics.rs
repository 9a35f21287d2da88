//! `metrics`: what the sync pipeline counts and measures, and its Prometheus endpoint.
//!
//! [`Metrics`] is the registry. It is cheap to clone (an `Arc` around atomics) and every method
//! takes `&self`, so each stage holds its own clone and records what it does: the appliers call
//! [`Metrics::transaction_applied`], the progress tracker [`Metrics::set_lag`], the assembler
//! [`Metrics::spilled`], the supervisor [`Metrics::error`], and so on. The only lock is the one
//! around the apply-latency histogram, taken for a few instructions and never across an
//! `.await`.
//!
//! Exported series (Prometheus text format, see [`Metrics::render`]):
//!
//! | name | type | labels |
//! |---|---|---|
//! | `blueshift_lag_bytes` | gauge | |
//! | `blueshift_lag_seconds` | gauge | |
//! | `blueshift_applied_transactions_total` | counter | |
//! | `blueshift_applied_rows_total` | counter | `op`: insert, update, delete, truncate |
//! | `blueshift_apply_latency_seconds` | summary (0.5, 0.9, 0.99, 0.999) | |
//! | `blueshift_queue_depth_transactions` | gauge | `queue` (names fixed in the code) |
//! | `blueshift_slot_retained_wal_bytes` | gauge | |
//! | `blueshift_errors_total` | counter | `class`: transient, definite |
//! | `blueshift_spilled_bytes_total` | counter | |
//! | `blueshift_spilled_transactions_total` | counter | |
//! | `blueshift_stage_latency_seconds` | summary (0.5, 0.99) | `stage`: where a transaction's time goes, see [`Stage`] |
//! | `blueshift_backfill_rows_total` | counter | |
//! | `blueshift_backfill_chunks_total` | counter | |
//! | `blueshift_blocked` | gauge | 1 while sync waits for green to be fixed (a change green cannot take as it is), else 0 |
//!
//! The row counts and the error classes are the applier's own ([`RowCounts`], [`ErrorClass`]:
//! one classification for the whole engine). [`MetricsServer`] serves the series on
//! `GET /metrics`.

mod render;
mod server;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hdrhistogram::Histogram;

pub use blueshift_applier::{ErrorClass, RowCounts};

pub use server::{MetricsError, MetricsServer};

/// The largest apply latency the histogram tells apart: one hour, in microseconds. Longer ones
/// are recorded as one hour.
const MAX_LATENCY_MICROS: u64 = 3_600_000_000;

/// Significant decimal digits the latency histogram keeps (0.1 % relative error).
const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;

/// The stages a source transaction passes through on its way to green, each timed
/// (`blueshift_stage_latency_seconds{stage}`): together they say where replication lag goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Blue's commit timestamp → its Commit message read by blueshift (decoding and sending on
    /// blue's side, and reading the stream; same clock when on one machine).
    Source,
    /// Commit message read → queued for the appliers (writeset, scheduling, memory budget).
    Schedule,
    /// Queued → taken by a free applier.
    Queue,
    /// Taken → the transactions it depends on committed.
    Depends,
    /// Its statements sent and answered on green.
    Apply,
    /// Applied → its turn to commit in blue's order.
    Turn,
    /// COMMIT on green.
    Commit,
}

impl Stage {
    /// Every stage, in order.
    pub const ALL: [Stage; 7] = [
        Stage::Source,
        Stage::Schedule,
        Stage::Queue,
        Stage::Depends,
        Stage::Apply,
        Stage::Turn,
        Stage::Commit,
    ];

    /// The `stage` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Source => "source",
            Stage::Schedule => "schedule",
            Stage::Queue => "queue",
            Stage::Depends => "depends",
            Stage::Apply => "apply",
            Stage::Turn => "turn",
            Stage::Commit => "commit",
        }
    }
}

/// Reads one operation's count out of a [`RowCounts`].
type RowCount = fn(&RowCounts) -> u64;

/// The `op` label values of `blueshift_applied_rows_total`, with each one's count in a
/// [`RowCounts`].
const ROW_OPS: [(&str, RowCount); 4] = [
    ("insert", |r| r.inserted),
    ("update", |r| r.updated),
    ("delete", |r| r.deleted),
    ("truncate", |r| r.truncated),
];

/// The `class` label value of `blueshift_errors_total`.
fn class_label(class: ErrorClass) -> &'static str {
    match class {
        ErrorClass::Transient => "transient",
        ErrorClass::Definite => "definite",
    }
}

fn class_index(class: ErrorClass) -> usize {
    match class {
        ErrorClass::Transient => 0,
        ErrorClass::Definite => 1,
    }
}

/// A handle on one queue's depth gauge, for a stage that sets it on every send or receive
/// without looking the queue up each time. Cloning shares the gauge.
#[derive(Debug, Clone)]
pub struct QueueGauge(Arc<AtomicU64>);

impl QueueGauge {
    /// Sets the number of items waiting in the queue.
    pub fn set(&self, depth: u64) {
        self.0.store(depth, Ordering::Relaxed);
    }

    /// The depth last set.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The registry of blueshift's metrics. Clone it into each stage; see the module doc for the
/// series.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    inner: Arc<Registry>,
}

/// The shared state behind [`Metrics`].
#[derive(Debug)]
struct Registry {
    lag_bytes: AtomicU64,
    /// `f64::to_bits` of the lag in seconds.
    lag_seconds: AtomicU64,
    applied_transactions: AtomicU64,
    applied_rows: [AtomicU64; 4],
    /// Apply latencies in microseconds.
    latency: Mutex<Histogram<u64>>,
    /// The sum of the latencies recorded, in microseconds (for `_sum`).
    latency_sum_micros: AtomicU64,
    /// Queue name → depth, in the order the queues were first named.
    queues: RwLock<Vec<(&'static str, QueueGauge)>>,
    retained_wal_bytes: AtomicU64,
    errors: [AtomicU64; 2],
    spilled_bytes: AtomicU64,
    spilled_transactions: AtomicU64,
    backfill_rows: AtomicU64,
    backfill_chunks: AtomicU64,
    /// 1 while sync waits for green to be fixed.
    blocked: AtomicU64,
    /// Per [`Stage`], in [`Stage::ALL`] order, in microseconds.
    stages: Mutex<Vec<Histogram<u64>>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            lag_bytes: AtomicU64::new(0),
            lag_seconds: AtomicU64::new(0f64.to_bits()),
            applied_transactions: AtomicU64::new(0),
            applied_rows: Default::default(),
            latency: Mutex::new(
                Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, LATENCY_SIGNIFICANT_DIGITS)
                    .expect("the latency bounds are constants that hdrhistogram accepts"),
            ),
            latency_sum_micros: AtomicU64::new(0),
            queues: RwLock::new(Vec::new()),
            retained_wal_bytes: AtomicU64::new(0),
            errors: Default::default(),
            spilled_bytes: AtomicU64::new(0),
            spilled_transactions: AtomicU64::new(0),
            backfill_rows: AtomicU64::new(0),
            backfill_chunks: AtomicU64::new(0),
            blocked: AtomicU64::new(0),
            stages: Mutex::new(
                Stage::ALL
                    .iter()
                    .map(|_| {
                        Histogram::new_with_bounds(
                            1,
                            MAX_LATENCY_MICROS,
                            LATENCY_SIGNIFICANT_DIGITS,
                        )
                        .expect("the latency bounds are constants that hdrhistogram accepts")
                    })
                    .collect(),
            ),
        }
    }
}

impl Metrics {
    /// An empty registry: every counter and gauge at zero.
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// One source transaction committed on green: its rows by operation and how long applying
    /// it took (from hand-off to an applier to its commit on green).
    pub fn transaction_applied(&self, rows: &RowCounts, latency: Duration) {
        self.transactions_applied(1, rows, latency);
    }

    /// `transactions` source transactions applied together as one green transaction (group
    /// commit), with `rows` in all, in `latency`.
    pub fn transactions_applied(&self, transactions: u64, rows: &RowCounts, latency: Duration) {
        let r = &self.inner;
        r.applied_transactions
            .fetch_add(transactions, Ordering::Relaxed);
        // Something committed: whatever held the line has been fixed.
        r.blocked.store(0, Ordering::Relaxed);
        for ((_, count), total) in ROW_OPS.iter().zip(&r.applied_rows) {
            let n = count(rows);
            if n > 0 {
                total.fetch_add(n, Ordering::Relaxed);
            }
        }
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, MAX_LATENCY_MICROS);
        r.latency_sum_micros.fetch_add(micros, Ordering::Relaxed);
        // A poisoned lock only means another thread panicked while recording: the histogram
        // itself is still whole.
        let mut histogram = r.latency.lock().unwrap_or_else(|p| p.into_inner());
        histogram.saturating_record(micros);
    }

    /// `blueshift_lag_bytes`: WAL blue has sent past what green durably holds.
    pub fn set_lag_bytes(&self, bytes: u64) {
        self.inner.lag_bytes.store(bytes, Ordering::Relaxed);
    }

    /// `blueshift_lag_seconds`: how long ago blue committed what green last committed (0 when
    /// caught up). NaN and negative values count as 0.
    pub fn set_lag_seconds(&self, seconds: f64) {
        let seconds = if seconds.is_finite() {
            seconds.max(0.0)
        } else {
            0.0
        };
        self.inner
            .lag_seconds
            .store(seconds.to_bits(), Ordering::Relaxed);
    }

    /// Sets the depth of queue `queue` (a fixed name such as `"decoded"` or `"apply"`: one
    /// series per name, so never a name built at run time).
    pub fn set_queue_depth(&self, queue: &'static str, depth: u64) {
        self.queue(queue).set(depth);
    }

    /// The gauge of queue `queue`, registered on first use. Keep it to set the depth without a
    /// lookup.
    pub fn queue(&self, queue: &'static str) -> QueueGauge {
        {
            let queues = self.inner.queues.read().unwrap_or_else(|p| p.into_inner());
            if let Some((_, gauge)) = queues.iter().find(|(name, _)| *name == queue) {
                return gauge.clone();
            }
        }
        let mut queues = self.inner.queues.write().unwrap_or_else(|p| p.into_inner());
        if let Some((_, gauge)) = queues.iter().find(|(name, _)| *name == queue) {
            return gauge.clone();
        }
        let gauge = QueueGauge(Arc::new(AtomicU64::new(0)));
        queues.push((queue, gauge.clone()));
        gauge
    }

    /// The WAL blue keeps for the slot: its current position minus the slot's `restart_lsn`.
    pub fn set_retained_wal(&self, bytes: u64) {
        self.inner
            .retained_wal_bytes
            .store(bytes, Ordering::Relaxed);
    }

    /// One error of class `class` handled (a reconnect for a transient one, a stop for a
    /// definite one).
    pub fn error(&self, class: ErrorClass) {
        self.inner.errors[class_index(class)].fetch_add(1, Ordering::Relaxed);
    }

    /// `bytes` more of an in-progress transaction written to a spill file.
    pub fn spilled(&self, bytes: u64) {
        self.inner.spilled_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// One more transaction went past the memory limit and was spilled to disk.
    pub fn transaction_spilled(&self) {
        self.inner
            .spilled_transactions
            .fetch_add(1, Ordering::Relaxed);
    }

    /// `blueshift_blocked`: whether sync waits for green to be fixed (a change green cannot
    /// take as it is holds the line).
    pub fn set_blocked(&self, blocked: bool) {
        self.inner
            .blocked
            .store(u64::from(blocked), Ordering::Relaxed);
    }

    /// A consistent-enough copy of every value, for rendering and for tests.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let r = &self.inner;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (latency_quantiles, latency_count) = {
            let histogram = r.latency.lock().unwrap_or_else(|p| p.into_inner());
            let quantiles = LATENCY_QUANTILES.map(|q| {
                let micros = if histogram.is_empty() {
                    0
                } else {
                    histogram.value_at_quantile(q)
                };
                (q, micros_to_seconds(micros))
            });
            (quantiles, histogram.len())
        };
        let queues = r
            .queues
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(name, gauge)| (*name, gauge.get()))
            .collect();
        MetricsSnapshot {
            lag_bytes: load(&r.lag_bytes),
            lag_seconds: f64::from_bits(load(&r.lag_seconds)),
            applied_transactions: load(&r.applied_transactions),
            applied_rows: RowCounts {
                inserted: load(&r.applied_rows[0]),
                updated: load(&r.applied_rows[1]),
                deleted: load(&r.applied_rows[2]),
                truncated: load(&r.applied_rows[3]),
            },
            latency_quantiles,
            latency_sum_seconds: micros_to_seconds(load(&r.latency_sum_micros)),
            latency_count,
            queues,
            retained_wal_bytes: load(&r.retained_wal_bytes),
            errors_transient: load(&r.errors[class_index(ErrorClass::Transient)]),
            errors_definite: load(&r.errors[class_index(ErrorClass::Definite)]),
            spilled_bytes: load(&r.spilled_bytes),
            spilled_transactions: load(&r.spilled_transactions),
            backfill_rows: load(&r.backfill_rows),
            backfill_chunks: load(&r.backfill_chunks),
            blocked: load(&r.blocked) != 0,
        }
    }

    /// Time one transaction (or group) spent in `stage`.
    pub fn stage(&self, stage: Stage, took: Duration) {
        let micros = u64::try_from(took.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, MAX_LATENCY_MICROS);
        let index = Stage::ALL.iter().position(|s| *s == stage).unwrap_or(0);
        let mut stages = self.inner.stages.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = stages.get_mut(index) {
            h.saturating_record(micros);
        }
    }

    /// Per stage: (stage, p50 seconds, p99 seconds, count).
    pub fn stage_quantiles(&self) -> Vec<(Stage, f64, f64, u64)> {
        let stages = self.inner.stages.lock().unwrap_or_else(|p| p.into_inner());
        Stage::ALL
            .iter()
            .zip(stages.iter())
            .map(|(stage, h)| {
                let at = |q| {
                    if h.is_empty() {
                        0.0
                    } else {
                        micros_to_seconds(h.value_at_quantile(q))
                    }
                };
                (*stage, at(0.5), at(0.99), h.len())
            })
            .collect()
    }

    /// One line: p50/p99 per stage, in milliseconds.
    pub fn stage_summary(&self) -> String {
        self.stage_quantiles()
            .iter()
            .filter(|(_, _, _, n)| *n > 0)
            .map(|(s, p50, p99, _)| format!("{} {:.2}/{:.2}", s.as_str(), p50 * 1e3, p99 * 1e3))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// A backfill chunk of `rows` rows committed on green.
    pub fn backfill_chunk_done(&self, rows: u64) {
        self.inner.backfill_rows.fetch_add(rows, Ordering::Relaxed);
        self.inner.backfill_chunks.fetch_add(1, Ordering::Relaxed);
    }

    /// Every series in the Prometheus text exposition format (version 0.0.4), with `# HELP`
    /// and `# TYPE` lines.
    pub fn render(&self) -> String {
        let mut text = render::render(&self.snapshot());
        text.push_str(
            "# HELP blueshift_stage_latency_seconds Where a source transaction's time goes, by stage.\n\
             # TYPE blueshift_stage_latency_seconds summary\n",
        );
        for (stage, p50, p99, _) in self.stage_quantiles() {
            for (q, v) in [("0.5", p50), ("0.99", p99)] {
                text.push_str(&format!(
                    "blueshift_stage_latency_seconds{{stage=\"{}\",quantile=\"{q}\"}} {v}\n",
                    stage.as_str()
                ));
            }
        }
        text
    }
}

/// The quantiles of the apply-latency summary.
pub const LATENCY_QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];

/// The values of [`Metrics`] at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSnapshot {
    /// `blueshift_lag_bytes`.
    pub lag_bytes: u64,
    /// `blueshift_lag_seconds`.
    pub lag_seconds: f64,
    /// `blueshift_applied_transactions_total`.
    pub applied_transactions: u64,
    /// `blueshift_applied_rows_total` by `op`.
    pub applied_rows: RowCounts,
    /// (quantile, seconds) of `blueshift_apply_latency_seconds`, zero when nothing was applied.
    pub latency_quantiles: [(f64, f64); 4],
    /// `blueshift_apply_latency_seconds_sum`.
    pub latency_sum_seconds: f64,
    /// `blueshift_apply_latency_seconds_count`.
    pub latency_count: u64,
    /// `blueshift_queue_depth_transactions` by `queue`, in registration order.
    pub queues: Vec<(&'static str, u64)>,
    /// `blueshift_slot_retained_wal_bytes`.
    pub retained_wal_bytes: u64,
    /// `blueshift_errors_total{class="transient"}`.
    pub errors_transient: u64,
    /// `blueshift_errors_total{class="definite"}`.
    pub errors_definite: u64,
    /// `blueshift_spilled_bytes_total`.
    pub spilled_bytes: u64,
    /// `blueshift_spilled_transactions_total`.
    pub spilled_transactions: u64,
    /// `blueshift_backfill_rows_total`.
    pub backfill_rows: u64,
    /// `blueshift_backfill_chunks_total`.
    pub backfill_chunks: u64,
    /// `blueshift_blocked`.
    pub blocked: bool,
}

fn micros_to_seconds(micros: u64) -> f64 {
    // Exact for any latency below 2^53 µs (285 years).
    micros as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_transactions_rows_and_latency() {
        let m = Metrics::new();
        let rows = RowCounts {
            inserted: 2,
            deleted: 1,
            ..RowCounts::default()
        };
        m.transaction_applied(&rows, Duration::from_millis(2));
        m.transaction_applied(
            &RowCounts {
                updated: 3,
                ..RowCounts::default()
            },
            Duration::from_millis(4),
        );
        let s = m.snapshot();
        assert_eq!(s.applied_transactions, 2);
        assert_eq!(
            s.applied_rows,
            RowCounts {
                inserted: 2,
                updated: 3,
                deleted: 1,
                truncated: 0
            }
        );
        assert_eq!(s.latency_count, 2);
        assert!((s.latency_sum_seconds - 0.006).abs() < 1e-9);
        // 0.5 → the smaller, 0.999 → the larger, within the histogram's 0.1 %.
        assert!((s.latency_quantiles[0].1 - 0.002).abs() < 0.002 * 0.001 + 1e-9);
        assert!((s.latency_quantiles[3].1 - 0.004).abs() < 0.004 * 0.001 + 1e-9);
    }

    #[test]
    fn clones_share_one_registry_across_threads() {
        let m = Metrics::new();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        m.transaction_applied(&RowCounts::default(), Duration::from_micros(10));
                        m.error(ErrorClass::Transient);
                        m.spilled(3);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("worker thread");
        }
        let s = m.snapshot();
        assert_eq!(s.applied_transactions, 4000);
        assert_eq!(s.latency_count, 4000);
        assert_eq!(s.errors_transient, 4000);
        assert_eq!(s.errors_definite, 0);
        assert_eq!(s.spilled_bytes, 12_000);
    }

    #[test]
    fn the_blocked_gauge_is_set_while_waiting_and_cleared_by_a_commit() {
        let m = Metrics::new();
        assert!(m.render().contains("\nblueshift_blocked 0\n"));
        m.set_blocked(true);
        assert!(m.snapshot().blocked);
        assert!(m.render().contains("\nblueshift_blocked 1\n"));
        m.transaction_applied(&RowCounts::default(), Duration::from_millis(1));
        assert!(!m.snapshot().blocked, "something committed: the line moves");
        m.set_blocked(true);
        m.set_blocked(false);
        assert!(!m.snapshot().blocked);
    }

    #[test]
    fn gauges_take_the_last_value() {
        let m = Metrics::new();
        m.set_lag_bytes(100);
        m.set_lag_seconds(1.5);
        m.set_lag_bytes(40);
        m.set_lag_seconds(f64::NAN);
        m.set_retained_wal(7);
        m.set_retained_wal(9);
        m.set_queue_depth("decoded", 5);
        let apply = m.queue("apply");
        apply.set(2);
        m.set_queue_depth("decoded", 1);
        m.transaction_spilled();
        let s = m.snapshot();
        assert_eq!(s.lag_bytes, 40);
        assert_eq!(s.lag_seconds, 0.0);
        assert_eq!(s.retained_wal_bytes, 9);
        assert_eq!(s.queues, vec![("decoded", 1), ("apply", 2)]);
        assert_eq!(s.spilled_transactions, 1);
    }

    #[test]
    fn extreme_latencies_are_clamped_not_lost() {
        let m = Metrics::new();
        m.transaction_applied(&RowCounts::default(), Duration::ZERO);
        m.transaction_applied(&RowCounts::default(), Duration::from_secs(86_400 * 365));
        let s = m.snapshot();
        assert_eq!(s.latency_count, 2);
        assert!(s.latency_quantiles[3].1 <= 3600.0 * 1.001);
    }
}
