//! The byte stream under a replication connection: TCP, TLS over TCP, a Unix socket, or any
//! boxed stream.
//!
//! Socket addressing follows
//! <https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-CONNECT-HOST>: a host
//! starting with `/` is the directory of the socket `.s.PGSQL.<port>`. TLS is negotiated as in
//! <https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-SSL>: an
//! `SSLRequest`, one byte of answer (`S` or `N`), then the handshake ([`crate::tls`]). Unix
//! sockets never use TLS, as in libpq.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::client::TlsStream;

use super::error::ReplicationError;
use crate::config::{ConnectConfig, Host, SslMode};
use crate::tls::{TlsConnector, TlsError};

/// Any bidirectional byte stream a connection can run over.
pub trait Socket: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Socket for T {}

/// The stream a replication connection runs over.
pub enum Transport {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
    /// A Unix-domain socket.
    Unix(UnixStream),
    /// Anything else, e.g. TLS over one of the above.
    Other(Box<dyn Socket>),
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Tcp(s) => f.debug_tuple("Tcp").field(&s.peer_addr().ok()).finish(),
            Transport::Tls(s) => f
                .debug_tuple("Tls")
                .field(&s.get_ref().0.peer_addr().ok())
                .finish(),
            Transport::Unix(s) => f.debug_tuple("Unix").field(&s.peer_addr().ok()).finish(),
            Transport::Other(_) => f.write_str("Other(..)"),
        }
    }
}

/// Whether to ask for TLS on a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Negotiate {
    /// As the settings' `sslmode` says (`allow` starts without TLS).
    AsConfigured,
    /// TLS, refusing a server without it: `allow`'s second attempt.
    RequireTls,
}

impl Transport {
    /// Opens the socket `config` names and negotiates TLS as its `sslmode` says (no timeout
    /// here; the caller bounds the whole connect).
    pub async fn connect(config: &ConnectConfig) -> Result<Transport, ReplicationError> {
        Self::connect_negotiating(config, Negotiate::AsConfigured).await
    }

    pub(super) async fn connect_negotiating(
        config: &ConnectConfig,
        negotiate: Negotiate,
    ) -> Result<Transport, ReplicationError> {
        // Certificate files are read (and their errors reported) before the server is reached.
        let tls = TlsConnector::new(config)?;
        match config.host() {
            Host::Tcp(host) => {
                let mut stream = TcpStream::connect((host.as_str(), config.port()))
                    .await
                    .map_err(|source| ReplicationError::Connect {
                        address: format!("{}:{}", config.host(), config.port()),
                        source,
                    })?;
                // Standby status updates are tiny and must not wait for Nagle.
                stream
                    .set_nodelay(true)
                    .map_err(ReplicationError::io("setting TCP_NODELAY"))?;
                let Some(tls) = tls else {
                    return Ok(Transport::Tcp(stream));
                };
                let require = match (negotiate, tls.mode()) {
                    (Negotiate::RequireTls, _) => true,
                    (Negotiate::AsConfigured, SslMode::Allow) => return Ok(Transport::Tcp(stream)),
                    (Negotiate::AsConfigured, mode) => mode.requires_tls(),
                };
                if !request_tls(&mut stream).await? {
                    if require {
                        return Err(tls.not_offered().into());
                    }
                    tracing::debug!(server = %tls.target(), "server does not offer tls; continuing without");
                    return Ok(Transport::Tcp(stream));
                }
                let stream = tls.handshake(stream).await?;
                Ok(Transport::Tls(Box::new(stream)))
            }
            Host::Unix(dir) => {
                let path = dir.join(format!(".s.PGSQL.{}", config.port()));
                let stream = UnixStream::connect(&path).await.map_err(|source| {
                    ReplicationError::Connect {
                        address: path.display().to_string(),
                        source,
                    }
                })?;
                Ok(Transport::Unix(stream))
            }
        }
    }

    /// True when the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// The `tls-server-end-point` channel binding data of a TLS connection, when the server's
    /// certificate has a hash to bind with.
    pub(super) fn channel_binding(&self) -> Option<Vec<u8>> {
        let Transport::Tls(stream) = self else {
            return None;
        };
        let certificate = stream.get_ref().1.peer_certificates()?.first()?;
        crate::tls::channel_binding(certificate)
    }
}

/// Sends an `SSLRequest` and reads the one-byte answer: true for `S`. Exactly one byte is read,
/// so nothing the server sent in plaintext can be taken for part of the TLS session.
async fn request_tls(stream: &mut TcpStream) -> Result<bool, ReplicationError> {
    const DURING: &str = "requesting TLS";
    let mut out = BytesMut::new();
    frontend::ssl_request(&mut out);
    stream
        .write_all(&out)
        .await
        .map_err(ReplicationError::io(DURING))?;
    let mut answer = [0u8; 1];
    stream
        .read_exact(&mut answer)
        .await
        .map_err(ReplicationError::io(DURING))?;
    match answer[0] {
        b'S' => Ok(true),
        b'N' => Ok(false),
        // A server that predates SSLRequest answers with an ErrorResponse.
        other => Err(super::error::ProtocolError::UnexpectedResult {
            command: "SSLRequest",
            problem: format!("expected S or N, got byte 0x{other:02x}"),
        }
        .into()),
    }
}

impl From<TlsError> for ReplicationError {
    fn from(e: TlsError) -> Self {
        ReplicationError::Tls(Box::new(e))
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Other(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Other(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s).poll_flush(cx),
            Transport::Unix(s) => Pin::new(s).poll_flush(cx),
            Transport::Other(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Other(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Transport::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Transport::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Transport::Other(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Transport::Tcp(s) => s.is_write_vectored(),
            Transport::Tls(s) => s.is_write_vectored(),
            Transport::Unix(s) => s.is_write_vectored(),
            Transport::Other(s) => s.is_write_vectored(),
        }
    }
}
