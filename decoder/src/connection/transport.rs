//! The byte stream under a replication connection: TCP, a Unix socket, or any boxed stream
//! (the slot for TLS, which wraps one of the first two).
//!
//! Socket addressing follows
//! <https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-CONNECT-HOST>: a host
//! starting with `/` is the directory of the socket `.s.PGSQL.<port>`.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use super::error::ReplicationError;
use crate::config::{ConnectConfig, Host};

/// Any bidirectional byte stream a connection can run over.
pub trait Socket: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Socket for T {}

/// The stream a replication connection runs over.
pub enum Transport {
    /// Plain TCP.
    Tcp(TcpStream),
    /// A Unix-domain socket.
    Unix(UnixStream),
    /// Anything else, e.g. TLS over one of the above.
    Other(Box<dyn Socket>),
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Tcp(s) => f.debug_tuple("Tcp").field(&s.peer_addr().ok()).finish(),
            Transport::Unix(s) => f.debug_tuple("Unix").field(&s.peer_addr().ok()).finish(),
            Transport::Other(_) => f.write_str("Other(..)"),
        }
    }
}

impl Transport {
    /// Opens the socket `config` names (no timeout here; the caller bounds the whole connect).
    pub async fn connect(config: &ConnectConfig) -> Result<Transport, ReplicationError> {
        match config.host() {
            Host::Tcp(host) => {
                let stream = TcpStream::connect((host.as_str(), config.port()))
                    .await
                    .map_err(|source| ReplicationError::Connect {
                        address: format!("{}:{}", config.host(), config.port()),
                        source,
                    })?;
                // Standby status updates are tiny and must not wait for Nagle.
                stream
                    .set_nodelay(true)
                    .map_err(ReplicationError::io("setting TCP_NODELAY"))?;
                Ok(Transport::Tcp(stream))
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
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_read(cx, buf),
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
            Transport::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Other(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_flush(cx),
            Transport::Unix(s) => Pin::new(s).poll_flush(cx),
            Transport::Other(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Tcp(s) => Pin::new(s).poll_shutdown(cx),
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
            Transport::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Transport::Other(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Transport::Tcp(s) => s.is_write_vectored(),
            Transport::Unix(s) => s.is_write_vectored(),
            Transport::Other(s) => s.is_write_vectored(),
        }
    }
}
