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
//! | `blueshift_up` | gauge | 1 while sync runs, 0 once it stops |
//! | `blueshift_connected` | gauge | `side`: blue (the replication stream), green (the appliers) |
//! | `blueshift_build_info` | gauge (1) | `version`, `commit` |
//! | `blueshift_lag_bytes` | gauge | |
//! | `blueshift_lag_seconds` | gauge | the age of the oldest commit green does not hold ([`lag`]) |
//! | `blueshift_applied_transactions_total` | counter | |
//! | `blueshift_applied_groups_total` | counter | green transactions they were applied in (a group commit is one; equal to the source transactions when each was applied alone) |
//! | `blueshift_applied_rows_total` | counter | `op`: insert, update, delete, truncate |
//! | `blueshift_apply_latency_seconds` | histogram | |
//! | `blueshift_queue_depth_transactions` | gauge | `queue` (names fixed in the code) |
//! | `blueshift_slot_retained_wal_bytes` | gauge | |
//! | `blueshift_errors_total` | counter | `class`: transient, definite |
//! | `blueshift_spilled_bytes_total` | counter | |
//! | `blueshift_spilled_transactions_total` | counter | |
//! | `blueshift_stage_latency_seconds` | histogram | `stage`: where a transaction's time goes, see [`Stage`] |
//! | `blueshift_backfill_rows_total` | counter | |
//! | `blueshift_backfill_chunks_total` | counter | |
//! | `blueshift_blocked` | gauge | 1 while sync waits for green to be fixed (a change green cannot take as it is), else 0 |
//! | `blueshift_spool_bytes` | gauge | bytes in the spool (`sync::spool`: blue's stream read while green is down) |
//! | `blueshift_spool_full` | gauge | 1 while the spool is at `--spool-limit` and reading blue waits, else 0 |
//! | `blueshift_cutover_state` | gauge | `state`: 1 for the cutover's current state on green ([`cutover`](self::cutover)) |
//! | `blueshift_cutover_pause_seconds` | gauge | the last cutover's or rollback's write pause |
//! | `blueshift_source_lsn` | gauge | blue's current WAL position (bytes), read with the lag |
//! | `blueshift_conflicts_total` | counter | `direction`, `kind`, `resolution`: two-way conflicts (see `blueshift_applier::conflict`) |
//!
//! Verify's series (`blueshift_verify_*`, `blueshift_verified_lsn`) and which process exports
//! which are described in [`verify`]: the verify process has a registry of its own
//! ([`Metrics::for_verify`]) that exports only those and `blueshift_build_info`.
//!
//! The row counts and the error classes are the applier's own ([`RowCounts`], [`ErrorClass`]:
//! one classification for the whole engine). Latencies are Prometheus histograms (buckets in
//! [`BUCKETS`]) so that a dashboard can aggregate them. [`MetricsServer`] serves the series on
//! `GET /metrics`, with `/healthz` and `/readyz`.

mod conflict;
mod cutover;
mod direction;
mod histogram;
pub(crate) mod lag;
mod render;
mod server;
pub mod verify;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, SystemTime};

pub use blueshift_applier::{ErrorClass, RowCounts};

pub use cutover::CutoverSnapshot;
pub use histogram::{LatencySnapshot, BUCKETS};
pub use server::{MetricsError, MetricsServer};

