//! Standby status updates: the positions the caller confirms, and the task that reports them.
//!
//! Implements the client side of the "Standby status update (F)" message of
//! <https://www.postgresql.org/docs/current/protocol-replication.html#PROTOCOL-REPLICATION-START-REPLICATION>.
//!
//! The status task owns the write half of the socket and sends an update every
//! [`StatusOptions::interval`](super::StatusOptions) and at once when the reader sees a
//! keepalive asking for a reply. It runs on its own, so a caller that is slow to poll the
//! stream (back-pressure from green) does not make the server's `wal_sender_timeout` fire.
//!
//! Why it stays independent of a blocked reader: the two halves come from `tokio::io::split`,
//! whose lock is taken only inside one `poll_read`/`poll_write` call, never across an `.await`,
//! so a reader that is not being polled at all (its caller waits on a full queue) holds nothing;
//! the task is a `tokio::spawn`ed task of its own, woken by its interval; and the walsender reads
//! replies even while its own output is blocked on a full socket (`WalSndWriteData` calls
//! `ProcessRepliesIfAny`), which is what resets its timeout. The one thing a blocked reader does
//! stop is the "reply now" path, since the keepalive asking for it is never read: so the
//! interval itself must be well inside `wal_sender_timeout` —
//! [`StatusOptions::within`](super::StatusOptions::within) fits it to the server's setting.
//!
//! Positions only move forward (`fetch_max`). `written` is advanced by the stream to the
//! highest `wal_end` handed to the caller; `flushed` and `applied` are set only by the caller.
//! They start at `0/0`, which PostgreSQL reads as "nothing confirmed": the walsender calls
//! `LogicalConfirmReceivedLocation` only for a flush position other than `InvalidXLogRecPtr`,
//! so until the caller confirms something the slot's `confirmed_flush_lsn` stays where it was.
//! Confirm only positions at or past the position streaming resumed from: recent servers ignore
//! a flush position behind `confirmed_flush_lsn`, but older ones may move it back in memory.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncWriteExt, WriteHalf};
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tracing::Instrument;

use super::frame::{pg_time_now, StatusUpdate};
use crate::connection::{ReplicationError, Transport};
use crate::Lsn;

/// The positions shared between the caller, the stream and the status task.
#[derive(Debug, Default)]
struct Positions {
    written: AtomicU64,
    flushed: AtomicU64,
    applied: AtomicU64,
    /// The flushed position of the last update written to the socket.
    sent_flushed: AtomicU64,
    /// Wakes the status task to send an update now.
    send_now: Notify,
    /// The next update asks the server to answer at once.
    reply: AtomicBool,
}

/// A cloneable handle to the positions the stream reports to the server.
#[derive(Debug, Clone, Default)]
pub struct FeedbackHandle {
    positions: Arc<Positions>,
}

impl FeedbackHandle {
    /// Confirms that everything up to `lsn` is durably applied: the slot's `confirmed_flush_lsn`
    /// follows at the next status update, and the server may then recycle WAL before it.
    /// Never moves backwards.
    pub fn set_flushed(&self, lsn: Lsn) {
        self.positions.flushed.fetch_max(lsn.0, Ordering::AcqRel);
    }

    /// Reports that everything up to `lsn` is applied (informational, `replay_lsn` in
    /// `pg_stat_replication`). Never moves backwards.
    pub fn set_applied(&self, lsn: Lsn) {
        self.positions.applied.fetch_max(lsn.0, Ordering::AcqRel);
    }

    /// The flushed position reported to the server.
    pub fn flushed(&self) -> Lsn {
        Lsn(self.positions.flushed.load(Ordering::Acquire))
    }

    /// The applied position reported to the server.
    pub fn applied(&self) -> Lsn {
        Lsn(self.positions.applied.load(Ordering::Acquire))
    }

    /// The flushed position carried by the last status update actually written to the server
    /// (behind [`flushed`](Self::flushed) until the next update goes out).
    pub fn sent_flushed(&self) -> Lsn {
        Lsn(self.positions.sent_flushed.load(Ordering::Acquire))
    }

    /// The written position reported to the server: the highest `wal_end` received.
    pub fn written(&self) -> Lsn {
        Lsn(self.positions.written.load(Ordering::Acquire))
    }

    /// Asks the status task to send an update now rather than at the next interval.
    pub fn request_status_update(&self) {
        self.positions.send_now.notify_one();
    }

