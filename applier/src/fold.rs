//! Folding: the net effect of a group's changes to one table, per key.
//!
//! A catch-up group (see the engine's `sync::worker`) is hundreds of source transactions applied
//! as one green transaction. Green sees only the group's end state, so the changes to one row
//! inside it can be replaced by their net effect, and the net effects of a table applied as a
//! few set statements ([`crate::set`]) instead of one statement per change. One large source
//! transaction is folded the same way, chunk by chunk in blue's order ([`crate::chunk`]: each
//! chunk's net effect applied after the previous chunk's, which is exact):
//!
//! | before (green) | changes in the group | net effect |
//! |---|---|---|
//! | no row | insert, updates | insert of the last image |
//! | row | updates | one update to the last image |
//! | no row | insert … delete | nothing (green checked not to have the key) |
//! | row | updates … delete | delete |
//! | row | delete, insert, updates | delete, then insert of the last image |
//!
//! A delete followed by an insert of the same key stays a delete and an insert (not an update):
//! the insert carries the whole row, and the delete's row count still proves green had the row.
//!
//! **Unchanged TOAST**: an update carries `u` for a TOASTed value it did not change. Folded onto
//! an earlier image of the same group (an insert, or an update that sent the value), it takes
//! that image's value; with no earlier value in the group it stays `u`, and the set UPDATE
//! leaves that column alone, so green keeps its own copy, as the row path does.
//!
//! **What is not folded** (the table's changes then go in blue's order, row by row, as
//! before): a change blue could not have made after the earlier ones of the group (an insert of
//! a key the group already holds, an update or delete of one it deleted), an update that
//! changes the key (blue sent the old key), a key or row holding a binary value, an insert
//! carrying `u`. [`Folder::push`] returns [`Unfoldable`] for those. Which tables are folded at
//! all is decided from green's catalog (`TargetTable::foldable`): not REPLICA IDENTITY FULL or
//! keyless tables, not tables whose green has a unique index or exclusion constraint the key
//! does not imply (a swap of unique values between two rows must not fail), not tables with a
//! trigger that fires during apply, not partitioned tables; and by the applier: not in two-way
//! mode (each row carries its own commit time there), not a table a backfill fence covers, not
//! across a TRUNCATE (the group is folded in segments around it).
//!
//! The result is exact: applied to green in the order deletes, inserts, updates (distinct keys,
//! so the order inside each set does not matter), it leaves every row as the changes applied one
//! by one would, and it fails where they would fail (a row that is not there to update or
//! delete) — the property test below checks both against a model of the row path.

use std::collections::HashMap;

use blueshift_decoder::pgoutput::{ColumnValue, TupleData};
use bytes::Bytes;

/// A row's key: its key columns' text values (`None` for NULL), in key order.
pub(crate) type Key = Vec<Option<Bytes>>;

/// The key of `row` at `columns` (indexes into the row); `None` when a key value is binary or
/// an unchanged TOAST value (such a change is not folded).
pub(crate) fn key_of(row: &TupleData, columns: &[usize]) -> Option<Key> {
    columns
        .iter()
        .map(|&c| match row.columns.get(c)? {
            ColumnValue::Text(b) => Some(Some(b.clone())),
            ColumnValue::Null => Some(None),
            ColumnValue::Binary(_) | ColumnValue::UnchangedToast => None,
        })
        .collect()
}

/// One change to a keyed row, as folding sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op<'c> {
    /// A row inserted, whole.
    Insert(&'c TupleData),
    /// A row updated in place (same key); `u` for unchanged TOAST values.
    Update(&'c TupleData),
    /// A row deleted.
    Delete,
}

/// The net effect on one key so far.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Net {
    /// Green has no row: insert this one.
    Insert(TupleData),
    /// Green has the row: set it to this image (`u`: leave the column).
    Update(TupleData),
    /// Green has the row: delete it.
    Delete,
    /// Green has the row: delete it, then insert this one.
    Replace(TupleData),
    /// Inserted and deleted inside the group: nothing on green.
    Nothing,
}

/// A change blue could not have made at that point of the group, or one folding does not take:
/// the table's changes go in blue's order instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unfoldable;

