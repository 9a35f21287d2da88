//! One open transaction's changes: in memory, each with the subxid that made it, until the
//! assembler spills them to a [`SpillWriter`]; from then on every change goes to the file.
//!
//! Memory is accounted per change by [`change_size`], in the real bytes holding it costs: the
//! payload it was decoded from, which the stream detached from its read buffer and which its
//! values slice ([`held_size`]: the size class and headers of that one allocation), the vector
//! of each row image's columns (with the allocator's header), and twice the `Change` and its
//! subxid (a growing vector holds up to twice its length). `tests/tests/memory_budget.rs`
//! checks the sum against the process's peak resident size.
//!
//! The bytes are held of the pipeline's [`MemoryBudget`](super::budget::MemoryBudget): the
//! buffer keeps the [`Charge`] of its in-memory changes, gives it back as they are spilled or
//! dropped, and hands it over when the transaction completes.

use std::mem::size_of;

use blueshift_applier::{Change, Changes};
use blueshift_decoder::pgoutput::{ColumnValue, OldTuple, PgOutputMessage, TupleData};
use blueshift_decoder::stream::held_size;
use blueshift_decoder::Xid;

use super::budget::Charge;
use super::error::AssembleError;
use super::spill::{SpillWriter, WriteError};

/// Counted for every buffered change besides its payload and columns: the `Change` and its
/// subxid, twice (vector growth).
pub(super) const CHANGE_OVERHEAD: usize = 2 * (size_of::<Change>() + size_of::<Xid>());

/// The allocator's header of each allocation (glibc's chunk header, rounded up).
const ALLOCATION_HEADER: usize = 16;

/// A change message's bytes besides its row images: tag, xid of a streamed block, relation
/// OID, the submessage bytes (`K`/`O`, `N`).
const MESSAGE_HEADER: usize = 1 + 4 + 4 + 2;

/// The bytes a buffered change is accounted for (see the module docs).
pub(super) fn change_size(change: &Change) -> usize {
    match change {
        Change::Insert { new, .. } => rows_size([Some(new), None]),
        Change::Update { old, new, .. } => {
            rows_size([old.as_ref().map(OldTuple::tuple), Some(new)])
        }
        Change::Delete { old, .. } => rows_size([Some(old.tuple()), None]),
        Change::Truncate { relations, .. } => truncate_size(relations.len()),
    }
}

/// What [`change_size`] will account for the change `message` stands for; `None` for a message
/// that is not a change.
pub(super) fn message_size(message: &PgOutputMessage) -> Option<usize> {
    Some(match message {
        PgOutputMessage::Insert(m) => rows_size([Some(&m.new), None]),
        PgOutputMessage::Update(m) => {
            rows_size([m.old.as_ref().map(OldTuple::tuple), Some(&m.new)])
        }
        PgOutputMessage::Delete(m) => rows_size([Some(m.old.tuple()), None]),
        PgOutputMessage::Truncate(m) => truncate_size(m.relations.len()),
        _ => return None,
    })
}

/// A change with these row images: its payload's bytes (the message header, per image its
/// column count and per column its kind byte, length and value), the payload's allocation
/// ([`held_size`]), each image's column vector.
fn rows_size(rows: [Option<&TupleData>; 2]) -> usize {
    let (wire, vectors) = rows
        .into_iter()
        .flatten()
        .fold((0, 0), |(wire, vectors), t| {
            let columns = t
                .columns
                .iter()
                .map(|c| 1 + c.bytes().map_or(0, |b| 4 + b.len()))
                .sum::<usize>();
            (
                wire + 2 + columns,
                vectors + t.columns.len() * size_of::<ColumnValue>() + ALLOCATION_HEADER,
            )
        });
    CHANGE_OVERHEAD + held_size(MESSAGE_HEADER + wire) + vectors
}

/// A Truncate of `relations` tables: its payload and the vector of their descriptions.
fn truncate_size(relations: usize) -> usize {
    CHANGE_OVERHEAD
        + held_size(MESSAGE_HEADER + relations * 4)
        + relations * size_of::<usize>()
        + ALLOCATION_HEADER
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
    /// Those bytes, held of the budget (`None` while nothing is held).
    charge: Option<Charge>,
}

impl TxBuffer {
    /// An empty in-memory buffer.
    pub(super) fn new() -> Self {
        TxBuffer {
            store: Store::Memory(Vec::new(), Vec::new()),
            bytes: 0,
            charge: None,
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

    /// Adds `change` of subtransaction `subxid` (the top xid for a plain transaction), of
    /// `size` bytes ([`change_size`]). In memory it keeps `charge` (those bytes of the budget);
    /// a spilled buffer writes the change to its file and `charge` goes back.
    ///
    /// The caller spills the buffer first when it has no charge for the change.
    pub(super) fn push(
        &mut self,
        xid: Xid,
        subxid: Xid,
        change: Change,
        size: usize,
        charge: Option<Charge>,
    ) -> Result<Added, AssembleError> {
        match (&mut self.store, charge) {
            (Store::Memory(changes, subxids), Some(charge)) => {
                changes.push(change);
                subxids.push(subxid);
                self.bytes += size;
                match &mut self.charge {
                    Some(held) => held.merge(charge),
                    None => self.charge = Some(charge),
                }
                Ok(Added {
                    memory: size,
                    spilled: 0,
                })
            }
            (Store::Memory(..), None) => {
                unreachable!(
                    "the assembler spills a buffer before pushing a change it has no charge for"
                )
            }
            (Store::Spilled(writer), _) => Ok(Added {
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
                if let Some(held) = &mut self.charge {
                    drop(held.split(freed));
                }
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
        self.charge = None;
        let freed = std::mem::take(&mut self.bytes);
        Ok((freed, written))
    }

    /// The transaction's changes, in order: the vector, or the spill file's reader; and the
    /// charge of those held in memory.
    pub(super) fn finish(self, xid: Xid) -> Result<(Changes, Option<Charge>), AssembleError> {
        match self.store {
            Store::Memory(changes, _) => Ok((Changes::InMemory(changes), self.charge)),
            Store::Spilled(writer) => {
                let path = writer.path().to_owned();
                let reader =
                    writer
                        .finish()
                        .map_err(|source| AssembleError::Spill { xid, path, source })?;
                Ok((Changes::Spilled(Box::new(reader)), None))
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
