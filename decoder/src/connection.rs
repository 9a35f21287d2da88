//! The replication connection: a connection of our own with `replication=database`, before
//! streaming starts.
//!
//! Implements the connection side of
//! <https://www.postgresql.org/docs/current/protocol-replication.html>: open the socket
//! (`transport`), start up and authenticate (`auth`), then run replication commands over the
//! simple query protocol (`query`, `slot`). `START_REPLICATION` turns the connection into a
//! [`ReplicationStream`](crate::stream::ReplicationStream) (see [`crate::stream`]).
//!
//! ```text
//! ConnectConfig ──connect──► ReplicationConnection ──start_replication──► ReplicationStream
//!                              │ identify_system / create_slot / drop_slot      │
//!                              │ simple_query                                   │ finish()
//!                              ◄───────────────────────────────────────────────┘
//! ```
//!
//! After a [`ReplicationError::Server`] the connection is still usable (the server's
//! `ReadyForQuery` has been read); after any other error, drop it.

mod auth;
mod error;
pub(crate) mod message;
mod query;
pub mod session;
mod slot;
mod transport;

use std::collections::HashMap;
use std::fmt;

use bytes::{Bytes, BytesMut};
use postgres_protocol::message::frontend;
use tokio::io::AsyncWriteExt;

pub use auth::PINNED_SEARCH_PATH;
pub use error::{AuthError, ProtocolError, ReplicationError, ServerError};
use message::{read_message, BackendMessage};
pub use query::Row;
pub use slot::{
    validate_slot_name, CreateSlotOptions, CreatedSlot, IdentifySystem, SnapshotAction,
    OUTPUT_PLUGIN,
};
pub use transport::{Socket, Transport};

use crate::config::{ConnectConfig, ServerState, SslMode};
pub(crate) use auth::StartupKind;
use transport::Negotiate;

/// The oldest server with logical replication (and so `pgoutput`).
pub const MIN_SERVER_MAJOR: u32 = 10;

/// Initial size of the read buffer.
const READ_BUFFER_CAPACITY: usize = 64 * 1024;

/// The key to cancel a running command of this backend (`BackendKeyData`). `Debug` hides the
/// secret.
#[derive(Clone, PartialEq, Eq)]
pub struct BackendKey {
    process_id: i32,
    secret_key: Bytes,
}

impl BackendKey {
    fn new(process_id: i32, secret_key: Bytes) -> BackendKey {
        BackendKey {
            process_id,
            secret_key,
        }
    }

    /// The backend's process id (the walsender's `pid` in `pg_stat_replication`).
    pub fn process_id(&self) -> i32 {
        self.process_id
    }

    /// The secret key of a `CancelRequest`.
    pub fn secret_key(&self) -> &[u8] {
        &self.secret_key
    }
}

impl fmt::Debug for BackendKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendKey")
            .field("process_id", &self.process_id)
            .field("secret_key", &"***")
            .finish()
    }
}

/// What the server told us at startup; travels from the connection into the stream and back.
#[derive(Debug)]
pub(crate) struct Session {
    /// The redacted `user@host:port/db`, for logs.
    target: String,
    parameters: HashMap<String, String>,
    backend_key: Option<BackendKey>,
    server_major: u32,
}

impl Session {
    fn new(
        target: String,
        parameters: HashMap<String, String>,
        backend_key: Option<BackendKey>,
    ) -> Result<Session, ReplicationError> {
        let version = parameters.get("server_version");
        let server_major = version.and_then(|v| parse_server_major(v)).ok_or_else(|| {
            ProtocolError::BadParameter {
                parameter: "server_version",
                value: version.cloned(),
            }
        })?;
        if server_major < MIN_SERVER_MAJOR {
            return Err(ReplicationError::Unsupported {
                what: format!("PostgreSQL {server_major} has no logical replication"),
                fix: "blueshift needs PostgreSQL 10 or later (14 or later for all features)",
            });
        }
        Ok(Session {
            target,
            parameters,
            backend_key,
            server_major,
        })
    }

    pub(crate) fn server_major(&self) -> u32 {
        self.server_major
    }

    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    pub(crate) fn set_parameter(&mut self, name: String, value: String) {
        self.parameters.insert(name, value);
    }
}

/// The major version in a `server_version` string: `18.1 (Debian 18.1-1.pgdg120+1)` → 18,
/// `15.19` → 15, `17beta1` → 17, `9.6.24` → 9.
pub(crate) fn parse_server_major(version: &str) -> Option<u32> {
    let digits = version
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()?;
    digits.parse().ok()
}

/// A replication connection (`replication=database`) ready for commands.
#[derive(Debug)]
pub struct ReplicationConnection {
    transport: Transport,
    read_buf: BytesMut,
    write_buf: BytesMut,
    session: Session,
    /// The status byte of the last `ReadyForQuery`: `I`dle, in a `T`ransaction, or in a
    /// failed transaction (`E`).
    transaction_status: u8,
    /// A replication stream ran (and ended) on this connection.
    streamed: bool,
}

/// `ReadyForQuery` status when not in a transaction block.
const TRANSACTION_IDLE: u8 = b'I';

