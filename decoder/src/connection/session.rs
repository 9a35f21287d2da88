//! A plain (non-replication) SQL session on our own protocol client: what an applier pipelines
//! its extended-protocol messages over, with one `Sync` per window instead of one per statement
//! (tokio-postgres ends every request with its own `Sync`).
//!
//! It is the replication connection's machinery started without `replication=database`: the
//! same transport (TLS with libpq's `sslmode` semantics, `connect_timeout`, several hosts and
//! `target_session_attrs`), the same startup and authentication (SCRAM with channel binding,
//! MD5, cleartext; the password read only when asked for, never logged), the same pinned
//! `search_path` and value formats; plus `default_transaction_read_only=off`. No copy of any of
//! it lives here.
//!
//! The session does not build or interpret requests: its user writes frontend messages
//! (`postgres_protocol::message::frontend`) into [`buffer`](SqlSession::buffer), pushes them
//! with [`send`](SqlSession::send) and reads the answers one [`Reply`] at a time. `send` reads
//! whatever the server answers meanwhile into the read buffer, so a large window can never
//! deadlock with a server that blocks on writing answers nobody reads.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::auth::StartupKind;
use super::error::{ReplicationError, ServerError};
use super::message::BackendMessage;
use super::query::Row;
use super::{log_notice, BackendKey, ReplicationConnection};
use crate::config::ConnectConfig;

const DURING_SEND: &str = "sending a pipelined window";
const DURING_RECV: &str = "reading a pipelined answer";

/// Bytes read at most at a time while a window is being written.
const READ_CHUNK: usize = 64 * 1024;

/// One answer of the server to an extended-protocol or simple-query message. Notices and
/// parameter changes are handled by the session and never returned.
#[derive(Debug)]
pub enum Reply {
    /// `Parse` done.
    ParseComplete,
    /// `Bind` done.
    BindComplete,
    /// `Close` done.
    CloseComplete,
    /// `Describe` of a statement that returns no rows.
    NoData,
    /// The columns of the rows that follow (a simple query's result).
    RowDescription,
    /// One row, each value in the format asked for; `None` for SQL NULL.
    DataRow(Vec<Option<Bytes>>),
    /// A statement finished: its command tag (`UPDATE 3`, `INSERT 0 1`, `COMMIT`, ...).
    CommandComplete(String),
    /// An empty statement finished.
    EmptyQuery,
    /// The server's error: in the extended protocol it then skips every message up to the next
    /// `Sync`.
    Error(Box<ServerError>),
    /// A `Sync` or a simple query is done; the transaction status byte: `I`dle, in a
    /// `T`ransaction block, or in a failed one (`E`).
    ReadyForQuery(u8),
}

/// A plain SQL session ready for requests.
#[derive(Debug)]
pub struct SqlSession {
    conn: ReplicationConnection,
    /// Set once the transport failed: the session must be dropped.
    broken: bool,
}

impl SqlSession {
    /// Connects and authenticates as [`ReplicationConnection::connect`] does, without
    /// `replication=database`.
    pub async fn connect(config: &ConnectConfig) -> Result<SqlSession, ReplicationError> {
        let conn = ReplicationConnection::connect_as(config, StartupKind::Plain).await?;
        Ok(SqlSession {
            conn,
            broken: false,
        })
    }

    /// True when the connection is encrypted with TLS.
    pub fn is_tls(&self) -> bool {
        self.conn.is_tls()
    }

    /// The server's major version, e.g. 15.
    pub fn server_major(&self) -> u32 {
        self.conn.server_major()
    }

    /// The backend's cancel key (its process id), when the server sent one.
    pub fn backend_key(&self) -> Option<&BackendKey> {
        self.conn.backend_key()
    }

    /// True once reading or writing failed: the session is unusable.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// The outgoing messages not sent yet: write frontend messages here.
    pub fn buffer(&mut self) -> &mut BytesMut {
        self.conn.write_buf()
    }

    /// Runs `command` (fixed text only: `SET`, `ROLLBACK`, ...) with the simple query protocol
    /// and returns its rows. Only between windows: every answer of the last window read.
    pub async fn simple_query(&mut self, command: &str) -> Result<Vec<Row>, ReplicationError> {
        let result = self.conn.simple_query(command).await;
        if let Err(e) = &result {
            self.broken |= !matches!(e, ReplicationError::Server(_));
        }
        result
    }

