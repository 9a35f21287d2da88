//! The `GET /metrics` endpoint, with `/healthz` (200 while the process runs) and `/readyz` (200
//! while sync streams with both sides connected and the lag is under the threshold, 503
//! otherwise, the reason in the body): a minimal HTTP/1.1 responder on a
//! `tokio::net::TcpListener`.
//!
//! Why not `hyper`/`axum`: the endpoint answers one kind of request from one kind of client (a
//! Prometheus scraper, `curl`), one request per connection, with a body rendered in memory.
//! That is about a hundred lines here, against a web stack (hyper, hyper-util, http,
//! http-body, their features) in the build of every blueshift binary. What a server must still
//! get right is here: the request head is read with a size cap (8 KiB) and a deadline (5 s),
//! concurrent connections are capped, every response carries `Content-Length` and
//! `Connection: close`, and anything but `GET`/`HEAD` of `/metrics` gets a proper 404, 405 or
//! 400, and the connection is closed gracefully (the client's unread input is drained first
//! so that an error response is not lost to a reset). Connections live in a `JoinSet` owned by [`MetricsServer::serve`]; shutdown stops
//! accepting and aborts what is still open.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::render::CONTENT_TYPE;
use super::Metrics;

/// The largest request head read; a longer one is answered 431.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request head, and to take the response.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 64;
/// How long to wait for the client to close after the response.
const LINGER: Duration = Duration::from_secs(1);
/// The most input read and dropped after the response.
const MAX_DRAINED: usize = 64 * 1024;
/// Pause after a failed `accept` (out of file descriptors, …) before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The metrics endpoint could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The address could not be bound.
    #[error("cannot serve metrics on {addr} — is another process listening there? choose another --metrics-addr")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// A bound metrics endpoint, not serving yet. Binding first lets a caller report a taken port
/// before anything else starts, and learn the port chosen for `:0`.
#[derive(Debug)]
pub struct MetricsServer {
    listener: TcpListener,
    addr: SocketAddr,
    ready_max_lag: Duration,
}

/// The lag above which `/readyz` says not ready, unless set.
const DEFAULT_READY_MAX_LAG: Duration = Duration::from_secs(60);

impl MetricsServer {
    /// Listens on `addr` (port 0 picks a free port; see [`MetricsServer::local_addr`]).
    pub async fn bind(addr: SocketAddr) -> Result<MetricsServer, MetricsError> {
        let bind_error = |source| MetricsError::Bind { addr, source };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        Ok(MetricsServer {
            listener,
            addr,
            ready_max_lag: DEFAULT_READY_MAX_LAG,
        })
    }

    /// `/readyz` answers 503 while the lag is above `max_lag` (default 60 s).
    pub fn ready_max_lag(mut self, max_lag: Duration) -> MetricsServer {
        self.ready_max_lag = max_lag;
        self
    }

    /// The address actually listened on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `metrics` on `GET /metrics` until `shutdown` completes; then stops accepting and
    /// aborts the connections still open. Failures of single connections are logged at debug
    /// level and never end the server.
    pub async fn serve(self, metrics: Metrics, shutdown: impl Future<Output = ()>) {
        info!(addr = %self.addr, "serving metrics on /metrics (and /healthz, /readyz)");
        let max_lag = self.ready_max_lag;
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = self.listener.accept(), if connections.len() < MAX_CONNECTIONS => {
                    match accepted {
                        Ok((stream, peer)) => {
                            let metrics = metrics.clone();
                            connections.spawn(async move {
                                if let Err(e) = respond(stream, &metrics, max_lag).await {
                                    debug!(peer = %peer, error = %e, "metrics connection failed");
                                }
                            });
                        }
                        Err(e) => {
                            warn!(addr = %self.addr, error = %e, "cannot accept a metrics connection");
                            tokio::time::sleep(ACCEPT_BACKOFF).await;
                        }
                    }
                }
            }
        }
        connections.shutdown().await;
        debug!(addr = %self.addr, "metrics endpoint stopped");
    }
}