impl ReplicationConnection {
    /// Connects and authenticates, within the configured connect timeout (for each host).
    ///
    /// With several hosts (`host=a,b`), they are tried in order until one connects; with
    /// `target_session_attrs`, until one in the state asked for connects (see
    /// [`TargetSessionAttrs`](crate::config::TargetSessionAttrs)). Cancellation-safe.
    ///
    /// TLS follows the settings' `sslmode` on every call, so a reconnect never falls back to
    /// plaintext where the mode requires TLS; with `allow`, a plaintext attempt the server
    /// refuses is retried over TLS, as libpq does.
    pub async fn connect(
        config: &ConnectConfig,
    ) -> Result<ReplicationConnection, ReplicationError> {
        Self::connect_as(config, StartupKind::Replication).await
    }

    /// [`connect`](Self::connect) as a replication or a plain session.
    pub(crate) async fn connect_as(
        config: &ConnectConfig,
        kind: StartupKind,
    ) -> Result<ReplicationConnection, ReplicationError> {
        let attrs = config.target_session_attrs();
        let candidates = config.candidates();
        let mut last_error = None;
        let mut unsuitable = Vec::new();
        for &pass in attrs.passes() {
            for candidate in &candidates {
                let mut conn = match Self::connect_one(candidate, kind).await {
                    Ok(conn) => conn,
                    Err(e) => {
                        if candidates.len() > 1 {
                            tracing::debug!(server = %candidate, error = %e, "could not connect; trying the next host");
                        }
                        last_error = Some(e);
                        continue;
                    }
                };
                if !attrs.needs_check(pass) {
                    return Ok(conn);
                }
                let rows = conn.simple_query(ServerState::QUERY).await?;
                let state = rows
                    .first()
                    .and_then(|r| ServerState::from_row(r.get(0), r.get(1)))
                    .ok_or(ProtocolError::UnexpectedResult {
                        command: "the target_session_attrs check",
                        problem: "not one row of two booleans".to_owned(),
                    })?;
                if attrs.accepts(pass, state) {
                    return Ok(conn);
                }
                unsuitable.push(format!(
                    "{}:{} is {state}",
                    candidate.host(),
                    candidate.port()
                ));
                if let Err(e) = conn.close().await {
                    tracing::debug!(error = %e, "the unsuitable connection did not close cleanly");
                }
            }
        }
        match last_error {
            Some(e) if unsuitable.is_empty() => Err(e),
            _ => Err(ReplicationError::NoSuitableHost {
                target_session_attrs: attrs.as_str(),
                found: unsuitable.join(", "),
            }),
        }
    }

    /// Connects to the one host of `config`, within its connect timeout.
    async fn connect_one(
        config: &ConnectConfig,
        kind: StartupKind,
    ) -> Result<ReplicationConnection, ReplicationError> {
        let connect = async {
            let transport = Transport::connect(config).await?;
            let first = Self::start(config, transport, kind).await;
            match first {
                Err(ReplicationError::Server(refused))
                    if config.sslmode() == SslMode::Allow && config.socket_path().is_none() =>
                {
                    tracing::debug!(server = %config, code = %refused.code, "plaintext connection refused; retrying with tls");
                    let transport =
                        Transport::connect_negotiating(config, Negotiate::RequireTls).await?;
                    Self::start(config, transport, kind).await
                }
                other => other,
            }
        };
        match config.connect_timeout() {
            Some(limit) => tokio::time::timeout(limit, connect).await.map_err(|_| {
                ReplicationError::Timeout {
                    during: "connecting",
                    after: limit,
                }
            })?,
            None => connect.await,
        }
    }

    /// Starts up and authenticates over an already open transport (for example a TLS stream),
    /// without a timeout.
    pub async fn connect_over(
        config: &ConnectConfig,
        transport: Transport,
    ) -> Result<ReplicationConnection, ReplicationError> {
        Self::start(config, transport, StartupKind::Replication).await
    }

    async fn start(
        config: &ConnectConfig,
        mut transport: Transport,
        kind: StartupKind,
    ) -> Result<ReplicationConnection, ReplicationError> {
        let mut read_buf = BytesMut::with_capacity(READ_BUFFER_CAPACITY);
        let session = auth::startup(&mut transport, &mut read_buf, config, kind).await?;
        tracing::info!(
            kind = ?kind,
            server = %config,
            tls = transport.is_tls(),
            server_version = session.parameters.get("server_version").map(String::as_str).unwrap_or_default(),
            backend_pid = session.backend_key.as_ref().map(BackendKey::process_id),
            "connection established"
        );
        Ok(ReplicationConnection {
            transport,
            read_buf,
            write_buf: BytesMut::new(),
            session,
            transaction_status: TRANSACTION_IDLE,
            streamed: false,
        })
    }

    /// True when the connection is encrypted with TLS.
    pub fn is_tls(&self) -> bool {
        self.transport.is_tls()
    }

    /// The server's `server_version`, e.g. `15.19` or `18.1 (Debian 18.1-1.pgdg120+1)`.
    pub fn server_version(&self) -> &str {
        self.parameter("server_version").unwrap_or_default()
    }

