//! TLS for SQL sessions: a `tokio_postgres` [`MakeTlsConnect`] over the decoder's rustls
//! [`TlsConnector`], so SQL sessions verify certificates exactly as the replication connection
//! does, and expose `tls-server-end-point` channel binding for `SCRAM-SHA-256-PLUS`.
//!
//! tokio-postgres sends the `SSLRequest` and reads the answer; the handshake and the certificate
//! check are [`TlsConnector::handshake`]'s.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use blueshift_decoder::tls::{channel_binding, TlsConnector, TlsError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

/// Makes a [`RustlsConnect`] per connection attempt.
#[derive(Debug, Clone)]
pub(crate) struct MakeRustls {
    /// `None` when the settings never use TLS (then tokio-postgres is told `sslmode=disable`
    /// and never asks for a handshake).
    connector: Option<TlsConnector>,
}

impl MakeRustls {
    pub(crate) fn new(connector: Option<TlsConnector>) -> MakeRustls {
        MakeRustls { connector }
    }
}

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = TlsError;

    fn make_tls_connect(&mut self, _domain: &str) -> Result<RustlsConnect, TlsError> {
        // The connector already holds the host from the settings: the name checked is the one
        // the user wrote, as libpq checks `host`, not an address it resolved to.
        Ok(RustlsConnect {
            connector: self.connector.clone(),
        })
    }
}

/// One handshake.
#[derive(Debug)]
pub(crate) struct RustlsConnect {
    connector: Option<TlsConnector>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = TlsError;
    type Future = Pin<Box<dyn Future<Output = Result<RustlsStream<S>, TlsError>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let connector = self.connector.ok_or_else(|| TlsError::Handshake {
                host: "(no TLS settings)".to_owned(),
                source: io::Error::other("TLS was requested on a connection set up without TLS"),
            })?;
            let stream = connector.handshake(stream).await?;
            Ok(RustlsStream(Box::new(stream)))
        })
    }
}

/// A TLS session under a SQL connection.
#[derive(Debug)]
pub(crate) struct RustlsStream<S>(Box<tokio_rustls::client::TlsStream<S>>);

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        let data = self
            .0
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|cert| channel_binding(cert));
        match data {
            Some(data) => ChannelBinding::tls_server_end_point(data),
            None => ChannelBinding::none(),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}
