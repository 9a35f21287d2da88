//! The CopyBoth replication stream after `START_REPLICATION`.
//!
//! Implements the streaming half of
//! <https://www.postgresql.org/docs/current/protocol-replication.html>: the server sends
//! `XLogData` and keepalive frames in CopyData messages (`frame`); we send standby status
//! updates (`feedback`). The socket is split: the caller reads frames through
//! [`ReplicationStream::next`], and a small task (`standby_status`) owns the write half and
//! sends status updates on its own, so a caller slow to poll never makes the server time the
//! connection out.
//!
//! ```text
//!                 ┌──────────── ReplicationStream::next() ◄── caller
//!  server ──read──┤  XLogData / Keepalive (written = max wal_end)
//!                 └─ keepalive asks for a reply ──notify──┐
//!                                                         ▼
//!  server ◄─write── standby_status task: every interval, on notify, on close
//!                         ▲ positions (atomics, forward only)
//!                   FeedbackHandle::set_flushed / set_applied ◄── caller
//! ```
//!
//! Each `XLogData` payload handed out owns its bytes ([`detach`]): a decoded change kept for
//! long (a buffered transaction) holds its own bytes, not the 64 KiB read buffer it came in.
//!
//! [`ReplicationStream::finish`] sends a final status update and `CopyDone`, drains to
//! `ReadyForQuery`, and gives the connection back.

mod detach;
mod feedback;
mod frame;
mod start;

use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncWriteExt, ReadHalf};

pub use detach::{detach, held_size, INLINE_MAX};
pub use feedback::FeedbackHandle;
use feedback::StatusTask;
pub use frame::{
    parse_frame, pg_time_now, pg_time_to_system_time, system_time_to_pg_time, ReplicationFrame,
    StatusUpdate, PRIMARY_KEEPALIVE_TAG, STANDBY_STATUS_UPDATE_TAG, XLOG_DATA_TAG,
};
pub use start::{
    max_proto_version, OriginFilter, StartOptions, StatusOptions, Streaming,
    DEFAULT_STATUS_INTERVAL, MAX_PROTO_VERSION,
};

use crate::connection::message::{read_message, BackendMessage};
use crate::connection::{log_notice, ReplicationConnection, ReplicationError, Session, Transport};
use crate::Lsn;

/// How long [`ReplicationStream::finish`] waits for the server to end the copy.
const FINISH_TIMEOUT: Duration = Duration::from_secs(60);

const DURING_START: &str = "starting replication";
const DURING_STREAM: &str = "streaming";
const DURING_FINISH: &str = "ending replication";

/// Where the stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Frames are flowing.
    Streaming,
    /// The server sent `CopyDone`; we still owe ours.
    ServerCopyDone,
    /// The server left copy mode without `CopyDone` (`CommandComplete`, e.g. at shutdown).
    ServerEnded,
    /// The server reported an error: after an `ERROR` the walsender is back in command mode,
    /// after a `FATAL` it closes the connection.
    ServerFailed,
    /// The socket, the protocol or the status task failed: the connection is unusable.
    Broken,
}