    /// The server's major version, e.g. 15.
    pub fn server_major(&self) -> u32 {
        self.session.server_major
    }

    /// A parameter the server reported (`ParameterStatus`), e.g. `server_encoding`.
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.session.parameters.get(name).map(String::as_str)
    }

    /// The backend's cancel key, when the server sent one.
    pub fn backend_key(&self) -> Option<&BackendKey> {
        self.session.backend_key.as_ref()
    }

    /// True inside a transaction block (after `BEGIN`), including a failed one.
    pub fn in_transaction(&self) -> bool {
        self.transaction_status != TRANSACTION_IDLE
    }

    pub(crate) fn set_transaction_status(&mut self, status: u8) {
        self.transaction_status = status;
    }

    /// Ends the session politely (`Terminate`) and closes the socket.
    pub async fn close(mut self) -> Result<(), ReplicationError> {
        frontend::terminate(&mut self.write_buf);
        self.flush("terminating the connection").await?;
        self.transport
            .shutdown()
            .await
            .map_err(ReplicationError::io("closing the connection"))?;
        tracing::debug!(server = %self.session.target(), "replication connection closed");
        Ok(())
    }

    /// Writes out and flushes `write_buf`.
    pub(crate) async fn flush(&mut self, during: &'static str) -> Result<(), ReplicationError> {
        self.transport
            .write_all(&self.write_buf)
            .await
            .map_err(ReplicationError::io(during))?;
        self.write_buf.clear();
        self.transport
            .flush()
            .await
            .map_err(ReplicationError::io(during))
    }

    /// Reads the next message.
    pub(crate) async fn recv(
        &mut self,
        during: &'static str,
    ) -> Result<BackendMessage, ReplicationError> {
        read_message(&mut self.transport, &mut self.read_buf, during).await
    }

    /// True once a replication stream ran on this connection.
    pub(crate) fn has_streamed(&self) -> bool {
        self.streamed
    }

    pub(crate) fn session(&self) -> &Session {
        &self.session
    }

    pub(crate) fn session_mut(&mut self) -> &mut Session {
        &mut self.session
    }

    pub(crate) fn write_buf(&mut self) -> &mut BytesMut {
        &mut self.write_buf
    }

    /// The transport with the read and write buffers, to write and read at once.
    pub(crate) fn buffers(&mut self) -> (&mut Transport, &mut BytesMut, &mut BytesMut) {
        (&mut self.transport, &mut self.read_buf, &mut self.write_buf)
    }

    /// Takes the connection apart for streaming.
    pub(crate) fn into_parts(self) -> (Transport, BytesMut, Session) {
        (self.transport, self.read_buf, self.session)
    }

    /// Puts a connection back together after streaming.
    pub(crate) fn from_parts(
        transport: Transport,
        read_buf: BytesMut,
        session: Session,
    ) -> ReplicationConnection {
        ReplicationConnection {
            transport,
            read_buf,
            write_buf: BytesMut::new(),
            session,
            transaction_status: TRANSACTION_IDLE,
            streamed: true,
        }
    }
}

/// Logs a `NoticeResponse`: a WARNING at warn level, everything else (NOTICE, INFO, LOG, DEBUG:
/// "relation … already exists, skipping") at debug level, never relayed at info.
pub(crate) fn log_notice(notice: &ServerError) {
    let ServerError {
        severity,
        code,
        message,
        detail,
        hint,
        ..
    } = notice;
    match severity.as_str() {
        "WARNING" => tracing::warn!(%severity, %code, %message, ?detail, ?hint, "server notice"),
        _ => tracing::debug!(%severity, %code, %message, ?detail, ?hint, "server notice"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_major_from_version_string() {
        assert_eq!(
            parse_server_major("18.1 (Debian 18.1-1.pgdg120+1)"),
            Some(18)
        );
        assert_eq!(parse_server_major("15.19"), Some(15));
        assert_eq!(parse_server_major("14.22"), Some(14));
        assert_eq!(parse_server_major("17beta1"), Some(17));
        assert_eq!(parse_server_major("16devel"), Some(16));
        assert_eq!(parse_server_major("9.6.24"), Some(9));
        assert_eq!(parse_server_major(""), None);
        assert_eq!(parse_server_major("x15"), None);
    }

    #[test]
    fn session_needs_a_usable_version() {
        let params = |v: &str| HashMap::from([("server_version".to_owned(), v.to_owned())]);
        assert_eq!(
            Session::new("t".into(), params("16.4"), None)
                .unwrap()
                .server_major(),
            16
        );
        assert!(matches!(
            Session::new("t".into(), HashMap::new(), None),
            Err(ReplicationError::Protocol(
                ProtocolError::BadParameter { .. }
            ))
        ));
        assert!(matches!(
            Session::new("t".into(), params("9.6.24"), None),
            Err(ReplicationError::Unsupported { .. })
        ));
    }

    #[test]
    fn backend_key_hides_secret() {
        let key = BackendKey::new(42, Bytes::from_static(b"\x01\x02\x03\x04"));
        let text = format!("{key:?}");
        assert!(text.contains("42") && text.contains("***"), "{text}");
    }
}
