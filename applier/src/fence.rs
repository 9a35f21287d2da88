//! Fences: per table, which of blue's transactions a backfilled table already holds.
//!
//! After a backfill, a table's rows were copied under one or more snapshots of blue (see the
//! engine's `backfill` module). A change committed before the oldest of them (`skip_before`) is
//! in every copy and is skipped; one committed before the newest (`reconcile_before`) meets rows
//! of mixed ages and is applied idempotently; anything later is applied normally.

use std::collections::HashMap;

use blueshift_decoder::Lsn;

/// The fence of one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    /// Changes of transactions committed before this are already in the table.
    pub skip_before: Lsn,
    /// Changes of transactions committed before this (and not skipped) are applied idempotently.
    pub reconcile_before: Lsn,
}

/// How to apply one table's changes of one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// As they are.
    Apply,
    /// Not at all: green holds them already.
    Skip,
    /// Idempotently: INSERT as upsert, an UPDATE with its whole row as delete-then-upsert, a
    /// DELETE of a missing row is no error.
    Reconcile,
}

impl Fence {
    /// What to do with a change of a transaction committed at `commit_lsn`.
    pub fn action(&self, commit_lsn: Lsn) -> Action {
        if commit_lsn < self.skip_before {
            Action::Skip
        } else if commit_lsn < self.reconcile_before {
            Action::Reconcile
        } else {
            Action::Apply
        }
    }
}

/// Fences by table (`schema`, `name`); a table without one is applied as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fences(HashMap<String, HashMap<String, Fence>>);

impl Fences {
    /// Sets the fence of `schema.name`.
    pub fn insert(&mut self, schema: impl Into<String>, name: impl Into<String>, fence: Fence) {
        self.0
            .entry(schema.into())
            .or_default()
            .insert(name.into(), fence);
    }

    /// What to do with a change to `schema.name` committed at `commit_lsn`.
    pub fn action(&self, schema: &str, name: &str, commit_lsn: Lsn) -> Action {
        if self.0.is_empty() {
            return Action::Apply;
        }
        self.get(schema, name)
            .map_or(Action::Apply, |f| f.action(commit_lsn))
    }

    /// The fence of `schema.name`.
    pub fn get(&self, schema: &str, name: &str) -> Option<Fence> {
        self.0.get(schema)?.get(name).copied()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every fence.
    pub fn values(&self) -> impl Iterator<Item = &Fence> {
        self.0.values().flat_map(HashMap::values)
    }

    /// How many tables have one.
    pub fn len(&self) -> usize {
        self.0.values().map(HashMap::len).sum()
    }

    /// Drops the fences every transaction committed after `lsn` is past: once green holds
    /// everything up to it, they no longer change anything.
    pub fn forget_before(&mut self, lsn: Lsn) {
        for tables in self.0.values_mut() {
            tables.retain(|_, f| f.skip_before.max(f.reconcile_before) > lsn);
        }
        self.0.retain(|_, tables| !tables.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn before_between_after() {
        let f = Fence {
            skip_before: Lsn(100),
            reconcile_before: Lsn(200),
        };
        assert_eq!(f.action(Lsn(99)), Action::Skip);
        assert_eq!(f.action(Lsn(100)), Action::Reconcile);
        assert_eq!(f.action(Lsn(199)), Action::Reconcile);
        assert_eq!(f.action(Lsn(200)), Action::Apply);
        let mut fences = Fences::default();
        assert_eq!(fences.action("s", "t", Lsn(1)), Action::Apply);
        fences.insert("s", "t", f);
        assert_eq!(fences.action("s", "t", Lsn(1)), Action::Skip);
        assert_eq!(fences.action("s", "u", Lsn(1)), Action::Apply);
        fences.forget_before(Lsn(150));
        assert_eq!(fences.len(), 1);
        fences.forget_before(Lsn(200));
        assert!(fences.is_empty());
    }
}
