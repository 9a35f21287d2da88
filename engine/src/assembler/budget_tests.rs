//! The shared budget: a completed transaction's charge travels with it, a full budget makes the
//! next transaction spill as it arrives, aborts and spills give bytes back.

use super::tests::{
    abort, assembler_sharing, begin, commit, files, insert, relation, start, stream_commit,
    transaction, values,
};
use super::*;

/// The bytes one single-column insert of `value` is charged.
fn one_insert(value: &str) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let budget = MemoryBudget::new(usize::MAX);
    let mut a = assembler_sharing(dir.path(), budget.clone());
    a.push(relation(1, 1, None)).unwrap();
    a.push(begin(1, 10)).unwrap();
    let message = insert(None, 1, value);
    let needed = a.charge_needed(&message);
    a.push(message).unwrap();
    assert_eq!(budget.used(), needed);
    assert_eq!(a.stats().buffered_bytes, needed);
    needed
}

#[test]
fn a_completed_transaction_keeps_its_charge_and_a_full_budget_spills_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let each = one_insert("aaaa");
    let budget = MemoryBudget::new(3 * each);
    let mut a = assembler_sharing(dir.path(), budget.clone());
    a.push(relation(1, 1, None)).unwrap();
    a.push(begin(1, 10)).unwrap();
    for v in ["aaaa", "bbbb", "cccc"] {
        a.push(insert(None, 1, v)).unwrap();
    }
    assert_eq!(budget.used(), 3 * each);
    let first = transaction(a.push(commit(10)).unwrap().unwrap());
    assert_eq!(a.stats().buffered_bytes, 0);
    let charge = a.take_charge().expect("completed in memory");
    assert_eq!(charge.num_permits(), 3 * each);
    assert!(a.take_charge().is_none(), "taken once");
    // Queued (the charge is held): the next transaction finds no bytes and spills at once.
    a.push(begin(2, 20)).unwrap();
    let message = insert(None, 1, "dddd");
    assert_eq!(a.charge_needed(&message), each);
    a.push(message).unwrap();
    assert_eq!(a.stats().spilled_transactions_total, 1);
    assert_eq!(files(dir.path()), 1);
    // Its later changes go to the file without being charged.
    assert_eq!(a.charge_needed(&insert(None, 1, "eeee")), 0);
    a.push(insert(None, 1, "eeee")).unwrap();
    let second = transaction(a.push(commit(20)).unwrap().unwrap());
    assert!(second.changes.in_memory().is_none());
    assert!(
        a.take_charge().is_none(),
        "a spilled transaction has no charge"
    );
    assert_eq!(values(second.changes), ["dddd", "eeee"]);
    // Applied: the bytes go back, and the next transaction stays in memory.
    drop(charge);
    assert_eq!(values(first.changes), ["aaaa", "bbbb", "cccc"]);
    assert_eq!(budget.available(), 3 * each);
    a.push(begin(3, 30)).unwrap();
    a.push(insert(None, 1, "ffff")).unwrap();
    let third = transaction(a.push(commit(30)).unwrap().unwrap());
    assert!(third.changes.in_memory().is_some());
    // Not taken: given back at the next completion.
    assert_eq!(budget.used(), each);
    a.push(begin(4, 40)).unwrap();
    a.push(commit(40)).unwrap();
    assert_eq!(budget.used(), 0);
}

#[test]
fn aborts_spills_and_resets_give_bytes_back() {
    let dir = tempfile::tempdir().unwrap();
    let each = one_insert("aaaa");
    let budget = MemoryBudget::new(100 * each);
    let mut a = assembler_sharing(dir.path(), budget.clone());
    a.push(relation(1, 1, None)).unwrap();
    a.push(start(7, true)).unwrap();
    for (subxid, v) in [(7, "aaaa"), (8, "bbbb"), (8, "cccc"), (7, "dddd")] {
        a.push(insert(Some(subxid), 1, v)).unwrap();
    }
    a.push(PgOutputMessage::StreamStop).unwrap();
    assert_eq!(budget.used(), 4 * each);
    // Subtransaction 8 aborts: its two changes' bytes go back.
    a.push(abort(7, 8)).unwrap();
    assert_eq!(budget.used(), 2 * each);
    assert_eq!(a.stats().buffered_bytes, 2 * each);
    let t = transaction(a.push(stream_commit(7, 70)).unwrap().unwrap());
    assert_eq!(values(t.changes), ["aaaa", "dddd"]);
    drop(a.take_charge());
    assert_eq!(budget.used(), 0);
    // A whole abort, and a reset, give back what was held.
    a.push(start(9, true)).unwrap();
    a.push(insert(Some(9), 1, "x")).unwrap();
    a.push(PgOutputMessage::StreamStop).unwrap();
    assert!(budget.used() > 0);
    a.push(abort(9, 9)).unwrap();
    assert_eq!(budget.used(), 0);
    a.push(begin(10, 100)).unwrap();
    a.push(insert(None, 1, "y")).unwrap();
    assert!(budget.used() > 0);
    a.reset();
    assert_eq!(budget.used(), 0);
    // Spilling on demand (the sync's reader, to make room for a spilled transaction's reader).
    a.push(relation(1, 1, None)).unwrap();
    a.push(begin(11, 110)).unwrap();
    a.push(insert(None, 1, "z")).unwrap();
    assert!(a.spill_largest().unwrap());
    assert_eq!((budget.used(), a.stats().buffered_bytes), (0, 0));
    assert!(!a.spill_largest().unwrap(), "nothing left in memory");
    a.push(insert(None, 1, "zz")).unwrap();
    let t = transaction(a.push(commit(110)).unwrap().unwrap());
    assert_eq!(values(t.changes), ["z", "zz"]);
}

#[test]
fn a_change_larger_than_the_budget_spills_its_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let budget = MemoryBudget::new(1000);
    let mut a = assembler_sharing(dir.path(), budget.clone());
    a.push(relation(1, 1, None)).unwrap();
    a.push(begin(1, 10)).unwrap();
    let big = "z".repeat(5000);
    assert!(a.charge_needed(&insert(None, 1, &big)) > budget.limit());
    a.push(insert(None, 1, &big)).unwrap();
    assert_eq!(budget.used(), 0);
    assert_eq!(a.stats().spilled_transactions_total, 1);
    let t = transaction(a.push(commit(10)).unwrap().unwrap());
    assert_eq!(values(t.changes), [big]);
}