impl ReplicationConnection {
    /// `START_REPLICATION SLOT slot LOGICAL start_lsn (...)`: starts streaming from the slot.
    ///
    /// The options are checked against the server's version first ([`StartOptions::check`]);
    /// nothing is sent when they do not fit. The connection becomes the stream; get it back
    /// with [`ReplicationStream::finish`] for more commands (not for a second
    /// `START_REPLICATION`, which PostgreSQL does not support on one connection). On error the
    /// connection is gone: connect again.
    pub async fn start_replication(
        mut self,
        slot: &str,
        start_lsn: Lsn,
        options: StartOptions,
        status: StatusOptions,
    ) -> Result<ReplicationStream, ReplicationError> {
        if self.has_streamed() {
            // StartLogicalReplication does not reset the walsender's "copy done" flags, so a
            // second START_REPLICATION on one connection ends at once.
            return Err(ReplicationError::Unsupported {
                what: "PostgreSQL cannot run START_REPLICATION twice on one logical replication connection".to_owned(),
                fix: "open a new connection to stream again",
            });
        }
        status.check()?;
        let (command, proto_version) = options.command(slot, start_lsn, self.server_major())?;
        tracing::debug!(%command, "starting replication");
        frontend::query(&command, self.write_buf())
            .expect("START_REPLICATION is built from checked names without NUL");
        self.flush(DURING_START).await?;

        let mut error = None;
        loop {
            match self.recv(DURING_START).await? {
                BackendMessage::CopyBothResponse if error.is_none() => break,
                BackendMessage::ErrorResponse(e) => error = Some(e),
                message @ BackendMessage::ReadyForQuery { .. } => {
                    return Err(match error {
                        Some(e) => e.into(),
                        None => message.unexpected(DURING_START),
                    });
                }
                BackendMessage::NoticeResponse(notice) => log_notice(&notice),
                BackendMessage::ParameterStatus { name, value } => {
                    self.session_mut().set_parameter(name, value)
                }
                other => return Err(other.unexpected(DURING_START)),
            }
        }
        tracing::info!(
            slot,
            start_lsn = %start_lsn,
            proto_version,
            publications = ?options.publication_names,
            streaming = %options.streaming,
            server = %self.session().target(),
            "replication started"
        );

        let (transport, read_buf, session) = self.into_parts();
        let (reader, writer) = tokio::io::split(transport);
        let feedback = FeedbackHandle::default();
        let status_task = StatusTask::spawn(writer, feedback.clone(), status.interval, slot);
        Ok(ReplicationStream {
            reader,
            read_buf,
            session,
            feedback,
            status_task: Some(status_task),
            slot: slot.to_owned(),
            start_lsn,
            proto_version,
            state: State::Streaming,
        })
    }
}

/// A logical replication stream: frames in, standby status out.
#[derive(Debug)]
pub struct ReplicationStream {
    reader: ReadHalf<Transport>,
    read_buf: BytesMut,
    session: Session,
    feedback: FeedbackHandle,
    /// `None` once it ended and its output was taken.
    status_task: Option<StatusTask>,
    slot: String,
    start_lsn: Lsn,
    proto_version: u32,
    state: State,
}

impl ReplicationStream {
    /// The next frame; `None` once the server has ended the copy (or after an error was
    /// returned).
    ///
    /// Keepalives are returned too, so an idle caller can advance its progress. For a keepalive
    /// asking for a reply, the status task is woken to answer at once before this returns.
    ///
    /// Cancellation safe: a frame is either returned or stays buffered for the next call.
    pub async fn next(&mut self) -> Result<Option<ReplicationFrame>, ReplicationError> {
        if self.state != State::Streaming {
            return Ok(None);
        }
        let result = self.read_frame().await;
        if let Err(e) = &result {
            self.state = match e {
                ReplicationError::Server(_) => State::ServerFailed,
                _ => State::Broken,
            };
        }
        result
    }

    async fn read_frame(&mut self) -> Result<Option<ReplicationFrame>, ReplicationError> {
        loop {
            let message = match self.status_task.as_mut() {
                Some(task) => tokio::select! {
                    message = read_message(&mut self.reader, &mut self.read_buf, DURING_STREAM) => message?,
                    ended = task.ended() => {
                        self.status_task = None;
                        return Err(ended.err().unwrap_or(ReplicationError::StatusTask));
                    }
                },
                None => return Err(ReplicationError::StatusTask),
            };
            match message {
                BackendMessage::CopyData(data) => {
                    // The payload leaves the read buffer: what the caller keeps of it must not
                    // keep the whole buffer alive (see `detach`).
                    let frame = match parse_frame(data)? {
                        ReplicationFrame::XLogData {
                            wal_start,
                            wal_end,
                            server_time,
                            data,
                        } => ReplicationFrame::XLogData {
                            wal_start,
                            wal_end,
                            server_time,
                            data: detach(&data),
                        },
                        keepalive => keepalive,
                    };
                    self.feedback.advance_written(frame.wal_end());
                    if let ReplicationFrame::Keepalive {
                        reply_requested: true,
                        wal_end,
                        ..
                    } = &frame
                    {
                        tracing::debug!(slot = %self.slot, wal_end = %wal_end, "keepalive asks for a reply");
                        self.feedback.request_status_update();
                    }
                    return Ok(Some(frame));
                }
                BackendMessage::CopyDone => {
                    tracing::info!(slot = %self.slot, "server ended the replication stream");
                    self.state = State::ServerCopyDone;
                    return Ok(None);
                }
                BackendMessage::CommandComplete { tag } => {
                    tracing::info!(slot = %self.slot, %tag, "server ended the replication stream");
                    self.state = State::ServerEnded;
                    return Ok(None);
                }
                BackendMessage::ErrorResponse(e) => return Err(e.into()),
                BackendMessage::NoticeResponse(notice) => log_notice(&notice),
                BackendMessage::ParameterStatus { name, value } => {
                    self.session.set_parameter(name, value)
                }
                other => return Err(other.unexpected(DURING_STREAM)),
            }
        }
    }

