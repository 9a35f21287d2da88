//! Verify's series, and where they live.
//!
//! `blueshift verify` is its own process, usually short-lived, while the sidecar (`blueshift
//! sync`) runs for the whole migration. So the series live in two places, each exporting only
//! what it knows first-hand:
//!
//! - **the verify process** (`blueshift verify --metrics-addr`, a registry made by
//!   [`Metrics::for_verify`](super::Metrics::for_verify)) counts while it compares:
//!   `blueshift_verify_rows_total{side}`, `blueshift_verify_chunks_total`,
//!   `blueshift_verify_differences_total` — a scrape during a run sees them grow — and the
//!   last-run gauges below (read from green when it starts, set from its own report when it
//!   ends). It exports `blueshift_build_info` too, and none of the sync's series: a verify
//!   process has no lag, stream or appliers to report.
//! - **the sidecar** reads `blueshift.verify_run` on green every few seconds
//!   (`sync::verified`) and exports the last-run gauges, so that a dashboard and an alert see the
//!   last verify's outcome without a verify process running.
//!
//! | name | type | labels | exported by |
//! |---|---|---|---|
//! | `blueshift_verify_rows_total` | counter | `side`: blue, green | verify |
//! | `blueshift_verify_chunks_total` | counter | | verify |
//! | `blueshift_verify_differences_total` | counter | | verify |
//! | `blueshift_verified_lsn` | gauge | the L (WAL byte position) of the latest run that found green equal to blue; 0 when none | both |
//! | `blueshift_verify_last_run_outcome` | gauge (state set) | `outcome`: running, equal, different, failed — 1 for the latest run's | both |
//! | `blueshift_verify_last_run_differences` | gauge | differences the latest run found | both |
//! | `blueshift_verify_last_run_timestamp_seconds` | gauge | when the latest run finished (or started, while running); 0 when none | both |
//!
//! The sidecar's `blueshift_source_lsn` (blue's current WAL position, read with the lag) is
//! what `blueshift_verified_lsn` is compared against: their difference is how much WAL blue
//! wrote since the last proof.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

/// The outcomes of a verify run, as recorded in `blueshift.verify_run.outcome`.
pub const OUTCOMES: [&str; 4] = ["running", "equal", "different", "failed"];

/// The latest verify run, as the gauges show it.
#[derive(Debug, Clone, PartialEq)]
pub struct LastVerify {
    /// One of [`OUTCOMES`] (anything else shows as no outcome).
    pub outcome: String,
    /// Differences it found (0 while unknown).
    pub differences: u64,
    /// When it finished, or started while it runs.
    pub at: Option<SystemTime>,
    /// The L of the latest run that found green equal (not necessarily this one).
    pub verified_lsn: Option<u64>,
}

/// Verify's counters and gauges.
#[derive(Debug, Default)]
pub(super) struct VerifyRegistry {
    /// Rows compared, blue and green.
    rows: [AtomicU64; 2],
    chunks: AtomicU64,
    differences: AtomicU64,
    last: Mutex<Option<LastVerify>>,
}

/// The values at one moment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VerifySnapshot {
    /// `blueshift_verify_rows_total{side="blue"}`.
    pub blue_rows: u64,
    /// `blueshift_verify_rows_total{side="green"}`.
    pub green_rows: u64,
    /// `blueshift_verify_chunks_total`.
    pub chunks: u64,
    /// `blueshift_verify_differences_total`.
    pub differences: u64,
    /// The last-run gauges.
    pub last: Option<LastVerify>,
}

impl VerifyRegistry {
    pub(super) fn chunk_done(&self, blue_rows: u64, green_rows: u64, differences: u64) {
        self.rows[0].fetch_add(blue_rows, Ordering::Relaxed);
        self.rows[1].fetch_add(green_rows, Ordering::Relaxed);
        self.chunks.fetch_add(1, Ordering::Relaxed);
        self.differences.fetch_add(differences, Ordering::Relaxed);
    }

    pub(super) fn differences(&self, n: u64) {
        self.differences.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn set_last(&self, last: Option<LastVerify>) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = last;
    }

    pub(super) fn snapshot(&self) -> VerifySnapshot {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        VerifySnapshot {
            blue_rows: load(&self.rows[0]),
            green_rows: load(&self.rows[1]),
            chunks: load(&self.chunks),
            differences: load(&self.differences),
            last: self.last.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The counters of a running verify.
pub(super) fn render_counters(out: &mut String, s: &VerifySnapshot) {
    family(
        out,
        "blueshift_verify_rows_total",
        "counter",
        "Rows this verify compared, by side (blue, green), in finished chunks.",
    );
    let _ = writeln!(
        out,
        "blueshift_verify_rows_total{{side=\"blue\"}} {}",
        s.blue_rows
    );
    let _ = writeln!(
        out,
        "blueshift_verify_rows_total{{side=\"green\"}} {}",
        s.green_rows
    );
    family(
        out,
        "blueshift_verify_chunks_total",
        "counter",
        "Chunks this verify compared.",
    );
    let _ = writeln!(out, "blueshift_verify_chunks_total {}", s.chunks);
    family(
        out,
        "blueshift_verify_differences_total",
        "counter",
        "Differences this verify found (rows, violated constraints, sequences behind).",
    );
    let _ = writeln!(out, "blueshift_verify_differences_total {}", s.differences);
}

/// The gauges of the latest run.
pub(super) fn render_last(out: &mut String, s: &VerifySnapshot) {
    let last = s.last.as_ref();
    family(
        out,
        "blueshift_verified_lsn",
        "gauge",
        "Blue's WAL position (bytes) at which the latest verify found green equal to blue; 0 when none did.",
    );
    let _ = writeln!(
        out,
        "blueshift_verified_lsn {}",
        last.and_then(|l| l.verified_lsn).unwrap_or(0)
    );
    family(
        out,
        "blueshift_verify_last_run_outcome",
        "gauge",
        "1 for the outcome of the latest verify run recorded on green (running, equal, different, failed), 0 for the others.",
    );
    for outcome in OUTCOMES {
        let on = last.is_some_and(|l| l.outcome == outcome);
        let _ = writeln!(
            out,
            "blueshift_verify_last_run_outcome{{outcome=\"{outcome}\"}} {}",
            u8::from(on)
        );
    }
    family(
        out,
        "blueshift_verify_last_run_differences",
        "gauge",
        "Differences the latest verify run found.",
    );
    let _ = writeln!(
        out,
        "blueshift_verify_last_run_differences {}",
        last.map_or(0, |l| l.differences)
    );
    family(
        out,
        "blueshift_verify_last_run_timestamp_seconds",
        "gauge",
        "When the latest verify run finished (started, while it runs), in Unix seconds; 0 when none ran.",
    );
    let at = last
        .and_then(|l| l.at)
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64());
    let _ = writeln!(out, "blueshift_verify_last_run_timestamp_seconds {at}");
}