/// The net effects of one table's changes, per key in order of first change.
#[derive(Debug, Default)]
pub(crate) struct Folder {
    index: HashMap<Key, usize>,
    entries: Vec<(Key, Net)>,
}

/// What a folded table's changes come to on green.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Folded {
    /// Keys to delete (rows green must have).
    pub(crate) deletes: Vec<Key>,
    /// Whole rows to insert (keys green must not have once the deletes ran).
    pub(crate) inserts: Vec<TupleData>,
    /// Rows to update in place, found by key (green must have them); `u` columns left alone.
    pub(crate) updates: Vec<TupleData>,
    /// Keys inserted and deleted inside the group: green must not have them (the row path's
    /// INSERT would have failed on such a row), though nothing is written.
    pub(crate) absent: Vec<Key>,
}

impl Folder {
    /// Folds the next change to the row of `key` (blue's order).
    pub(crate) fn push(&mut self, key: Key, op: Op<'_>) -> Result<(), Unfoldable> {
        if let Op::Insert(row) | Op::Update(row) = op {
            if row
                .columns
                .iter()
                .any(|v| matches!(v, ColumnValue::Binary(_)))
            {
                return Err(Unfoldable);
            }
        }
        if let Op::Insert(row) = op {
            if row
                .columns
                .iter()
                .any(|v| matches!(v, ColumnValue::UnchangedToast))
            {
                return Err(Unfoldable);
            }
        }
        let slot = match self.index.get(&key) {
            Some(&i) => &mut self.entries[i].1,
            None => {
                let net = match op {
                    Op::Insert(row) => Net::Insert(row.clone()),
                    Op::Update(row) => Net::Update(row.clone()),
                    Op::Delete => Net::Delete,
                };
                self.index.insert(key.clone(), self.entries.len());
                self.entries.push((key, net));
                return Ok(());
            }
        };
        let next = match (std::mem::replace(slot, Net::Nothing), op) {
            (Net::Nothing, Op::Insert(row)) => Net::Insert(row.clone()),
            (Net::Delete, Op::Insert(row)) => Net::Replace(row.clone()),
            (Net::Insert(before), Op::Update(row)) => Net::Insert(merge(before, row)?),
            (Net::Update(before), Op::Update(row)) => Net::Update(merge(before, row)?),
            (Net::Replace(before), Op::Update(row)) => Net::Replace(merge(before, row)?),
            (Net::Insert(_), Op::Delete) => Net::Nothing,
            (Net::Update(_) | Net::Replace(_), Op::Delete) => Net::Delete,
            // An insert of a key the group holds, an update or delete of one it removed.
            (Net::Insert(_) | Net::Update(_) | Net::Replace(_), Op::Insert(_))
            | (Net::Delete | Net::Nothing, Op::Update(_) | Op::Delete) => return Err(Unfoldable),
        };
        *slot = next;
        Ok(())
    }

    /// The folded statements' rows.
    pub(crate) fn finish(self) -> Folded {
        let mut folded = Folded::default();
        for (key, net) in self.entries {
            match net {
                Net::Insert(row) => folded.inserts.push(row),
                Net::Update(row) => folded.updates.push(row),
                Net::Delete => folded.deletes.push(key),
                Net::Replace(row) => {
                    folded.deletes.push(key);
                    folded.inserts.push(row);
                }
                Net::Nothing => folded.absent.push(key),
            }
        }
        folded
    }
}

/// `later` (an update) over `earlier`: each `u` of `later` takes `earlier`'s value.
fn merge(earlier: TupleData, later: &TupleData) -> Result<TupleData, Unfoldable> {
    if earlier.columns.len() != later.columns.len() {
        return Err(Unfoldable);
    }
    let columns = earlier
        .columns
        .into_iter()
        .zip(&later.columns)
        .map(|(before, after)| match after {
            ColumnValue::UnchangedToast => before,
            value => value.clone(),
        })
        .collect();
    Ok(TupleData { columns })
}

#[cfg(test)]
mod tests {
    //! Folding against a model of the row path: a table as a map from key to row, each change
    //! applied as the row path applies it (an insert fails on a key present, an update or delete
    //! on a key absent, an update leaves `u` columns as they are).

    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    type Table = BTreeMap<u8, Vec<Option<String>>>;