    /// A handle to the positions reported to the server; clone it into whatever confirms
    /// progress.
    pub fn feedback(&self) -> FeedbackHandle {
        self.feedback.clone()
    }

    /// The slot being streamed.
    pub fn slot(&self) -> &str {
        &self.slot
    }

    /// The position streaming was started from.
    pub fn start_lsn(&self) -> Lsn {
        self.start_lsn
    }

    /// The `pgoutput` protocol version in use.
    pub fn proto_version(&self) -> u32 {
        self.proto_version
    }

    /// The server's major version.
    pub fn server_major(&self) -> u32 {
        self.session.server_major()
    }

    /// Ends streaming: a final status update, `CopyDone`, then the server's remaining frames
    /// are discarded up to `ReadyForQuery`. Returns the connection, ready for commands.
    pub async fn finish(mut self) -> Result<ReplicationConnection, ReplicationError> {
        if self.state == State::Broken {
            return Err(ReplicationError::Closed {
                during: "ending a replication stream that already failed",
            });
        }
        let task = self
            .status_task
            .take()
            .ok_or(ReplicationError::StatusTask)?;
        let mut writer = task.stop().await?;
        match tokio::time::timeout(FINISH_TIMEOUT, self.drain(&mut writer)).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(ReplicationError::Timeout {
                    during: DURING_FINISH,
                    after: FINISH_TIMEOUT,
                })
            }
        }
        tracing::info!(slot = %self.slot, flushed = %self.feedback.flushed(), "replication stopped");
        let transport = self.reader.unsplit(writer);
        Ok(ReplicationConnection::from_parts(
            transport,
            self.read_buf,
            self.session,
        ))
    }

    /// Ends streaming and closes the connection. A server that already ended the stream and
    /// closed its side is not an error.
    pub async fn close(self) -> Result<(), ReplicationError> {
        let server_ended = matches!(
            self.state,
            State::ServerEnded | State::ServerFailed | State::Broken
        );
        match self.finish().await {
            Ok(connection) => connection.close().await,
            Err(e) if server_ended && e.is_io() => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn drain(
        &mut self,
        writer: &mut tokio::io::WriteHalf<Transport>,
    ) -> Result<(), ReplicationError> {
        if matches!(self.state, State::Streaming | State::ServerCopyDone) {
            let mut out = BytesMut::new();
            frontend::copy_done(&mut out);
            writer
                .write_all(&out)
                .await
                .map_err(ReplicationError::io(DURING_FINISH))?;
            writer
                .flush()
                .await
                .map_err(ReplicationError::io(DURING_FINISH))?;
        }
        let mut error = None;
        loop {
            match read_message(&mut self.reader, &mut self.read_buf, DURING_FINISH).await? {
                BackendMessage::CopyData(_)
                | BackendMessage::CopyDone
                | BackendMessage::CommandComplete { .. } => {}
                BackendMessage::NoticeResponse(notice) => log_notice(&notice),
                BackendMessage::ParameterStatus { name, value } => {
                    self.session.set_parameter(name, value)
                }
                BackendMessage::ErrorResponse(e) => error = Some(e),
                BackendMessage::ReadyForQuery { .. } => break,
                other => return Err(other.unexpected(DURING_FINISH)),
            }
        }
        match error {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}
