//! The one memory budget of a sync pipeline: every in-flight transaction's changes, whether
//! being assembled, queued for the appliers or being applied, hold bytes of it.
//!
//! ```text
//!  change arrives ──charge──► open transaction (assembler) ──commit──► Job (queue, applier)
//!        │ no room: spill the largest open one, or wait        the same charge moves along,
//!        ▼ for the appliers (the reader, `make_room`)          released when the Job drops
//!     spill file: changes leave memory, their charge is released
//! ```
//!
//! The budget is a semaphore of bytes. A change is charged by [`change_size`](super::buffer)
//! — the real bytes holding it costs (its detached payload, column vector, its place in the
//! transaction's vector) — before it is buffered; a charge never waits inside the assembler
//! (it is synchronous): when the bytes are not there, the assembler spills its largest open
//! transaction, and the reader, before handing a change over, waits for the appliers to give
//! bytes back while the assembler holds less than half the budget and the appliers hold enough
//! to make room (waiting then frees memory sooner than writing a file would; a wait for bytes
//! the assembler holds would never end). A transaction that completes in memory hands its charge
//! to the job that carries it ([`TxAssembler::take_charge`](super::TxAssembler::take_charge));
//! a spilled one is charged a small constant for its reader.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes held of a [`MemoryBudget`]; given back when dropped.
pub type Charge = OwnedSemaphorePermit;

/// The byte budget shared by a pipeline's assembler and its job queue (see the module docs).
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    limit: usize,
    bytes: Arc<Semaphore>,
}

impl MemoryBudget {
    /// A budget of `limit` bytes (at most [`Semaphore::MAX_PERMITS`]).
    pub fn new(limit: usize) -> Self {
        let limit = limit.min(Semaphore::MAX_PERMITS);
        MemoryBudget {
            limit,
            bytes: Arc::new(Semaphore::new(limit)),
        }
    }

    /// The budget's size in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes not held by anyone now.
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.limit.saturating_sub(self.available())
    }

    /// `bytes` now, if they are free; never waits.
    pub fn try_charge(&self, bytes: usize) -> Option<Charge> {
        let n = u32::try_from(bytes).ok()?;
        Arc::clone(&self.bytes).try_acquire_many_owned(n).ok()
    }

    /// `bytes`, once they are free (at most the whole budget: a larger request is cut to it).
    /// Cancellation safe: nothing is held until it returns.
    pub async fn charge(&self, bytes: usize) -> Charge {
        let n = u32::try_from(bytes.min(self.limit).max(1)).unwrap_or(u32::MAX);
        Arc::clone(&self.bytes)
            .acquire_many_owned(n)
            .await
            .expect("the budget's semaphore is never closed")
    }

    /// Waits until `bytes` are free (or the whole budget, for a larger request), without
    /// taking them. Cancellation safe.
    pub async fn wait_for(&self, bytes: usize) {
        drop(self.charge(bytes).await);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn charges_hold_bytes_until_dropped() {
        let budget = MemoryBudget::new(100);
        let a = budget.try_charge(60).unwrap();
        assert_eq!((budget.used(), budget.available()), (60, 40));
        assert!(budget.try_charge(41).is_none());
        let mut b = budget.try_charge(40).unwrap();
        assert_eq!(budget.available(), 0);
        // Part of a charge goes back.
        drop(b.split(10));
        assert_eq!(budget.available(), 10);
        drop(a);
        assert_eq!(budget.available(), 70);
        // A request above the budget waits for the whole budget, not forever.
        drop(b);
        drop(budget.charge(1_000).await);
        budget.wait_for(100).await;
        assert_eq!(budget.available(), 100);
        assert!(MemoryBudget::new(0).try_charge(1).is_none());
        assert_eq!(
            MemoryBudget::new(usize::MAX).limit(),
            Semaphore::MAX_PERMITS
        );
    }
}
