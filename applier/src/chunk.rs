//! Set-based apply of a large transaction in bounded memory, and the bytes an applier holds in
//! flight.
//!
//! A folded transaction — a catch-up group, or one large source transaction such as a
//! `DELETE FROM t` of millions of rows read back from its spill file — is folded and applied in
//! **chunks** of at most [`CHUNK_MAX_CHANGES`] changes and [`CHUNK_MAX_BYTES`] bytes, in blue's
//! order, all inside the one green transaction (its `COMMIT` and origin tag are unchanged):
//!
//! ```text
//!  spill file / memory ──read──► chunk k+1 (≤ 8192 changes, ≤ 2 MiB) ──fold──► set statements
//!                                                                                  │ send: waits
//!  green ◄──── chunk k's set statements in flight (≤ 2 MiB of parameters) ◄────────┘ for room
//! ```
//!
//! Each chunk is folded on its own ([`crate::fold`]) and its net effect sent as set statements
//! ([`crate::set`]); chunks go in order. That is exact: the folded statements of a chunk leave
//! green as that chunk's changes applied one by one would, from whatever state the earlier
//! chunks left, so a key changed in several chunks gets each chunk's net effect in order (a
//! later change is never applied before an earlier one). A table that cannot be folded in a
//! chunk (the same rules as a group's: no key, REPLICA IDENTITY FULL, a unique index beyond the
//! key, a trigger that fires during apply, partitioned, a key-changing update, …) has that
//! chunk's changes applied in blue's order; a TRUNCATE is applied at its place. Every set
//! statement's row count is checked before anything commits; whatever fails, the applier rolls
//! the transaction back and applies it again in blue's order (a spilled one is read again from
//! the start of its file, [`SpilledChanges::rewind`](crate::SpilledChanges::rewind)), so the
//! error reported is the row path's.
//!
//! **Bytes in flight.** Whatever the path (row by row, folded, spilled or not), the statements
//! an applier has sent and not yet seen answered hold at most [`IN_FLIGHT_MAX_BYTES`] of
//! parameter values (plus the one statement that passes it): before a statement is sent that
//! would go beyond, the pipeline is drained ([`ChangeWriter::hold`]). A multi-row INSERT stops
//! collecting rows at [`STATEMENT_MAX_BYTES`]. With the chunk being read and folded, an applier
//! holds outside `--max-txn-memory` some three times [`CHUNK_MAX_BYTES`] at most: the chunk, the
//! copies folding makes of its rows, and the chunk before it in flight; a chunk's changes are
//! read from a spill file only as it is applied.

use std::mem::size_of;

use blueshift_decoder::pgoutput::{ColumnValue, TupleData};

use crate::change::ChangeWriter;
use crate::error::ApplyError;
use crate::transaction::{Change, Changes};

/// The most changes folded together (a set statement takes at most
/// [`MAX_SET_ROWS`](crate::set::MAX_SET_ROWS) rows: one statement per shape and table).
pub(crate) const CHUNK_MAX_CHANGES: usize = crate::set::MAX_SET_ROWS;

/// The most bytes of changes ([`change_bytes`]) folded together.
pub(crate) const CHUNK_MAX_BYTES: usize = 2 << 20;

/// The most bytes of parameter values an applier keeps in statements sent and not yet answered
/// (one statement may pass it: it is sent once the others are answered).
pub(crate) const IN_FLIGHT_MAX_BYTES: usize = 2 << 20;

/// A multi-row INSERT is sent once its rows hold this many bytes, whatever its row count.
pub(crate) const STATEMENT_MAX_BYTES: usize = 1 << 20;

/// The bytes a change holds in memory: its values and the vectors holding them.
pub(crate) fn change_bytes(change: &Change) -> usize {
    size_of::<Change>()
        + match change {
            Change::Insert { new, .. } => row_bytes(new),
            Change::Update { old, new, .. } => {
                old.as_ref().map_or(0, |o| row_bytes(o.tuple())) + row_bytes(new)
            }
            Change::Delete { old, .. } => row_bytes(old.tuple()),
            Change::Truncate { relations, .. } => relations.len() * size_of::<usize>(),
        }
}

/// The bytes a row image holds: one value slot per column and each value's bytes.
pub(crate) fn row_bytes(row: &TupleData) -> usize {
    row.columns.iter().map(value_bytes).sum()
}

/// The bytes one value holds (its slot and its bytes).
pub(crate) fn value_bytes(value: &ColumnValue) -> usize {
    size_of::<ColumnValue>()
        + match value {
            ColumnValue::Text(b) | ColumnValue::Binary(b) => b.len(),
            ColumnValue::Null | ColumnValue::UnchangedToast => 0,
        }
}

/// How many of `changes` (at least one, when there is one) go in the next chunk.
fn chunk_len(changes: &[Change]) -> usize {
    let mut bytes = 0;
    for (n, change) in changes.iter().enumerate() {
        if n == CHUNK_MAX_CHANGES || (n > 0 && bytes >= CHUNK_MAX_BYTES) {
            return n;
        }
        bytes += change_bytes(change);
    }
    changes.len()
}