    /// Writes out every buffered message, reading meanwhile whatever the server answers (kept
    /// for [`recv`](Self::recv)). Cancellation-safe in the sense that matters here: the session
    /// is then broken and must be dropped.
    pub async fn send(&mut self) -> Result<(), ReplicationError> {
        self.broken = true;
        let (transport, read_buf, write_buf) = self.conn.buffers();
        poll_fn(|cx| {
            while !write_buf.is_empty() {
                match Pin::new(&mut *transport).poll_write(cx, write_buf) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(ReplicationError::Closed {
                            during: DURING_SEND,
                        }))
                    }
                    Poll::Ready(Ok(n)) => write_buf.advance(n),
                    Poll::Ready(Err(e)) => {
                        return Poll::Ready(Err(ReplicationError::io(DURING_SEND)(e)))
                    }
                    Poll::Pending => {
                        // The server may be blocked writing answers: take them in.
                        if read_some(transport, read_buf, cx)? {
                            continue;
                        }
                        return Poll::Pending;
                    }
                }
            }
            match Pin::new(&mut *transport).poll_flush(cx) {
                Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
                Poll::Ready(Err(e)) => Poll::Ready(Err(ReplicationError::io(DURING_SEND)(e))),
                Poll::Pending => Poll::Pending,
            }
        })
        .await?;
        write_buf.clear();
        self.broken = false;
        Ok(())
    }

    /// Reads the next answer.
    pub async fn recv(&mut self) -> Result<Reply, ReplicationError> {
        loop {
            let message = match self.conn.recv(DURING_RECV).await {
                Ok(message) => message,
                Err(e) => {
                    self.broken = true;
                    return Err(e);
                }
            };
            let reply = match message {
                BackendMessage::Other {
                    name: "ParseComplete",
                } => Reply::ParseComplete,
                BackendMessage::Other {
                    name: "BindComplete",
                } => Reply::BindComplete,
                BackendMessage::Other {
                    name: "CloseComplete",
                } => Reply::CloseComplete,
                BackendMessage::Other { name: "NoData" } => Reply::NoData,
                BackendMessage::RowDescription { .. } => Reply::RowDescription,
                BackendMessage::DataRow { values } => Reply::DataRow(values),
                BackendMessage::CommandComplete { tag } => Reply::CommandComplete(tag),
                BackendMessage::EmptyQueryResponse => Reply::EmptyQuery,
                BackendMessage::ErrorResponse(e) => Reply::Error(e),
                BackendMessage::ReadyForQuery { status } => {
                    self.conn.set_transaction_status(status);
                    Reply::ReadyForQuery(status)
                }
                BackendMessage::NoticeResponse(notice) => {
                    log_notice(&notice);
                    continue;
                }
                BackendMessage::ParameterStatus { name, value } => {
                    self.conn.session_mut().set_parameter(name, value);
                    continue;
                }
                BackendMessage::NotificationResponse => continue,
                other => {
                    self.broken = true;
                    return Err(other.unexpected(DURING_RECV));
                }
            };
            return Ok(reply);
        }
    }

    /// Ends the session politely (`Terminate`) and closes the socket.
    pub async fn close(self) -> Result<(), ReplicationError> {
        self.conn.close().await
    }
}

/// Reads what is there into `buf` without waiting; true when something was read.
fn read_some(
    transport: &mut super::Transport,
    buf: &mut BytesMut,
    cx: &mut std::task::Context<'_>,
) -> Result<bool, ReplicationError> {
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut read = ReadBuf::new(&mut chunk);
    match Pin::new(transport).poll_read(cx, &mut read) {
        Poll::Ready(Ok(())) => {
            let filled = read.filled();
            if filled.is_empty() {
                return Err(ReplicationError::Closed {
                    during: DURING_SEND,
                });
            }
            buf.extend_from_slice(filled);
            Ok(true)
        }
        Poll::Ready(Err(e)) => Err(ReplicationError::io(DURING_SEND)(e)),
        Poll::Pending => Ok(false),
    }
}
