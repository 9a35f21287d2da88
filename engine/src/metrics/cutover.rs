//! The cutover's series, read from green by the running sidecar: the cutover itself is a short
//! command (`blueshift cutover`, `rollback`), often killed or interrupted exactly when it
//! matters, and nobody scrapes it; the sidecar runs for days, is scraped, and already reads
//! green once a second (`sync::heartbeat`), so it exports the state machine's row of its slot
//! (`blueshift.cutover`). A cutover stuck in `fenced`, `drained` or `switched` — PgBouncer
//! paused, clients waiting — is then visible, and alerted on, whatever became of the process
//! that started it.
//!
//! | name | type | labels |
//! |---|---|---|
//! | `blueshift_cutover_state` | gauge | `state`: every state of the machine, 1 for the current one (all 0 until green was read) |
//! | `blueshift_cutover_pause_seconds` | gauge | the write pause (PAUSE to RESUME) of the last cutover or rollback that recorded one; no sample before the first |

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::cutover::State;

/// No value: the state was never read, or no pause was recorded.
const NONE: u64 = u64::MAX;

/// The cutover gauges of one registry.
#[derive(Debug)]
pub(super) struct CutoverGauges {
    /// The index of the state in [`State::ALL`], or [`NONE`].
    state: AtomicU64,
    /// The last pause in seconds (`f64` bits), or [`NONE`].
    pause_seconds: AtomicU64,
}

impl Default for CutoverGauges {
    fn default() -> Self {
        CutoverGauges {
            state: AtomicU64::new(NONE),
            pause_seconds: AtomicU64::new(NONE),
        }
    }
}

/// What the cutover gauges hold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CutoverSnapshot {
    /// The state read from green (`None` before the first read).
    pub state: Option<State>,
    /// The last write pause, in seconds.
    pub pause_seconds: Option<f64>,
}

impl CutoverGauges {
    pub(super) fn set(&self, state: State, pause_seconds: Option<f64>) {
        let index = State::ALL
            .iter()
            .position(|s| *s == state)
            .map_or(NONE, |i| i as u64);
        self.state.store(index, Ordering::Relaxed);
        // A cutover under way has no pause of its own yet: the last one stays exported.
        if let Some(p) = pause_seconds.filter(|p| p.is_finite() && *p >= 0.0) {
            self.pause_seconds.store(p.to_bits(), Ordering::Relaxed);
        }
    }

    pub(super) fn snapshot(&self) -> CutoverSnapshot {
        let state = self.state.load(Ordering::Relaxed);
        let pause = self.pause_seconds.load(Ordering::Relaxed);
        CutoverSnapshot {
            state: usize::try_from(state)
                .ok()
                .and_then(|i| State::ALL.get(i))
                .copied(),
            pause_seconds: (pause != NONE).then(|| f64::from_bits(pause)),
        }
    }
}

/// Appends the cutover's series to `out`.
pub(super) fn render(out: &mut String, s: &CutoverSnapshot) {
    let _ = writeln!(
        out,
        "# HELP blueshift_cutover_state The cutover's state on green (blueshift.cutover of the sync's slot): 1 for the current state, 0 for the others; all 0 until the sidecar read green."
    );
    let _ = writeln!(out, "# TYPE blueshift_cutover_state gauge");
    for state in State::ALL {
        let _ = writeln!(
            out,
            "blueshift_cutover_state{{state=\"{}\"}} {}",
            state.as_str(),
            u8::from(s.state == Some(state))
        );
    }
    let _ = writeln!(
        out,
        "# HELP blueshift_cutover_pause_seconds The write pause (PgBouncer PAUSE to RESUME) of the last cutover or rollback."
    );
    let _ = writeln!(out, "# TYPE blueshift_cutover_pause_seconds gauge");
    if let Some(p) = s.pause_seconds {
        let _ = writeln!(out, "blueshift_cutover_pause_seconds {p}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn one_state_at_a_time_and_the_last_pause() {
        let m = Metrics::new();
        let text = m.render();
        assert!(text.contains("# TYPE blueshift_cutover_state gauge\n"));
        assert!(text.contains("\nblueshift_cutover_state{state=\"fenced\"} 0\n"));
        assert!(
            !text.contains("{state=\"replicating\"} 1"),
            "unknown until read"
        );
        assert!(!text.contains("\nblueshift_cutover_pause_seconds "));

        m.set_cutover(State::Fenced, None);
        let text = m.render();
        assert!(text.contains("\nblueshift_cutover_state{state=\"fenced\"} 1\n"));
        let ones = text
            .lines()
            .filter(|l| l.starts_with("blueshift_cutover_state{") && l.ends_with(" 1"))
            .count();
        assert_eq!(ones, 1, "{text}");

        m.set_cutover(State::CutOver, Some(0.0421));
        let text = m.render();
        assert!(text.contains("\nblueshift_cutover_state{state=\"cut-over\"} 1\n"));
        assert!(text.contains("\nblueshift_cutover_state{state=\"fenced\"} 0\n"));
        assert!(text.contains("\nblueshift_cutover_pause_seconds 0.0421\n"));
        assert_eq!(
            m.cutover(),
            CutoverSnapshot {
                state: Some(State::CutOver),
                pause_seconds: Some(0.0421)
            }
        );
        // The next cutover under way has no pause yet (and a pause that is not a duration is
        // not one): the last one stays.
        m.set_cutover(State::Fenced, None);
        m.set_cutover(State::Drained, Some(f64::NAN));
        assert_eq!(m.cutover().pause_seconds, Some(0.0421));
        m.set_cutover(State::RolledBack, Some(0.5));
        assert_eq!(m.cutover().pause_seconds, Some(0.5));
    }
}
