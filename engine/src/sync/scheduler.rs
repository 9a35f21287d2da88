//! The scheduler: numbers transactions in blue's commit order and says, for each, which earlier
//! transaction it must wait for before its changes may run.
//!
//! Transaction `n` may run as soon as every earlier transaction whose writeset conflicts with
//! its own has committed on green; it still **commits** only after `n - 1` has (see
//! [`CommitOrder`](super::order::CommitOrder)). So non-conflicting transactions overlap, and
//! green moves from one transaction-consistent state of blue to the next.
//!
//! The scheduler runs on one task (the reader), so its maps need no locking: entries of
//! transactions already committed are ignored, and pruned now and then, which bounds them by the
//! number of transactions in flight.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::writeset::Writeset;

/// How many transactions between prunings of committed entries.
const PRUNE_EVERY: u64 = 1024;

/// A transaction's place in the apply order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    /// Its number in blue's commit order, from 1.
    pub(crate) seq: u64,
    /// It may run once transaction `after` has committed on green (0: at once).
    pub(crate) after: u64,
}

/// The writesets' hashes are xxh3 digests already: a map keyed by them uses them as they are
/// instead of hashing them again (the scheduler looks up every hash of every transaction).
#[derive(Debug, Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed here; fold anything else in rather than panic.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Hash → the number of the last transaction in flight that holds it.
type HashIndex = HashMap<u64, u64, BuildHasherDefault<Prehashed>>;

/// Tracks the writesets of transactions in flight.
#[derive(Debug, Default)]
pub(crate) struct Scheduler {
    next_seq: u64,
    keys: HashIndex,
    touched: HashIndex,
    locked: HashIndex,
    /// The last barrier's number: everything after it waits for it.
    last_barrier: u64,
}

impl Scheduler {
    /// A scheduler whose first transaction gets number `first_seq`.
    pub(crate) fn starting_at(first_seq: u64) -> Scheduler {
        Scheduler {
            next_seq: first_seq,
            ..Scheduler::default()
        }
    }

    /// The number the next transaction will get.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Numbers the next transaction and registers its writeset; `committed` is the highest
    /// number committed on green so far.
    pub(crate) fn schedule(&mut self, ws: &Writeset, committed: u64) -> Slot {
        let seq = self.next_seq;
        self.next_seq += 1;
        if seq % PRUNE_EVERY == 0 {
            for map in [&mut self.keys, &mut self.touched, &mut self.locked] {
                map.retain(|_, s| *s > committed);
            }
        }
        if ws.barrier {
            self.last_barrier = seq;
            return Slot {
                seq,
                after: seq - 1,
            };
        }
        let mut after = self.last_barrier;
        let mut wait_for = |map: &HashIndex, hashes: &[u64]| {
            for h in hashes {
                if let Some(&s) = map.get(h) {
                    if s > committed {
                        after = after.max(s);
                    }
                }
            }
        };
        wait_for(&self.keys, &ws.keys);
        wait_for(&self.locked, &ws.touched);
        wait_for(&self.touched, &ws.locked);
        for (map, hashes) in [
            (&mut self.keys, &ws.keys),
            (&mut self.touched, &ws.touched),
            (&mut self.locked, &ws.locked),
        ] {
            for h in hashes {
                map.insert(*h, seq);
            }
        }
        if after <= committed {
            after = 0;
        }
        Slot { seq, after }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws(keys: &[u64]) -> Writeset {
        Writeset {
            keys: keys.to_vec(),
            touched: vec![100],
            ..Writeset::default()
        }
    }

    #[test]
    fn independent_transactions_run_at_once_conflicting_ones_wait() {
        let mut s = Scheduler::starting_at(1);
        assert_eq!(s.schedule(&ws(&[1]), 0), Slot { seq: 1, after: 0 });
        assert_eq!(s.schedule(&ws(&[2]), 0), Slot { seq: 2, after: 0 });
        assert_eq!(s.schedule(&ws(&[1, 3]), 0), Slot { seq: 3, after: 1 });
        assert_eq!(s.schedule(&ws(&[3, 2]), 0), Slot { seq: 4, after: 3 });
        // Once 3 committed, a conflict with it no longer waits.
        assert_eq!(s.schedule(&ws(&[3]), 3), Slot { seq: 5, after: 4 });
        assert_eq!(s.schedule(&ws(&[1]), 4), Slot { seq: 6, after: 0 });
    }

    #[test]
    fn barriers_wait_for_all_and_all_wait_for_barriers() {
        let mut s = Scheduler::starting_at(10);
        assert_eq!(s.schedule(&ws(&[1]), 9).after, 0);
        assert_eq!(
            s.schedule(&Writeset::barrier(), 9),
            Slot { seq: 11, after: 10 }
        );
        assert_eq!(s.schedule(&ws(&[2]), 9), Slot { seq: 12, after: 11 });
        assert_eq!(s.schedule(&ws(&[3]), 11).after, 0);
    }

    #[test]
    fn a_table_lock_waits_for_every_change_to_the_table() {
        let mut s = Scheduler::starting_at(1);
        assert_eq!(s.schedule(&ws(&[1]), 0).after, 0);
        let lock = Writeset {
            locked: vec![100],
            touched: vec![100],
            ..Writeset::default()
        };
        assert_eq!(s.schedule(&lock, 0).after, 1);
        assert_eq!(s.schedule(&ws(&[7]), 0).after, 2);
        let other_table = Writeset {
            keys: vec![8],
            touched: vec![200],
            ..Writeset::default()
        };
        assert_eq!(s.schedule(&other_table, 0).after, 0);
    }

    #[test]
    fn pruning_keeps_what_is_in_flight() {
        let mut s = Scheduler::starting_at(1);
        for i in 1..=PRUNE_EVERY * 2 {
            s.schedule(&ws(&[i]), i.saturating_sub(10));
        }
        assert!(s.keys.len() <= 11 + usize::try_from(PRUNE_EVERY).unwrap());
        // The last ten are still known.
        let last = PRUNE_EVERY * 2;
        assert_eq!(s.schedule(&ws(&[last]), last - 10).after, last);
    }
}