impl ChangeWriter<'_> {
    /// Applies `changes` folded, chunk by chunk (see the module docs). `on_spill_error` turns a
    /// spill file error into the transaction's error.
    pub(crate) async fn write_chunked(
        &mut self,
        changes: &mut Changes,
        on_spill_error: impl Fn(std::io::Error) -> ApplyError,
    ) -> Result<(), ApplyError> {
        match changes {
            Changes::InMemory(changes) => {
                let mut rest = &changes[..];
                while !rest.is_empty() {
                    let (chunk, after) = rest.split_at(chunk_len(rest));
                    self.write_folded(chunk).await?;
                    rest = after;
                }
                Ok(())
            }
            Changes::Spilled(spilled) => {
                tracing::debug!(
                    changes = spilled.len(),
                    "spilled transaction folded chunk by chunk"
                );
                let mut read = 0u64;
                let mut chunk: Vec<Change> = Vec::new();
                loop {
                    let mut bytes = 0;
                    while chunk.len() < CHUNK_MAX_CHANGES && bytes < CHUNK_MAX_BYTES {
                        match spilled.next_change().map_err(&on_spill_error)? {
                            Some(change) => {
                                bytes += change_bytes(&change);
                                chunk.push(change);
                            }
                            None => break,
                        }
                    }
                    read += chunk.len() as u64;
                    if chunk.is_empty() {
                        break;
                    }
                    self.write_folded(&chunk).await?;
                    chunk.clear();
                }
                if read != spilled.len() {
                    // Read once per attempt: a reader not at its start would apply fewer
                    // changes than blue committed.
                    return Err(on_spill_error(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!(
                            "the spilled transaction gave {read} of its {} changes (was it \
                             read before and not rewound?)",
                            spilled.len()
                        ),
                    )));
                }
                Ok(())
            }
        }
    }

    /// Makes room for a statement holding `bytes` of parameters: when the statements in flight
    /// hold some already and the total would pass [`IN_FLIGHT_MAX_BYTES`], waits for all of
    /// them to be answered first.
    pub(crate) async fn hold(&mut self, bytes: usize) -> Result<(), ApplyError> {
        if self.in_flight_bytes > 0 && self.in_flight_bytes + bytes > IN_FLIGHT_MAX_BYTES {
            self.pipeline.drain().await?;
            self.in_flight_bytes = 0;
        }
        self.in_flight_bytes += bytes;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use blueshift_decoder::pgoutput::{OldTuple, RelationBody, RelationColumn, ReplicaIdentity};
    use blueshift_decoder::relation::RelationInfo;
    use blueshift_decoder::Oid;
    use bytes::Bytes;

    use super::*;

    fn relation() -> Arc<RelationInfo> {
        Arc::new(RelationInfo::from_message(&RelationBody {
            xid: None,
            oid: Oid(1),
            namespace: "public".into(),
            name: "t".into(),
            replica_identity: ReplicaIdentity::Default,
            columns: vec![RelationColumn {
                is_key: true,
                name: "id".into(),
                type_oid: Oid(25),
                type_modifier: -1,
            }],
        }))
    }

    fn insert(relation: &Arc<RelationInfo>, len: usize) -> Change {
        Change::Insert {
            relation: Arc::clone(relation),
            new: TupleData {
                columns: vec![ColumnValue::Text(Bytes::from(vec![b'x'; len]))],
            },
        }
    }

    #[test]
    fn chunks_are_bounded_by_count_and_bytes() {
        let r = relation();
        let small: Vec<Change> = (0..CHUNK_MAX_CHANGES * 2 + 5)
            .map(|_| insert(&r, 8))
            .collect();
        assert_eq!(chunk_len(&small), CHUNK_MAX_CHANGES);
        assert_eq!(chunk_len(&small[CHUNK_MAX_CHANGES * 2..]), 5);
        assert_eq!(chunk_len(&[]), 0);

        // 1 MiB rows: two fill a chunk; a row larger than a chunk goes alone.
        let big: Vec<Change> = (0..10).map(|_| insert(&r, 1 << 20)).collect();
        assert_eq!(chunk_len(&big), 2);
        let huge = vec![insert(&r, CHUNK_MAX_BYTES * 2), insert(&r, 1)];
        assert_eq!(chunk_len(&huge), 1);
    }

    #[test]
    fn change_bytes_counts_values_and_slots() {
        let r = relation();
        let change = insert(&r, 100);
        assert_eq!(
            change_bytes(&change),
            size_of::<Change>() + size_of::<ColumnValue>() + 100
        );
        let delete = Change::Delete {
            relation: r,
            old: OldTuple::Key(TupleData {
                columns: vec![ColumnValue::Null, ColumnValue::UnchangedToast],
            }),
        };
        assert_eq!(
            change_bytes(&delete),
            size_of::<Change>() + 2 * size_of::<ColumnValue>()
        );
    }
}
