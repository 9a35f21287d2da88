//! One open transaction's changes: in memory, each with the subxid that made it, until the
//! assembler spills them to a [`SpillWriter`]; from then on every change goes to the file.
//!
//! Memory is accounted per change by [`change_size`]: what holding it really costs, measured
//! against the process's resident size — its column values and their framing in the message they
//! slice, the vector of its columns (with the allocator's header), and twice the `Change` and
//! its subxid (a growing vector holds up to twice its length).

use std::mem::size_of;

use blueshift_applier::{Change, Changes};
use blueshift_decoder::pgoutput::{ColumnValue, OldTuple, TupleData};
use blueshift_decoder::Xid;

use super::error::AssembleError;
use super::spill::{SpillWriter, WriteError};

/// Counted for every buffered change besides its columns: the `Change` and its subxid, twice
/// (vector growth), the message framing, and the allocator's header of its column vector.
pub(super) const CHANGE_OVERHEAD: usize = 2 * (size_of::<Change>() + size_of::<Xid>()) + 16 + 16;

/// Counted for every column besides its value's bytes: its slot in the column vector and its
/// framing in the message (kind byte and length).
const COLUMN_OVERHEAD: usize = size_of::<ColumnValue>() + 5;

/// The bytes a buffered change is accounted for.
pub(super) fn change_size(change: &Change) -> usize {
    fn tuple(t: &TupleData) -> usize {
        t.columns
            .iter()
            .map(|c| COLUMN_OVERHEAD + c.bytes().map_or(0, |b| b.len()))
            .sum()
    }
    fn old(t: &OldTuple) -> usize {
        tuple(t.tuple())
    }
    CHANGE_OVERHEAD
        + match change {
            Change::Insert { new, .. } => tuple(new),
            Change::Update { old: o, new, .. } => o.as_ref().map_or(0, old) + tuple(new),
            Change::Delete { old: o, .. } => old(o),
            Change::Truncate { relations, .. } => relations.len() * size_of::<usize>(),
        }
}

/// Where an open transaction's changes are.
#[derive(Debug)]
enum Store {
    /// The changes, and the subxid of each (kept apart so that the change vector is handed over
    /// as it is, not copied, when the transaction ends).
    Memory(Vec<Change>, Vec<Xid>),
    Spilled(Box<SpillWriter>),
}

/// What adding a change cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Added {
    /// Bytes now held in memory.
    pub(super) memory: usize,
    /// Bytes written to the spill file.
    pub(super) spilled: u64,
}

/// The changes of one open transaction.
#[derive(Debug)]
pub(super) struct TxBuffer {
    store: Store,
    /// Accounted bytes held in memory (0 once spilled).
    bytes: usize,
}

impl TxBuffer {
    /// An empty in-memory buffer.
    pub(super) fn new() -> Self {
        TxBuffer {
            store: Store::Memory(Vec::new(), Vec::new()),
            bytes: 0,
        }
    }

    /// Accounted bytes held in memory.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether the changes go to a spill file.
    pub(super) fn is_spilled(&self) -> bool {
        matches!(self.store, Store::Spilled(_))
    }

    /// Adds `change` of subtransaction `subxid` (the top xid for a plain transaction).
    pub(super) fn push(
        &mut self,
        xid: Xid,
        subxid: Xid,
        change: Change,
    ) -> Result<Added, AssembleError> {
        match &mut self.store {
            Store::Memory(changes, subxids) => {
                let size = change_size(&change);
                changes.push(change);
                subxids.push(subxid);
                self.bytes += size;
                Ok(Added {
                    memory: size,
                    spilled: 0,
                })
            }
            Store::Spilled(writer) => Ok(Added {
                memory: 0,
                spilled: write(writer, xid, subxid, change)?,
            }),
        }
    }

    /// Drops the changes of subtransaction `subxid`; returns the memory bytes freed.
    pub(super) fn abort_subxact(&mut self, subxid: Xid) -> usize {
        match &mut self.store {
            Store::Memory(changes, subxids) => {
                let mut freed = 0;
                let mut keep = subxids.iter().map(|s| *s != subxid);
                changes.retain(|change| {
                    let kept = keep.next().unwrap_or(true);
                    if !kept {
                        freed += change_size(change);
                    }
                    kept
                });
                subxids.retain(|s| *s != subxid);
                self.bytes -= freed;
                freed
            }
            Store::Spilled(writer) => {
                writer.abort_subxact(subxid);
                0
            }
        }
    }

    /// Moves the changes held in memory to `writer` and sends every later one there; returns
    /// the memory bytes freed and the bytes written.
    pub(super) fn spill(
        &mut self,
        xid: Xid,
        mut writer: SpillWriter,
    ) -> Result<(usize, u64), AssembleError> {
        let Store::Memory(changes, subxids) = &mut self.store else {
            return Ok((0, 0));
        };
        let mut written = 0;
        for (change, subxid) in changes.drain(..).zip(subxids.drain(..)) {
            written += write(&mut writer, xid, subxid, change)?;
        }
        self.store = Store::Spilled(Box::new(writer));
        let freed = std::mem::take(&mut self.bytes);
        Ok((freed, written))
    }

    /// The transaction's changes, in order: the vector, or the spill file's reader.
    pub(super) fn finish(self, xid: Xid) -> Result<Changes, AssembleError> {
        match self.store {
            Store::Memory(changes, _) => Ok(Changes::InMemory(changes)),
            Store::Spilled(writer) => {
                let path = writer.path().to_owned();
                let reader =
                    writer
                        .finish()
                        .map_err(|source| AssembleError::Spill { xid, path, source })?;
                Ok(Changes::Spilled(Box::new(reader)))
            }
        }
    }
}

fn write(
    writer: &mut SpillWriter,
    xid: Xid,
    subxid: Xid,
    change: Change,
) -> Result<u64, AssembleError> {
    writer.write(subxid, change).map_err(|e| match e {
        WriteError::Io(source) => AssembleError::Spill {
            xid,
            path: writer.path().to_owned(),
            source,
        },
        WriteError::Encode(source) => AssembleError::SpillEncode { xid, source },
    })
}