use blueshift_applier::conflict::{Kind as ConflictKind, Resolution};
use histogram::Latency;
use lag::LagClock;
use verify::{LastVerify, VerifyRegistry, VerifySnapshot};

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
    up: AtomicBool,
    /// Blue's replication stream, green's appliers.
    connected: [AtomicBool; 2],
    /// (version, commit) of the binary.
    build: OnceLock<(String, String)>,
    lag_bytes: AtomicU64,
    lag: LagClock,
    applied_transactions: AtomicU64,
    /// Green transactions the applied source transactions went in.
    applied_groups: AtomicU64,
    applied_rows: [AtomicU64; 4],
    latency: Latency,
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
    /// Bytes in the spool.
    spool_bytes: AtomicU64,
    /// 1 while the spool is full.
    spool_full: AtomicU64,
    /// Per [`Stage`], in [`Stage::ALL`] order.
    stages: [Latency; 7],
    /// The reverse direction's registry (green → blue), once it was asked for.
    reverse: OnceLock<Metrics>,
    /// The cutover's state and last pause, as the sidecar read them on green.
    cutover: cutover::CutoverGauges,
    /// Blue's current WAL position, as the sidecar last read it.
    source_lsn: AtomicU64,
    /// Verify's series.
    verify: VerifyRegistry,
    /// A `blueshift verify` process: only verify's series and the build are exported.
    verify_only: bool,
    /// Two-way conflicts by (kind, resolution).
    conflicts: std::sync::Mutex<std::collections::BTreeMap<(ConflictKind, Resolution), u64>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            up: AtomicBool::new(true),
            connected: Default::default(),
            build: OnceLock::new(),
            lag_bytes: AtomicU64::new(0),
            lag: LagClock::new(SystemTime::now()),
            applied_transactions: AtomicU64::new(0),
            applied_groups: AtomicU64::new(0),
            applied_rows: Default::default(),
            latency: Latency::default(),
            queues: RwLock::new(Vec::new()),
            retained_wal_bytes: AtomicU64::new(0),
            errors: Default::default(),
            spilled_bytes: AtomicU64::new(0),
            spilled_transactions: AtomicU64::new(0),
            backfill_rows: AtomicU64::new(0),
            backfill_chunks: AtomicU64::new(0),
            blocked: AtomicU64::new(0),
            spool_bytes: AtomicU64::new(0),
            spool_full: AtomicU64::new(0),
            conflicts: Default::default(),
            stages: Default::default(),
            reverse: OnceLock::new(),
            cutover: cutover::CutoverGauges::default(),
            source_lsn: AtomicU64::new(0),
            verify: VerifyRegistry::default(),
            verify_only: false,
        }
    }
}

/// The `side` label values of `blueshift_connected`.
pub(crate) const SIDES: [&str; 2] = ["blue", "green"];

impl Metrics {
    /// An empty registry: every counter and gauge at zero.
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// The registry of a `blueshift verify` process: it exports `blueshift_build_info` and
    /// verify's series only (see [`verify`]), and `/readyz` answers ready while it runs.
    pub fn for_verify() -> Metrics {
        Metrics {
            inner: Arc::new(Registry {
                verify_only: true,
                ..Registry::default()
            }),
        }
    }

    /// A verify chunk compared: its rows on each side and the differences found in it.
    pub fn verify_chunk_done(&self, blue_rows: u64, green_rows: u64, differences: u64) {
        self.inner
            .verify
            .chunk_done(blue_rows, green_rows, differences);
    }

    /// `n` differences verify found outside the chunks (samples, constraints, sequences).
    pub fn verify_differences(&self, n: u64) {
        self.inner.verify.differences(n);
    }

    /// The latest verify run, as recorded on green (`None`: verify never ran there).
    pub fn set_last_verify(&self, last: Option<LastVerify>) {
        self.inner.verify.set_last(last);
    }

    /// Verify's values now.
    pub fn verify_snapshot(&self) -> VerifySnapshot {
        self.inner.verify.snapshot()
    }

    /// `blueshift_source_lsn`: blue's current WAL position.
    pub fn set_source_lsn(&self, lsn: u64) {
        self.inner.source_lsn.store(lsn, Ordering::Relaxed);
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
        r.applied_groups.fetch_add(1, Ordering::Relaxed);
        // Something committed: whatever held the line has been fixed.
        r.blocked.store(0, Ordering::Relaxed);
        for ((_, count), total) in ROW_OPS.iter().zip(&r.applied_rows) {
            let n = count(rows);
            if n > 0 {
                total.fetch_add(n, Ordering::Relaxed);
            }
        }
        r.latency.record(latency);
    }

    /// `blueshift_up`: false once sync is stopping.
    pub fn set_up(&self, up: bool) {
        self.inner.up.store(up, Ordering::Relaxed);
    }

    /// `blueshift_connected{side}`: whether blue's replication stream (`Side::Blue`) or green's
    /// appliers (`Side::Green`) are connected.
    pub fn set_connected(&self, side: crate::status::Side, connected: bool) {
        let i = match side {
            crate::status::Side::Blue => 0,
            crate::status::Side::Green => 1,
        };
        self.inner.connected[i].store(connected, Ordering::Relaxed);
    }

    /// `blueshift_build_info{version, commit}`; the first call wins.
    pub fn set_build_info(&self, version: &str, commit: &str) {
        let _ = self
            .inner
            .build
            .set((version.to_owned(), commit.to_owned()));
    }

