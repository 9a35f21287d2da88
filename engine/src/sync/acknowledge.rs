//! The acknowledger: the only way a position reaches blue's slot as *flushed*.
//!
//! ```text
//!  durability tracker (green flushed a commit) ─┐
//!  reader (idle keepalive: nothing in flight)  ─┴─► Acks::durable(lsn)   (atomic, forward only)
//!                                                        │ at most once per status interval
//!                                                        ▼
//!                         green: UPDATE blueshift.slot_guard SET acknowledged = lsn; COMMIT
//!                                                        │ (synchronous_commit = local)
//!                                                        ▼
//!                         FeedbackHandle::set_flushed(lsn) ──► standby status ──► blue's slot
//! ```
//!
//! Recording first is what lets the next start tell a slot blueshift left from one somebody
//! moved (see [`crate::slot_guard`]): the slot's `confirmed_flush_lsn` can never be past the
//! record. Only positions that are both durable on green and recorded are reported, so
//! invariant 2 (the slot never passes what green durably holds) is kept as before; the record
//! only delays the acknowledgement by up to one interval.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use blueshift_applier::failpoint;
use blueshift_decoder::stream::FeedbackHandle;
use blueshift_decoder::Lsn;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;
use tokio_postgres::Client;

use crate::slot_guard::{self, SlotError};

/// Positions known durable on green, waiting to be recorded and acknowledged.
#[derive(Debug)]
pub(crate) struct Acks {
    durable: AtomicU64,
    /// Wakes the acknowledger when `durable` moved.
    moved: Notify,
    feedback: FeedbackHandle,
}

impl Acks {
    pub(crate) fn new(feedback: FeedbackHandle) -> Arc<Acks> {
        Arc::new(Acks {
            durable: AtomicU64::new(0),
            moved: Notify::new(),
            feedback,
        })
    }

    /// Everything up to `lsn` is durably on green (or, when idle, nothing before it concerns
    /// green). Reported as *applied* at once (informational), as *flushed* once recorded.
    pub(crate) fn durable(&self, lsn: Lsn) {
        if self.durable.fetch_max(lsn.0, Ordering::AcqRel) < lsn.0 {
            self.moved.notify_one();
        }
        self.feedback.set_applied(lsn);
    }

    /// The newest durable position reported.
    pub(crate) fn wanted(&self) -> Lsn {
        Lsn(self.durable.load(Ordering::Acquire))
    }
}

/// Records durable positions on green and hands them to the stream.
#[derive(Debug)]
pub(crate) struct Acknowledger {
    pub(crate) acks: Arc<Acks>,
    /// A connection to green of its own (its transactions never mix with other work).
    pub(crate) green: Client,
    pub(crate) slot: String,
    /// What green's record holds.
    pub(crate) recorded: Lsn,
}

impl Acknowledger {
    /// Records and acknowledges what became durable — at once after a quiet spell, then at
    /// most once per `every` — until `stop` fires (or its sender is dropped), then once more and
    /// returns. An error (green gone, the record gone) ends it: nothing more is acknowledged,
    /// which is always safe.
    pub(crate) async fn run(
        mut self,
        every: Duration,
        mut stop: oneshot::Receiver<()>,
    ) -> Result<(), SlotError> {
        let mut last: Option<Instant> = None;
        loop {
            tokio::select! {
                biased;
                _ = &mut stop => return self.flush().await,
                () = self.acks.moved.notified() => {}
            }
            if let Some(last) = last {
                tokio::select! {
                    biased;
                    _ = &mut stop => return self.flush().await,
                    () = tokio::time::sleep_until(last + every) => {}
                }
            }
            self.flush().await?;
            last = Some(Instant::now());
        }
    }

    /// Records the newest durable position (when past the record) and reports it as flushed.
    async fn flush(&mut self) -> Result<(), SlotError> {
        let want = self.acks.wanted();
        if want > self.recorded {
            self.recorded = slot_guard::advance(&mut self.green, &self.slot, want).await?;
            failpoint::hit("after-slot-guard-record");
        }
        let feedback = &self.acks.feedback;
        if want > feedback.flushed() && want <= self.recorded {
            feedback.set_flushed(want);
            feedback.request_status_update();
            #[cfg(feature = "failpoints")]
            {
                // Once the update carrying it is on the wire.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                while feedback.sent_flushed() < want && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                if feedback.sent_flushed() >= want {
                    failpoint::hit("after-status-update");
                }
            }
        }
        Ok(())
    }
}
