//! The replication lag in seconds, computed when asked (at each scrape) rather than set when a
//! transaction commits, so that it keeps growing exactly when nothing commits: while green or
//! the stream is down, and while a large transaction applies.
//!
//! The rule, shared by `blueshift_lag_seconds` and `blueshift status` (through the heartbeat the
//! sync records on green, see `sync::heartbeat`):
//!
//! > lag = now − the *basis*, the commit time of the oldest transaction blue committed that
//! > green does not hold yet; 0 when there is none.
//!
//! The basis is the older of two instants:
//! - the commit time of the oldest transaction received from blue and not yet committed on
//!   green (the reader records each one as it schedules it, the appliers release them as they
//!   commit, in order);
//! - while green or the stream is down (and until sync has shown it is past the outage), the
//!   instant it went down, or the oldest unapplied commit at that instant if older: blue may
//!   have committed anything since, and nothing of it can reach green. The floor is lifted
//!   when a transaction committed at or after the outage began is applied (green then holds
//!   everything before it), or when blue says the stream is idle with nothing in flight.
//!
//! Before the first stream starts (connecting, the backfill) the floor is the moment the clock
//! was made: green is not known to hold anything yet.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// The lag clock; see the module doc.
#[derive(Debug)]
pub(crate) struct LagClock {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Transactions received and not yet committed on green: (sequence number, blue's commit
    /// time), in sequence order.
    pending: VecDeque<(u64, SystemTime)>,
    /// Set while green or the stream is down, and until sync is past the outage: (the lag's
    /// floor, the instant the last outage began). A transaction committed at or after the
    /// second, once applied, shows sync is past it.
    behind_since: Option<(SystemTime, SystemTime)>,
}

impl LagClock {
    pub(crate) fn new(now: SystemTime) -> LagClock {
        LagClock {
            state: Mutex::new(State {
                pending: VecDeque::new(),
                behind_since: Some((now, now)),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means a thread panicked between two plain assignments.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Transaction `seq`, committed on blue at `at`, was received and scheduled.
    pub(crate) fn received(&self, seq: u64, at: SystemTime) {
        let mut s = self.state();
        // Sequence numbers restart at each attempt, which clears the list first (`down`).
        if s.pending.back().is_some_and(|(last, _)| *last >= seq) {
            s.pending.clear();
        }
        s.pending.push_back((seq, at));
    }

    /// Every transaction up to `seq` is committed on green, the last of them committed on blue
    /// at `at` (when known).
    pub(crate) fn applied(&self, seq: u64, at: Option<SystemTime>) {
        let mut s = self.state();
        while s.pending.front().is_some_and(|(n, _)| *n <= seq) {
            s.pending.pop_front();
        }
        if let (Some((_, down_at)), Some(at)) = (s.behind_since, at) {
            if at >= down_at {
                s.behind_since = None;
            }
        }
    }

    /// Blue says the stream is idle and nothing is in flight: green holds everything.
    pub(crate) fn caught_up(&self) {
        let mut s = self.state();
        s.pending.clear();
        s.behind_since = None;
    }

    /// Green or the stream went down at `now`: what was in flight is dropped (it will be sent
    /// again) and the lag grows from the oldest of it, or from `now`.
    pub(crate) fn down(&self, now: SystemTime) {
        let mut s = self.state();
        let oldest = s.pending.front().map_or(now, |(_, at)| (*at).min(now));
        s.behind_since = Some(match s.behind_since {
            Some((floor, down_at)) => (floor.min(oldest), down_at.max(now)),
            None => (oldest, now),
        });
        s.pending.clear();
    }

    /// The instant the lag is measured from, `None` when green holds everything known.
    pub(crate) fn basis(&self) -> Option<SystemTime> {
        let s = self.state();
        match (
            s.pending.front().map(|(_, at)| *at),
            s.behind_since.map(|(floor, _)| floor),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The lag at `now`, in seconds.
    pub(crate) fn seconds(&self, now: SystemTime) -> f64 {
        self.basis()
            .map_or(Duration::ZERO, |basis| {
                now.duration_since(basis).unwrap_or_default()
            })
            .as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn grows_from_the_start_until_caught_up() {
        let clock = LagClock::new(at(100));
        assert_eq!(clock.seconds(at(105)), 5.0);
        clock.caught_up();
        assert_eq!(clock.seconds(at(200)), 0.0);
    }

    #[test]
    fn a_transaction_applying_makes_it_grow() {
        let clock = LagClock::new(at(0));
        clock.caught_up();
        clock.received(1, at(10));
        clock.received(2, at(11));
        // The big one applies: nothing commits, the lag keeps growing.
        assert_eq!(clock.seconds(at(30)), 20.0);
        assert_eq!(clock.seconds(at(40)), 30.0);
        clock.applied(1, Some(at(10)));
        assert_eq!(clock.seconds(at(40)), 29.0);
        clock.applied(2, Some(at(11)));
        assert_eq!(clock.seconds(at(40)), 0.0);
    }

    #[test]
    fn an_outage_keeps_it_growing_until_past_it() {
        let clock = LagClock::new(at(0));
        clock.caught_up();
        clock.received(1, at(50));
        // Green goes down at 52 with transaction 1 unapplied.
        clock.down(at(52));
        assert_eq!(clock.seconds(at(60)), 10.0);
        // Reconnected: the first transactions sent again are older than the floor...
        clock.received(1, at(50));
        clock.applied(1, Some(at(50)));
        assert_eq!(clock.seconds(at(70)), 20.0);
        // ...until one committed after the floor is applied.
        clock.received(2, at(65));
        clock.applied(2, Some(at(65)));
        assert_eq!(clock.seconds(at(70)), 0.0);
    }

    #[test]
    fn an_outage_with_nothing_in_flight_counts_from_its_start() {
        let clock = LagClock::new(at(0));
        clock.caught_up();
        clock.down(at(100));
        assert_eq!(clock.seconds(at(112)), 12.0);
        // A second failure while still behind keeps the older floor.
        clock.down(at(110));
        assert_eq!(clock.seconds(at(112)), 12.0);
        clock.caught_up();
        assert_eq!(clock.seconds(at(130)), 0.0);
    }
}