/// Reads one request and writes one response.
async fn respond(mut stream: TcpStream, metrics: &Metrics, max_lag: Duration) -> io::Result<()> {
    let head = tokio::time::timeout(IO_TIMEOUT, read_head(&mut stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no request head in time"))??;
    let response = match head {
        Head::Complete(head) => answer(&head, metrics, max_lag),
        Head::TooLarge => Response::text(
            431,
            "Request Header Fields Too Large",
            "request head too large\n",
        ),
        Head::Closed => return Ok(()),
    };
    tokio::time::timeout(IO_TIMEOUT, response.write_to(&mut stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "response not taken in time"))??;
    stream.shutdown().await?;
    // Lingering close: read what the client still sends (the rest of an oversized head) until
    // it closes, so that closing with unread input does not reset the connection and destroy
    // the response before the client has read it.
    let _ = tokio::time::timeout(LINGER, drain(&mut stream)).await;
    Ok(())
}

/// Reads and drops input until end of stream or [`MAX_DRAINED`] bytes.
async fn drain(stream: &mut TcpStream) -> io::Result<()> {
    let mut chunk = [0u8; 4096];
    let mut total = 0;
    while total < MAX_DRAINED {
        match stream.read(&mut chunk).await? {
            0 => break,
            n => total += n,
        }
    }
    Ok(())
}

/// What came in before the blank line ending a request head.
enum Head {
    Complete(Vec<u8>),
    TooLarge,
    /// The client closed the connection before a whole head.
    Closed,
}

async fn read_head(stream: &mut TcpStream) -> io::Result<Head> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Head::Closed);
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if let Some(end) = find(&buf, b"\r\n\r\n").or_else(|| find(&buf, b"\n\n")) {
            buf.truncate(end);
            return Ok(Head::Complete(buf));
        }
        if buf.len() > MAX_REQUEST_HEAD {
            return Ok(Head::TooLarge);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The response to a complete request head.
fn answer(head: &[u8], metrics: &Metrics, max_lag: Duration) -> Response {
    let Ok(head) = std::str::from_utf8(head) else {
        return Response::text(400, "Bad Request", "request head is not UTF-8\n");
    };
    let request_line = head.lines().next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Response::text(400, "Bad Request", "malformed request line\n");
    };
    if !version.starts_with("HTTP/1.") {
        return Response::text(
            505,
            "HTTP Version Not Supported",
            "only HTTP/1.x is served\n",
        );
    }
    let path = target.split('?').next().unwrap_or_default();
    let mut response = match path {
        "/metrics" => Response {
            status: 200,
            reason: "OK",
            content_type: CONTENT_TYPE,
            body: metrics.render().into_bytes(),
            head_only: false,
        },
        "/healthz" => Response::text(200, "OK", "ok\n"),
        "/readyz" => readiness(metrics, max_lag),
        _ => {
            return Response::text(
                404,
                "Not Found",
                "not found; the metrics are at /metrics, health at /healthz and /readyz\n",
            )
        }
    };
    match method {
        "GET" => response,
        "HEAD" => {
            response.head_only = true;
            response
        }
        _ => Response::text(405, "Method Not Allowed", "only GET and HEAD are served\n"),
    }
}

/// `/readyz`: 200 when sync streams with both sides connected and the lag is at most
/// `max_lag`; 503 with the reason otherwise.
fn readiness(metrics: &Metrics, max_lag: Duration) -> Response {
    if metrics.ready(max_lag) {
        return Response::text(200, "OK", "ready\n");
    }
    let s = metrics.snapshot();
    let reason = if !s.up {
        "not ready: sync is stopping\n".to_owned()
    } else if !s.connected[0] || !s.connected[1] {
        let down: Vec<&str> = super::SIDES
            .iter()
            .zip(s.connected)
            .filter(|(_, c)| !c)
            .map(|(side, _)| *side)
            .collect();
        format!(
            "not ready: not streaming ({} not connected)\n",
            down.join(" and ")
        )
    } else {
        format!(
            "not ready: green is {:.1} s behind blue (more than {} s)\n",
            s.lag_seconds,
            max_lag.as_secs_f64()
        )
    };
    Response::text(503, "Service Unavailable", &reason)
}

/// One HTTP response, always closing the connection.
struct Response {
    status: u16,
    reason: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
    /// Send the head only (the answer to `HEAD`), with the body's length.
    head_only: bool,
}

impl Response {
    fn text(status: u16, reason: &'static str, body: &str) -> Response {
        Response {
            status,
            reason,
            content_type: "text/plain; charset=utf-8",
            body: body.as_bytes().to_vec(),
            head_only: false,
        }
    }

    async fn write_to(&self, stream: &mut TcpStream) -> io::Result<()> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            self.reason,
            self.content_type,
            self.body.len()
        );
        if self.status == 405 {
            head.push_str("Allow: GET, HEAD\r\n");
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await?;
        if !self.head_only {
            stream.write_all(&self.body).await?;
        }
        stream.flush().await
    }
}