    /// Sends an update now that asks the server to answer at once: the walsender replies to an
    /// update whose reply flag is set with a keepalive carrying the end of the WAL it has sent,
    /// which tells an idle stream's reader how far blue has got without waiting for new WAL.
    pub fn request_reply(&self) {
        self.positions.reply.store(true, Ordering::Release);
        self.positions.send_now.notify_one();
    }

    /// Advances `written` (the stream only).
    pub(crate) fn advance_written(&self, lsn: Lsn) {
        self.positions.written.fetch_max(lsn.0, Ordering::AcqRel);
    }

    fn snapshot(&self) -> StatusUpdate {
        StatusUpdate {
            written: self.written(),
            flushed: self.flushed(),
            applied: self.applied(),
            client_time: pg_time_now(),
            reply_requested: self.positions.reply.swap(false, Ordering::AcqRel),
        }
    }
}

/// What the status task hands back when it stops: the write half, for `CopyDone`.
type TaskOutput = Result<WriteHalf<Transport>, ReplicationError>;

/// The running status task and the means to stop it.
#[derive(Debug)]
pub(crate) struct StatusTask {
    handle: JoinHandle<TaskOutput>,
    stop: Option<oneshot::Sender<()>>,
}

impl StatusTask {
    /// Starts the task `standby_status` for `slot`.
    pub(crate) fn spawn(
        writer: WriteHalf<Transport>,
        feedback: FeedbackHandle,
        interval: Duration,
        slot: &str,
    ) -> StatusTask {
        let (stop, stopped) = oneshot::channel();
        let span = tracing::info_span!("standby_status", slot = %slot);
        let handle = tokio::spawn(run(writer, feedback, interval, stopped).instrument(span));
        StatusTask {
            handle,
            stop: Some(stop),
        }
    }

    /// Waits until the task ends on its own (an error, or the stream was dropped).
    pub(crate) async fn ended(&mut self) -> TaskOutput {
        (&mut self.handle)
            .await
            .unwrap_or(Err(ReplicationError::StatusTask))
    }

    /// Sends a final update, stops the task and returns the write half.
    pub(crate) async fn stop(mut self) -> TaskOutput {
        if let Some(stop) = self.stop.take() {
            // The task may already have ended; its output says why.
            let _ = stop.send(());
        }
        self.handle
            .await
            .unwrap_or(Err(ReplicationError::StatusTask))
    }
}

async fn run(
    mut writer: WriteHalf<Transport>,
    feedback: FeedbackHandle,
    interval: Duration,
    mut stopped: oneshot::Receiver<()>,
) -> TaskOutput {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut out = BytesMut::with_capacity(64);
    loop {
        let reason = tokio::select! {
            biased;
            stop = &mut stopped => {
                if stop.is_ok() {
                    send(&mut writer, &feedback, &mut out, "final").await?;
                }
                // Otherwise the stream was dropped: nothing more to say.
                return Ok(writer);
            }
            () = feedback.positions.send_now.notified() => {
                ticker.reset();
                "requested"
            }
            _ = ticker.tick() => "interval",
        };
        send(&mut writer, &feedback, &mut out, reason).await?;
    }
}

async fn send(
    writer: &mut WriteHalf<Transport>,
    feedback: &FeedbackHandle,
    out: &mut BytesMut,
    reason: &'static str,
) -> Result<(), ReplicationError> {
    let update = feedback.snapshot();
    out.clear();
    update.encode(out);
    let during = "sending a standby status update";
    writer
        .write_all(out)
        .await
        .map_err(ReplicationError::io(during))?;
    writer.flush().await.map_err(ReplicationError::io(during))?;
    feedback
        .positions
        .sent_flushed
        .fetch_max(update.flushed.0, Ordering::AcqRel);
    tracing::debug!(
        written = %update.written,
        flushed = %update.flushed,
        applied = %update.applied,
        reason,
        "standby status sent"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_only_move_forward() {
        let handle = FeedbackHandle::default();
        let clone = handle.clone();
        assert_eq!(handle.flushed(), Lsn::INVALID);
        handle.set_flushed(Lsn(100));
        clone.set_flushed(Lsn(50));
        assert_eq!(handle.flushed(), Lsn(100));
        clone.set_flushed(Lsn(150));
        assert_eq!(handle.flushed(), Lsn(150));
        handle.set_applied(Lsn(20));
        handle.set_applied(Lsn(10));
        assert_eq!(clone.applied(), Lsn(20));
        handle.advance_written(Lsn(7));
        handle.advance_written(Lsn(3));
        assert_eq!(handle.written(), Lsn(7));
        // The stream never touches flushed or applied.
        assert_eq!(handle.flushed(), Lsn(150));
    }
}
