//! One open transaction's changes: in memory, each with the subxid that made it, until the
//! assembler spills them to a [`SpillWriter`]; from then on every change goes to the file.
//!
//! Memory is accounted per change by [`change_size`]: the lengths of its column values plus a
//! fixed overhead per change and per column, an estimate of what holding it costs.

use std::mem::size_of;

use blueshift_applier::{Change, Changes};
use blueshift_decoder::pgoutput::{ColumnValue, OldTuple, TupleData};
use blueshift_decoder::Xid;

use super::error::AssembleError;
use super::spill::{SpillWriter, WriteError};

/// Counted for every buffered change besides its values: the `Change` itself, its subxid, the
/// vectors' headers and the relation `Arc`.
pub(super) const CHANGE_OVERHEAD: usize = 64 + size_of::<(Xid, Change)>();

/// Counted for every column besides its value's bytes.
const COLUMN_OVERHEAD: usize = size_of::<ColumnValue>();

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
    Memory(Vec<(Xid, Change)>),
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
            store: Store::Memory(Vec::new()),
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
            Store::Memory(changes) => {
                let size = change_size(&change);
                changes.push((subxid, change));
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
            Store::Memory(changes) => {
                let mut freed = 0;
                changes.retain(|(s, change)| {
                    let keep = *s != subxid;
                    if !keep {
                        freed += change_size(change);
                    }
                    keep
                });
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
        let Store::Memory(changes) = &mut self.store else {
            return Ok((0, 0));
        };
        let mut written = 0;
        for (subxid, change) in changes.drain(..) {
            written += write(&mut writer, xid, subxid, change)?;
        }
        self.store = Store::Spilled(Box::new(writer));
        let freed = std::mem::take(&mut self.bytes);
        Ok((freed, written))
    }

    /// The transaction's changes, in order: the vector, or the spill file's reader.
    pub(super) fn finish(self, xid: Xid) -> Result<Changes, AssembleError> {
        match self.store {
            Store::Memory(changes) => Ok(Changes::InMemory(
                changes.into_iter().map(|(_, change)| change).collect(),
            )),
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