    /// The lag clock behind `blueshift_lag_seconds`.
    pub(crate) fn lag(&self) -> &LagClock {
        &self.inner.lag
    }

    /// `blueshift_lag_seconds` now: the age of the oldest commit green does not hold.
    pub fn lag_seconds(&self) -> f64 {
        self.inner.lag.seconds(SystemTime::now())
    }

    /// Whether sync streams with both sides connected and the lag is at most `max_lag`: what
    /// `/readyz` answers.
    pub fn ready(&self, max_lag: Duration) -> bool {
        let r = &self.inner;
        if r.verify_only {
            return true;
        }
        r.up.load(Ordering::Relaxed)
            && r.connected.iter().all(|c| c.load(Ordering::Relaxed))
            && self.lag_seconds() <= max_lag.as_secs_f64()
    }

    /// `blueshift_lag_bytes`: WAL blue has sent past what green durably holds.
    pub fn set_lag_bytes(&self, bytes: u64) {
        self.inner.lag_bytes.store(bytes, Ordering::Relaxed);
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

    /// `blueshift_spool_bytes`: bytes in the spool (0 once it is discarded or trimmed).
    pub fn set_spool_bytes(&self, bytes: u64) {
        self.inner.spool_bytes.store(bytes, Ordering::Relaxed);
    }

    /// `blueshift_spool_full`: the spool is at its limit and reading blue waits.
    pub fn set_spool_full(&self, full: bool) {
        self.inner
            .spool_full
            .store(u64::from(full), Ordering::Relaxed);
    }

    /// A consistent-enough copy of every value, for rendering and for tests.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let r = &self.inner;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let latency_quantiles = LATENCY_QUANTILES.map(|q| (q, r.latency.quantile(q)));
        let queues = r
            .queues
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(name, gauge)| (*name, gauge.get()))
            .collect();
        MetricsSnapshot {
            up: r.up.load(Ordering::Relaxed),
            connected: [
                r.connected[0].load(Ordering::Relaxed),
                r.connected[1].load(Ordering::Relaxed),
            ],
            build: r.build.get().cloned(),
            lag_bytes: load(&r.lag_bytes),
            lag_seconds: self.lag_seconds(),
            applied_transactions: load(&r.applied_transactions),
            applied_groups: load(&r.applied_groups),
            applied_rows: RowCounts {
                inserted: load(&r.applied_rows[0]),
                updated: load(&r.applied_rows[1]),
                deleted: load(&r.applied_rows[2]),
                truncated: load(&r.applied_rows[3]),
            },
            latency_quantiles,
            latency: r.latency.snapshot(),
            stages: Stage::ALL
                .iter()
                .zip(&r.stages)
                .map(|(stage, l)| (*stage, l.snapshot()))
                .collect(),
            queues,
            retained_wal_bytes: load(&r.retained_wal_bytes),
            errors_transient: load(&r.errors[class_index(ErrorClass::Transient)]),
            errors_definite: load(&r.errors[class_index(ErrorClass::Definite)]),
            spilled_bytes: load(&r.spilled_bytes),
            spilled_transactions: load(&r.spilled_transactions),
            backfill_rows: load(&r.backfill_rows),
            backfill_chunks: load(&r.backfill_chunks),
            blocked: load(&r.blocked) != 0,
            spool_bytes: load(&r.spool_bytes),
            spool_full: load(&r.spool_full) != 0,
            source_lsn: load(&r.source_lsn),
        }
    }

    /// Time one transaction (or group) spent in `stage`.
    pub fn stage(&self, stage: Stage, took: Duration) {
        let index = Stage::ALL.iter().position(|s| *s == stage).unwrap_or(0);
        if let Some(l) = self.inner.stages.get(index) {
            l.record(took);
        }
    }

    /// Per stage: (stage, p50 seconds, p99 seconds, count).
    pub fn stage_quantiles(&self) -> Vec<(Stage, f64, f64, u64)> {
        Stage::ALL
            .iter()
            .zip(&self.inner.stages)
            .map(|(stage, l)| (*stage, l.quantile(0.5), l.quantile(0.99), l.count()))
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

    /// A two-way conflict of `kind` resolved by `resolution` (committed, or a stop).
    pub fn conflict(&self, kind: ConflictKind, resolution: Resolution) {
        *self
            .inner
            .conflicts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((kind, resolution))
            .or_default() += 1;
    }

    /// The conflicts counted so far, by (kind, resolution).
    pub fn conflicts(&self) -> Vec<(ConflictKind, Resolution, u64)> {
        self.inner
            .conflicts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(&(k, r), &n)| (k, r, n))
            .collect()
    }

    /// The registry of the reverse direction (green → blue) of a two-way sync, created on first
    /// use. Its series are exported beside this one's with `direction="reverse"` (see
    /// `blueshift_direction_*`); this registry's are the forward direction's.
    pub fn reverse(&self) -> Metrics {
        self.inner.reverse.get_or_init(Metrics::new).clone()
    }

    /// The reverse direction's registry, when it was asked for.
    pub fn reverse_if_any(&self) -> Option<Metrics> {
        self.inner.reverse.get().cloned()
    }

    /// `blueshift_cutover_state{state}` and `blueshift_cutover_pause_seconds`: the cutover's
    /// row on green (the sidecar reads it once a second); `pause_seconds` is the last write
    /// pause recorded (`None` keeps the previous one).
    pub fn set_cutover(&self, state: crate::cutover::State, pause_seconds: Option<f64>) {
        self.inner.cutover.set(state, pause_seconds);
    }

    /// What the cutover gauges hold.
    pub fn cutover(&self) -> CutoverSnapshot {
        self.inner.cutover.snapshot()
    }

    /// Every series in the Prometheus text exposition format (version 0.0.4), with `# HELP`
    /// and `# TYPE` lines.
    pub fn render(&self) -> String {
        let verify = self.inner.verify.snapshot();
        if self.inner.verify_only {
            let mut text = render::render_build(&self.snapshot());
            verify::render_counters(&mut text, &verify);
            verify::render_last(&mut text, &verify);
            return text;
        }
        let mut text = render::render(&self.snapshot());
        cutover::render(&mut text, &self.cutover());
        if let Some(reverse) = self.reverse_if_any() {
            direction::render(&mut text, &self.snapshot(), &reverse.snapshot());
        }
        verify::render_last(&mut text, &verify);
        conflict::render(&mut text, self, self.reverse_if_any().as_ref());
        text
    }
}

