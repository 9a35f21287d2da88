//! A latency distribution: an HDR histogram (0.1 % precision up to one hour) behind a lock held
//! for a few instructions, read either as quantiles (for the stop log line and the demo) or as
//! the cumulative buckets of a Prometheus histogram, so that dashboards can aggregate and
//! compute any quantile with `histogram_quantile`.

use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

/// The largest latency the histogram tells apart: one hour, in microseconds. Longer ones are
/// recorded as one hour.
const MAX_MICROS: u64 = 3_600_000_000;

/// Significant decimal digits kept (0.1 % relative error).
const SIGNIFICANT_DIGITS: u8 = 3;

/// The upper bounds, in seconds, of the exported buckets (`le`); `+Inf` follows.
pub const BUCKETS: [f64; 17] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
];

/// One latency distribution.
#[derive(Debug)]
pub(crate) struct Latency {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    histogram: Histogram<u64>,
    /// Sum of the recorded values, in microseconds (for `_sum`).
    sum_micros: u64,
}

/// A latency distribution at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencySnapshot {
    /// (upper bound in seconds, values at or below it), for each of [`BUCKETS`].
    pub buckets: Vec<(f64, u64)>,
    /// Every value recorded.
    pub count: u64,
    /// Their sum, in seconds.
    pub sum_seconds: f64,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            inner: Mutex::new(Inner {
                histogram: Histogram::new_with_bounds(1, MAX_MICROS, SIGNIFICANT_DIGITS)
                    .expect("the latency bounds are constants that hdrhistogram accepts"),
                sum_micros: 0,
            }),
        }
    }
}

impl Latency {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means another thread panicked while recording: the histogram
        // itself is still whole.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one value (clamped to between 1 µs and one hour).
    pub(crate) fn record(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, MAX_MICROS);
        let mut inner = self.inner();
        inner.sum_micros = inner.sum_micros.saturating_add(micros);
        inner.histogram.saturating_record(micros);
    }

    /// The value at quantile `q`, in seconds; 0 when nothing was recorded.
    pub(crate) fn quantile(&self, q: f64) -> f64 {
        let inner = self.inner();
        if inner.histogram.is_empty() {
            0.0
        } else {
            micros_to_seconds(inner.histogram.value_at_quantile(q))
        }
    }

    /// How many values were recorded.
    pub(crate) fn count(&self) -> u64 {
        self.inner().histogram.len()
    }

    /// The Prometheus view: cumulative buckets, count and sum.
    pub(crate) fn snapshot(&self) -> LatencySnapshot {
        let inner = self.inner();
        let h = &inner.histogram;
        let buckets = BUCKETS
            .iter()
            .map(|&bound| {
                let micros = (bound * 1e6) as u64;
                let n = if h.is_empty() {
                    0
                } else {
                    h.count_between(0, micros)
                };
                (bound, n)
            })
            .collect();
        LatencySnapshot {
            buckets,
            count: h.len(),
            sum_seconds: micros_to_seconds(inner.sum_micros),
        }
    }
}

pub(crate) fn micros_to_seconds(micros: u64) -> f64 {
    // Exact for any latency below 2^53 µs (285 years).
    micros as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative() {
        let l = Latency::default();
        l.record(Duration::from_micros(300));
        l.record(Duration::from_millis(3));
        l.record(Duration::from_secs(2));
        let s = l.snapshot();
        assert_eq!(s.count, 3);
        let at = |bound: f64| s.buckets.iter().find(|(b, _)| *b == bound).unwrap().1;
        assert_eq!(at(0.0005), 1);
        assert_eq!(at(0.005), 2);
        assert_eq!(at(1.0), 2);
        assert_eq!(at(2.5), 3);
        assert_eq!(at(300.0), 3);
        assert!((s.sum_seconds - 2.0033).abs() < 1e-9);
        assert!(s.buckets.windows(2).all(|w| w[0].1 <= w[1].1));
    }
}
