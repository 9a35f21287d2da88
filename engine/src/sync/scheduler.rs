//! The scheduler: numbers transactions in blue's commit order and says, for each, which earlier
//! transaction it must wait for before its changes may run.
//!
//! Transaction `n` may run as soon as every earlier transaction whose writeset conflicts with
//! its own has committed on green; it still **commits** only after `n - 1` has (see
//! [`CommitOrder`](super::order::CommitOrder)). So non-conflicting transactions overlap, and
//! green moves from one transaction-consistent state of blue to the next.
//!
//! A transaction alone waits for the latest of them ([`Slot::after`]: commits are in order).
//! A catch-up **group** of transactions `first..=last` applied as one green transaction waits
//! for every one of its members' dependencies that lies before `first`
//! ([`Slot::after_outside`]); the latest dependency of a member may lie inside the group and
//! hide an earlier one outside it, so each slot keeps all of them ([`Slot::deps`]).
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Slot {
    /// Its number in blue's commit order, from 1.
    pub(crate) seq: u64,
    /// It may run once transaction `after` has committed on green (0: at once): the latest of
    /// [`deps`](Self::deps).
    pub(crate) after: u64,
    /// The numbers of the transactions in flight it conflicts with, ascending.
    pub(crate) deps: Vec<u64>,
    /// A barrier (TRUNCATE) waits for *every* earlier transaction, which `deps` cannot list: a
    /// group holding one waits for everything before the group's first member.
    pub(crate) barrier: bool,
}

impl Slot {
    /// What a group starting at `first` that holds this transaction must wait for on its
    /// account: its latest dependency before `first` (0: none).
    pub(crate) fn after_outside(deps: &[u64], first: u64) -> u64 {
        match deps.partition_point(|&d| d < first) {
            0 => 0,
            n => deps[n - 1],
        }
    }
}

/// Dependencies collected past this many are sorted and deduplicated (then past twice as
/// many): a transaction of many changes meets the same few transactions over and over.
const DEPS_COMPACT_AT: usize = 32;

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
            let deps = if seq - 1 > committed {
                vec![seq - 1]
            } else {
                Vec::new()
            };
            return Slot {
                seq,
                after: seq - 1,
                deps,
                barrier: true,
            };
        }
        let mut deps = Vec::new();
        let mut compact_at = DEPS_COMPACT_AT;
        let mut depend = |s: u64| {
            if s > committed {
                deps.push(s);
                if deps.len() > compact_at {
                    deps.sort_unstable();
                    deps.dedup();
                    compact_at = compact_at.max(deps.len() * 2);
                }
            }
        };
        depend(self.last_barrier);
        let lookups = [
            (&self.keys, &ws.keys),
            (&self.locked, &ws.touched),
            (&self.touched, &ws.locked),
        ];
        for (map, hashes) in lookups {
            for h in hashes {
                if let Some(&s) = map.get(h) {
                    depend(s);
                }
            }
        }
        deps.sort_unstable();
        deps.dedup();
        for (map, hashes) in [
            (&mut self.keys, &ws.keys),
            (&mut self.touched, &ws.touched),
            (&mut self.locked, &ws.locked),
        ] {
            for h in hashes {
                map.insert(*h, seq);
            }
        }
        Slot {
            seq,
            after: deps.last().copied().unwrap_or(0),
            deps,
            barrier: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(s: Slot) -> (u64, u64) {
        (s.seq, s.after)
    }

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
        assert_eq!(slot(s.schedule(&ws(&[1]), 0)), (1, 0));
        assert_eq!(slot(s.schedule(&ws(&[2]), 0)), (2, 0));
        assert_eq!(slot(s.schedule(&ws(&[1, 3]), 0)), (3, 1));
        assert_eq!(slot(s.schedule(&ws(&[3, 2]), 0)), (4, 3));
        // Once 3 committed, a conflict with it no longer waits.
        assert_eq!(slot(s.schedule(&ws(&[3]), 3)), (5, 4));
        assert_eq!(slot(s.schedule(&ws(&[1]), 4)), (6, 0));
    }

    #[test]
    fn barriers_wait_for_all_and_all_wait_for_barriers() {
        let mut s = Scheduler::starting_at(10);
        assert_eq!(s.schedule(&ws(&[1]), 9).after, 0);
        assert_eq!(slot(s.schedule(&Writeset::barrier(), 9)), (11, 10));
        assert_eq!(slot(s.schedule(&ws(&[2]), 9)), (12, 11));
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

    #[test]
    fn every_dependency_is_kept_for_groups() {
        let mut s = Scheduler::starting_at(1);
        s.schedule(&ws(&[1]), 0); // 1
        s.schedule(&ws(&[2]), 0); // 2
        s.schedule(&ws(&[3]), 0); // 3
                                  // 4 conflicts with 1 and 3: alone it waits for 3, the latest.
        let four = s.schedule(&ws(&[1, 3]), 0);
        assert_eq!((four.after, four.deps.clone()), (3, vec![1, 3]));
        // In a group starting at 2 (holding 3 too), 4 still needs 1 committed first.
        assert_eq!(Slot::after_outside(&four.deps, 2), 1);
        assert_eq!(Slot::after_outside(&four.deps, 4), 3);
        assert_eq!(Slot::after_outside(&four.deps, 1), 0);
        // Committed ones are no dependency.
        let five = s.schedule(&ws(&[2]), 2);
        assert!(five.deps.is_empty());
        assert_eq!(s.schedule(&ws(&[1, 2]), 2).deps, vec![4, 5]);
    }

    #[test]
    fn many_changes_meeting_the_same_transactions_keep_each_once() {
        let mut s = Scheduler::starting_at(1);
        for t in 0..10u64 {
            let keys: Vec<u64> = (t * 1000..(t + 1) * 1000).collect();
            s.schedule(&ws(&keys), 0);
        }
        // 10 000 keys, every one held by one of the ten.
        let all: Vec<u64> = (0..10_000).collect();
        let big = s.schedule(&ws(&all), 0);
        assert_eq!(big.deps, (1..=10).collect::<Vec<_>>());
        assert_eq!(big.after, 10);
    }
}