/// The quantiles of the apply latency kept for logs and the demo.
pub const LATENCY_QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];

/// The values of [`Metrics`] at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSnapshot {
    /// `blueshift_up`.
    pub up: bool,
    /// `blueshift_connected{side}`, in [`SIDES`] order (blue, green).
    pub connected: [bool; 2],
    /// `blueshift_build_info{version, commit}`, once set.
    pub build: Option<(String, String)>,
    /// `blueshift_lag_bytes`.
    pub lag_bytes: u64,
    /// `blueshift_lag_seconds`.
    pub lag_seconds: f64,
    /// `blueshift_applied_transactions_total`.
    pub applied_transactions: u64,
    /// `blueshift_applied_groups_total`.
    pub applied_groups: u64,
    /// `blueshift_applied_rows_total` by `op`.
    pub applied_rows: RowCounts,
    /// (quantile, seconds) of the apply latency, zero when nothing was applied.
    pub latency_quantiles: [(f64, f64); 4],
    /// `blueshift_apply_latency_seconds`.
    pub latency: LatencySnapshot,
    /// `blueshift_stage_latency_seconds` by stage.
    pub stages: Vec<(Stage, LatencySnapshot)>,
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
    /// `blueshift_spool_bytes`.
    pub spool_bytes: u64,
    /// `blueshift_spool_full`.
    pub spool_full: bool,
    /// `blueshift_source_lsn`.
    pub source_lsn: u64,
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
        assert_eq!(s.latency.count, 2);
        assert!((s.latency.sum_seconds - 0.006).abs() < 1e-9);
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
        assert_eq!(s.latency.count, 4000);
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
        m.set_lag_bytes(40);
        m.set_retained_wal(7);
        m.set_retained_wal(9);
        m.set_queue_depth("decoded", 5);
        let apply = m.queue("apply");
        apply.set(2);
        m.set_queue_depth("decoded", 1);
        m.transaction_spilled();
        let s = m.snapshot();
        assert_eq!(s.lag_bytes, 40);
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
        assert_eq!(s.latency.count, 2);
        assert!(s.latency_quantiles[3].1 <= 3600.0 * 1.001);
    }
}
