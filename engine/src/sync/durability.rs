//! Durability: which of the transactions committed on green are on green's disk, and so may be
//! reported to blue's slot as flushed.
//!
//! The appliers commit with `synchronous_commit = off`, as PostgreSQL's own apply workers do: a
//! COMMIT returns before green's WAL is flushed, and green's WAL writer flushes within
//! `wal_writer_delay`. Each commit's green WAL position is queued here, in blue's commit order;
//! a tracker task asks green for `pg_current_wal_flush_lsn()` and moves the slot's flushed
//! position to the end LSN of the last transaction in that order whose commit green has flushed.
//!
//! The position goes to the acknowledger ([`super::acknowledge`]), which records it in the slot
//! guard on green before the slot hears of it.
//!
//! If green crashes, the commits it had not flushed are lost — and so is their replication
//! origin progress, which is part of the same commit records. The slot was never told about them,
//! so blue sends them again and they are applied once more, once. Invariant 2 holds: the slot
//! never passes what green durably holds.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use blueshift_applier::failpoint;
use blueshift_decoder::Lsn;
use tokio::sync::Notify;
use tokio_postgres::Client;

use super::acknowledge::Acks;

/// How often green is asked while commits wait to be confirmed durable.
const POLL: Duration = Duration::from_millis(20);

/// Commits waiting for green's WAL flush, in blue's commit order.
#[derive(Debug, Default)]
pub(crate) struct Durability {
    pending: Mutex<VecDeque<Pending>>,
    more: Notify,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    /// Green's WAL insert position right after the commit (`0/0`: nothing was written).
    green: Lsn,
    /// Blue's end LSN of the transaction.
    end: Lsn,
}

impl Durability {
    /// Queues a commit. Called in blue's commit order (before the next transaction may commit).
    pub(crate) fn committed(&self, green: Lsn, end: Lsn) {
        self.lock().push_back(Pending { green, end });
        self.more.notify_one();
    }

    /// Commits not yet known to be durable.
    pub(crate) fn pending(&self) -> usize {
        self.lock().len()
    }

    /// Confirms every queued commit whose green position `flushed` covers, in order; returns
    /// the end LSN of the last one confirmed.
    fn confirm(&self, flushed: Lsn) -> Option<Lsn> {
        let mut pending = self.lock();
        let mut last = None;
        while pending.front().is_some_and(|p| p.green <= flushed) {
            last = pending.pop_front().map(|p| p.end);
        }
        last
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Pending>> {
        // A panic while holding this lock cannot leave the queue inconsistent (push/pop only).
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Confirms durable commits to the slot until the task is aborted. Ends with the error when its
/// connection to green is gone: green may have crashed and lost unflushed commits, which only a
/// reconnection (resuming from green's durable origin progress) sends again. A failed query on a
/// live connection is retried; until then nothing is confirmed, which is always safe.
pub(crate) async fn track(
    durability: Arc<Durability>,
    green: Arc<Client>,
    acks: Arc<Acks>,
) -> Result<(), tokio_postgres::Error> {
    loop {
        if durability.pending() == 0 {
            durability.more.notified().await;
            continue;
        }
        match flush_lsn(&green).await {
            Ok(flushed) => {
                if let Some(end) = durability.confirm(flushed) {
                    failpoint::hit("after-durable");
                    acks.durable(end);
                }
            }
            Err(e) if green.is_closed() => return Err(e),
            Err(e) => tracing::debug!(error = %e, "could not read green's WAL flush position"),
        }
        if durability.pending() > 0 {
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Waits, up to `limit`, until every queued commit is confirmed (at shutdown).
pub(crate) async fn drain(durability: &Durability, green: &Client, acks: &Acks, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while durability.pending() > 0 && tokio::time::Instant::now() < deadline {
        if let Ok(flushed) = flush_lsn(green).await {
            if let Some(end) = durability.confirm(flushed) {
                acks.durable(end);
            }
        }
        if durability.pending() > 0 {
            tokio::time::sleep(POLL).await;
        }
    }
}

async fn flush_lsn(green: &Client) -> Result<Lsn, tokio_postgres::Error> {
    let row = green
        .query_one("SELECT pg_catalog.pg_current_wal_flush_lsn()::text", &[])
        .await?;
    let text: String = row.get(0);
    Ok(text.parse().unwrap_or(Lsn::INVALID))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirms_in_order_up_to_the_flush() {
        let d = Durability::default();
        d.committed(Lsn(100), Lsn(1000));
        d.committed(Lsn(0), Lsn(1100)); // passed through: wrote nothing on green
        d.committed(Lsn(300), Lsn(1200));
        assert_eq!(d.confirm(Lsn(50)), None);
        // The pass-through waits behind the commit before it.
        assert_eq!(d.confirm(Lsn(150)), Some(Lsn(1100)));
        assert_eq!(d.pending(), 1);
        assert_eq!(d.confirm(Lsn(300)), Some(Lsn(1200)));
        assert_eq!(d.pending(), 0);
    }
}