    fn text(s: &str) -> ColumnValue {
        ColumnValue::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    /// A row of key `k` (column 0) and `values`; `None` is `u`.
    fn row(k: u8, values: &[Option<&str>]) -> TupleData {
        let mut columns = vec![text(&k.to_string())];
        columns.extend(
            values
                .iter()
                .map(|v| v.map_or(ColumnValue::UnchangedToast, text)),
        );
        TupleData { columns }
    }

    #[derive(Debug, Clone)]
    enum Change {
        Insert(u8, Vec<String>),
        /// `None`: unchanged TOAST.
        Update(u8, Vec<Option<String>>),
        Delete(u8),
    }

    /// The row path, change by change; `Err` where it fails.
    fn apply_rows(table: &mut Table, changes: &[Change]) -> Result<(), ()> {
        for change in changes {
            match change {
                Change::Insert(k, values) => {
                    if table.contains_key(k) {
                        return Err(());
                    }
                    table.insert(*k, values.iter().cloned().map(Some).collect());
                }
                Change::Update(k, values) => {
                    let current = table.get_mut(k).ok_or(())?;
                    for (c, v) in current.iter_mut().zip(values) {
                        if let Some(v) = v {
                            *c = Some(v.clone());
                        }
                    }
                }
                Change::Delete(k) => {
                    table.remove(k).ok_or(())?;
                }
            }
        }
        Ok(())
    }

    fn values(row: &TupleData) -> Vec<Option<String>> {
        row.columns[1..]
            .iter()
            .map(|v| match v {
                ColumnValue::Text(b) => Some(String::from_utf8(b.to_vec()).unwrap()),
                _ => None,
            })
            .collect()
    }

    fn key(k: u8) -> Key {
        vec![Some(Bytes::from(k.to_string()))]
    }

    fn key_number(key: &Key) -> u8 {
        std::str::from_utf8(key[0].as_ref().unwrap())
            .unwrap()
            .parse()
            .unwrap()
    }

    /// The folded statements as the set path applies them: the check of absent keys, deletes,
    /// inserts, updates.
    fn apply_folded(table: &mut Table, folded: &Folded) -> Result<(), ()> {
        for k in &folded.absent {
            if table.contains_key(&key_number(k)) {
                return Err(());
            }
        }
        for k in &folded.deletes {
            table.remove(&key_number(k)).ok_or(())?;
        }
        for r in &folded.inserts {
            let k = key_number(&key_of(r, &[0]).unwrap());
            if table.contains_key(&k) {
                return Err(());
            }
            // An insert never carries `u`.
            assert!(values(r).iter().all(Option::is_some), "{r:?}");
            table.insert(k, values(r));
        }
        for r in &folded.updates {
            let k = key_number(&key_of(r, &[0]).unwrap());
            let current = table.get_mut(&k).ok_or(())?;
            for (c, v) in current.iter_mut().zip(values(r)) {
                if let Some(v) = v {
                    *c = Some(v);
                }
            }
        }
        Ok(())
    }

    fn fold(changes: &[Change]) -> Result<Folded, Unfoldable> {
        let rows: Vec<TupleData> = changes
            .iter()
            .map(|c| match c {
                Change::Insert(k, v) => {
                    row(*k, &v.iter().map(|s| Some(s.as_str())).collect::<Vec<_>>())
                }
                Change::Update(k, v) => {
                    row(*k, &v.iter().map(|s| s.as_deref()).collect::<Vec<_>>())
                }
                Change::Delete(k) => row(*k, &[]),
            })
            .collect();
        let mut folder = Folder::default();
        for (change, r) in changes.iter().zip(&rows) {
            let (k, op) = match change {
                Change::Insert(k, _) => (*k, Op::Insert(r)),
                Change::Update(k, _) => (*k, Op::Update(r)),
                Change::Delete(k) => (*k, Op::Delete),
            };
            folder.push(key(k), op)?;
        }
        Ok(folder.finish())
    }

    /// A sequence blue could have committed from `start`: inserts of absent keys, updates
    /// (some values left unchanged as `u`) and deletes of present ones.
    fn valid_sequence(start: Table, picks: Vec<(u8, u8, [u8; 2])>) -> Vec<Change> {
        let mut table = start;
        let mut out = Vec::new();
        for (k, what, vals) in picks {
            let k = k % 6;
            let v = |i: usize| format!("v{}", vals[i] % 4);
            let change = if let Some(current) = table.get(&k) {
                if what % 3 == 0 {
                    Change::Delete(k)
                } else {
                    // A value kept may go as `u` (a TOASTed value not changed).
                    let new: Vec<Option<String>> = (0..2)
                        .map(|i| if vals[i] >= 200 { None } else { Some(v(i)) })
                        .collect();
                    let _ = current;
                    Change::Update(k, new)
                }
            } else {
                Change::Insert(k, vec![v(0), v(1)])
            };
            apply_rows(&mut table, std::slice::from_ref(&change)).expect("valid on blue");
            out.push(change);
        }
        out
    }

    fn start_table(keys: Vec<u8>) -> Table {
        keys.into_iter()
            .map(|k| (k % 6, vec![Some("s0".to_owned()), Some("s1".to_owned())]))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// What blue committed, folded, leaves green as the row path does.
        #[test]
        fn folded_equals_row_by_row(
            keys in proptest::collection::vec(any::<u8>(), 0..6),
            picks in proptest::collection::vec((any::<u8>(), any::<u8>(), any::<[u8; 2]>()), 0..40),
        ) {
            let start = start_table(keys);
            let changes = valid_sequence(start.clone(), picks);
            let mut by_rows = start.clone();
            apply_rows(&mut by_rows, &changes).expect("valid");
            let folded = fold(&changes).expect("a valid sequence folds");
            let mut by_set = start;
            apply_folded(&mut by_set, &folded).expect("folded applies");
            prop_assert_eq!(by_set, by_rows);
        }

        /// On a green that diverged (rows missing or extra), the folded statements fail where
        /// the row path fails, and leave the same rows where it succeeds — or the sequence is
        /// not folded at all.
        #[test]
        fn folded_fails_where_row_by_row_fails(
            blue_keys in proptest::collection::vec(any::<u8>(), 0..6),
            green_keys in proptest::collection::vec(any::<u8>(), 0..6),
            picks in proptest::collection::vec((any::<u8>(), any::<u8>(), any::<[u8; 2]>()), 0..30),
        ) {
            let changes = valid_sequence(start_table(blue_keys), picks);
            let green = start_table(green_keys);
            let mut by_rows = green.clone();
            let rows = apply_rows(&mut by_rows, &changes);
            if let Ok(folded) = fold(&changes) {
                let mut by_set = green;
                let set = apply_folded(&mut by_set, &folded);
                prop_assert_eq!(set.is_ok(), rows.is_ok());
                if rows.is_ok() {
                    prop_assert_eq!(by_set, by_rows);
                }
            }
        }

        /// One large transaction folded in chunks (`crate::chunk`): cut anywhere, each chunk
        /// folded on its own (or, where it cannot be, applied row by row) and the chunks applied
        /// in order leave green as the row path does, and fail where it fails, on a green equal
        /// to blue or diverged from it.
        #[test]
        fn chunks_folded_in_order_equal_row_by_row(
            blue_keys in proptest::collection::vec(any::<u8>(), 0..6),
            green_keys in proptest::collection::vec(any::<u8>(), 0..6),
            diverged in any::<bool>(),
            picks in proptest::collection::vec((any::<u8>(), any::<u8>(), any::<[u8; 2]>()), 0..60),
            cuts in proptest::collection::vec(1usize..12, 0..12),
        ) {
            let start = start_table(blue_keys);
            let changes = valid_sequence(start.clone(), picks);
            let green = if diverged { start_table(green_keys) } else { start };
            let mut by_rows = green.clone();
            let rows = apply_rows(&mut by_rows, &changes);
            let mut by_chunks = green;
            let mut chunked = Ok(());
            let mut rest = &changes[..];
            let mut cuts = cuts.into_iter();
            while !rest.is_empty() && chunked.is_ok() {
                let n = cuts.next().unwrap_or(rest.len()).min(rest.len());
                let (chunk, after) = rest.split_at(n);
                rest = after;
                chunked = match fold(chunk) {
                    Ok(folded) => apply_folded(&mut by_chunks, &folded),
                    Err(Unfoldable) => apply_rows(&mut by_chunks, chunk),
                };
            }
            prop_assert_eq!(chunked.is_ok(), rows.is_ok());
            if rows.is_ok() {
                prop_assert_eq!(by_chunks, by_rows);
            }
        }

        /// Any sequence at all: folding never panics, and what it folds applies as the rows do.
        #[test]
        fn arbitrary_sequences_fold_or_refuse(
            changes in proptest::collection::vec(
                (any::<u8>(), 0u8..3, any::<[u8; 2]>()).prop_map(|(k, what, v)| {
                    let k = k % 4;
                    match what {
                        0 => Change::Insert(k, vec![format!("{}", v[0] % 3), format!("{}", v[1] % 3)]),
                        1 => Change::Update(k, vec![
                            (v[0] < 128).then(|| format!("{}", v[0] % 3)),
                            (v[1] < 128).then(|| format!("{}", v[1] % 3)),
                        ]),
                        _ => Change::Delete(k),
                    }
                }),
                0..20,
            ),
            keys in proptest::collection::vec(any::<u8>(), 0..4),
        ) {
            let green = start_table(keys);
            let mut by_rows = green.clone();
            let rows = apply_rows(&mut by_rows, &changes);
            if let Ok(folded) = fold(&changes) {
                let mut by_set = green;
                let set = apply_folded(&mut by_set, &folded);
                prop_assert_eq!(set.is_ok(), rows.is_ok());
                if rows.is_ok() {
                    prop_assert_eq!(by_set, by_rows);
                }
            }
        }
    }

    #[test]
    fn the_table_of_net_effects() {
        let insert = row(1, &[Some("a"), Some("b")]);
        let update = row(1, &[None, Some("c")]);
        let mut f = Folder::default();
        f.push(key(1), Op::Insert(&insert)).unwrap();
        f.push(key(1), Op::Update(&update)).unwrap();
        assert_eq!(
            f.finish(),
            Folded {
                inserts: vec![row(1, &[Some("a"), Some("c")])],
                ..Folded::default()
            },
            "insert + update: the insert of the last image, TOAST carried"
        );

        let mut f = Folder::default();
        f.push(key(1), Op::Update(&update)).unwrap();
        f.push(key(1), Op::Update(&row(1, &[None, Some("d")])))
            .unwrap();
        assert_eq!(
            f.finish().updates,
            vec![row(1, &[None, Some("d")])],
            "no earlier value: `u` stays and green keeps its own"
        );

        let mut f = Folder::default();
        f.push(key(1), Op::Insert(&insert)).unwrap();
        f.push(key(1), Op::Delete).unwrap();
        assert_eq!(
            f.finish(),
            Folded {
                absent: vec![key(1)],
                ..Folded::default()
            },
            "insert + delete: nothing written, the key checked absent"
        );

        let mut f = Folder::default();
        f.push(key(1), Op::Delete).unwrap();
        f.push(key(1), Op::Insert(&insert)).unwrap();
        f.push(key(1), Op::Update(&update)).unwrap();
        assert_eq!(
            f.finish(),
            Folded {
                deletes: vec![key(1)],
                inserts: vec![row(1, &[Some("a"), Some("c")])],
                ..Folded::default()
            },
            "delete + insert: a delete, then the insert"
        );

        let mut f = Folder::default();
        f.push(key(1), Op::Insert(&insert)).unwrap();
        assert_eq!(f.push(key(1), Op::Insert(&insert)), Err(Unfoldable));
        let mut f = Folder::default();
        assert_eq!(
            f.push(key(1), Op::Insert(&update)),
            Err(Unfoldable),
            "`u` in an insert"
        );
        let binary = TupleData {
            columns: vec![ColumnValue::Binary(Bytes::from_static(&[1]))],
        };
        assert_eq!(key_of(&binary, &[0]), None);
        assert_eq!(f.push(key(2), Op::Update(&binary)), Err(Unfoldable));
    }
}
