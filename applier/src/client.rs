//! SQL connections: a `tokio_postgres::Client` built from blueshift's connection settings, its
//! connection task, and the server's errors in a form fit for messages (SQLSTATE, message,
//! detail, hint, position). Appliers use it for green; the engine's stages that run ordinary SQL
//! (migrations, schema comparison) use it through `blueshift_engine::client`.
//!
//! The replication connection is the decoder's; this module never speaks the replication
//! protocol.
//!
//! Every session is opened here, so every session gets the same two protections:
//!
//! - **TLS** as the settings' `sslmode` says (`tls`, over the decoder's rustls connector):
//!   `prefer` uses TLS whenever the server offers it, `require` and the `verify-*` modes never
//!   fall back to plaintext (a reconnect calls [`connect`] again with the same settings), `allow`
//!   retries over TLS when the server refuses a plaintext session, and `channel_binding` is
//!   passed through for `SCRAM-SHA-256-PLUS`. Unix sockets never use TLS, as in libpq.
//! - **A pinned `search_path`** ([`connect`]): `pg_catalog, pg_temp`, sent at startup as
//!   `-c search_path=…` after the user's own `options`, so it overrides them and the role's and
//!   database's settings. With it goes `-c default_transaction_read_only=off`: the cutover
//!   fences a database with `ALTER DATABASE … SET default_transaction_read_only = on`, which
//!   stops every session but blueshift's own. [`connect_unpinned`] is for the two sessions that must not have it:
//!   `migrate`'s (the user's scripts run with the user's `search_path`; blueshift's own
//!   statements there pin it per statement and qualify every name) and PgBouncer's admin console
//!   (which refuses startup options and speaks only the simple query protocol).

mod tls;

use std::fmt;
use std::time::Duration;

use blueshift_decoder::config::{
    ChannelBinding, ConnectConfig, Host, ServerState, SslMode as Mode,
};
use blueshift_decoder::connection::PINNED_SEARCH_PATH;
use blueshift_decoder::tls::{TlsConnector, TlsError};
use tokio::task::JoinHandle;
use tokio_postgres::config::SslMode;
use tokio_postgres::error::ErrorPosition;
use tokio_postgres::Client;
use tracing::{debug, warn};

use crate::error::ErrorClass;

/// How long to wait for a connection when the settings say nothing.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection that could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to {target} — check that the server is up and the connection settings are right")]
pub struct ClientError {
    /// Where we tried to connect, without the password.
    pub target: String,
    /// Why.
    #[source]
    pub source: SqlError,
}

/// An error of a SQL statement: either the server's own error report or a failure of the client
/// or the connection.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The server answered with an error.
    #[error(transparent)]
    Server(Box<ServerError>),
    /// The client or the connection failed (closed connection, I/O, protocol, a TLS handshake).
    #[error(transparent)]
    Client(tokio_postgres::Error),
    /// Several hosts were listed, and none that connected is in the state
    /// `target_session_attrs` asks for.
    #[error("no server in the state target_session_attrs={target_session_attrs} asks for: {found} — list a host in that state, or change target_session_attrs")]
    NoSuitableHost {
        /// The setting.
        target_session_attrs: &'static str,
        /// What each server that connected is.
        found: String,
    },
    /// Connecting (TCP, TLS and authentication together) took longer than `connect_timeout`.
    #[error("timed out after {} s while connecting (connect_timeout) — is the server up and answering at this address?", after.as_secs_f64())]
    Timeout {
        /// The limit that passed.
        after: Duration,
    },
    /// TLS could not be set up before connecting (a certificate file is missing or unusable).
    #[error(transparent)]
    Tls(Box<TlsError>),
    /// Our own protocol client (the applier's pipelined session, see
    /// [`wire`](crate::wire)) or its connection failed: I/O, a closed connection, TLS,
    /// authentication, a protocol error. A server's error report is [`SqlError::Server`].
    #[error(transparent)]
    Wire(Box<blueshift_decoder::ReplicationError>),
}

impl From<blueshift_decoder::ReplicationError> for SqlError {
    fn from(e: blueshift_decoder::ReplicationError) -> Self {
        match e {
            blueshift_decoder::ReplicationError::Server(server) => {
                SqlError::Server(Box::new(ServerError::from(*server)))
            }
            other => SqlError::Wire(Box::new(other)),
        }
    }
}

impl From<blueshift_decoder::ServerError> for ServerError {
    fn from(e: blueshift_decoder::ServerError) -> Self {
        ServerError {
            severity: e.severity,
            sqlstate: e.code,
            message: e.message,
            detail: e.detail,
            hint: e.hint,
            position: e.position,
            context: e.where_,
            column: e.column,
        }
    }
}

impl ClientError {
    /// Whether retrying can help (see [`class_of_sqlstate`](crate::error::class_of_sqlstate)).
    pub fn class(&self) -> ErrorClass {
        self.source.class()
    }

    /// True when [`class`](Self::class) is transient.
    pub fn is_transient(&self) -> bool {
        self.class() == ErrorClass::Transient
    }
}

impl SqlError {
    /// Whether retrying can help: the server's SQLSTATE decides (see
    /// [`class_of_sqlstate`](crate::error::class_of_sqlstate)); a failure of the client or the
    /// connection is transient.
    pub fn class(&self) -> ErrorClass {
        crate::error::class_of_sql_error(self)
    }

    /// True when [`class`](Self::class) is transient.
    pub fn is_transient(&self) -> bool {
        self.class() == ErrorClass::Transient
    }

    /// The server's SQLSTATE, if the server reported the error.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            SqlError::Server(e) => Some(&e.sqlstate),
            SqlError::Client(_)
            | SqlError::Tls(_)
            | SqlError::Wire(_)
            | SqlError::Timeout { .. }
            | SqlError::NoSuitableHost { .. } => None,
        }
    }

    /// The server's report, if the server reported the error.
    pub fn server(&self) -> Option<&ServerError> {
        match self {
            SqlError::Server(e) => Some(e),
            SqlError::Client(_)
            | SqlError::Tls(_)
            | SqlError::Wire(_)
            | SqlError::Timeout { .. }
            | SqlError::NoSuitableHost { .. } => None,
        }
    }
}

impl From<tokio_postgres::Error> for SqlError {
    fn from(e: tokio_postgres::Error) -> Self {
        match ServerError::from_error(&e) {
            Some(server) => SqlError::Server(Box::new(server)),
            None => SqlError::Client(e),
        }
    }
}

/// The server's error report (an `ErrorResponse`), kept whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ServerError {
    /// `ERROR`, `FATAL`, …
    pub severity: String,
    /// The five-character SQLSTATE.
    pub sqlstate: String,
    /// The primary message.
    pub message: String,
    /// The optional detail.
    pub detail: Option<String>,
    /// The optional hint.
    pub hint: Option<String>,
    /// 1-based character offset of the error in the statement sent, when the server gives one.
    pub position: Option<u32>,
    /// Where the error happened inside a function or internal query, when it did (`CONTEXT`).
    pub context: Option<String>,
    /// The column the error is about, when the server says (a NOT NULL violation does).
    pub column: Option<String>,
}

impl ServerError {
    /// The server's report inside a client error, if there is one.
    pub fn from_error(e: &tokio_postgres::Error) -> Option<ServerError> {
        let db = e.as_db_error()?;
        Some(ServerError {
            severity: db.severity().to_owned(),
            sqlstate: db.code().code().to_owned(),
            message: db.message().to_owned(),
            detail: db.detail().map(str::to_owned),
            hint: db.hint().map(str::to_owned),
            position: match db.position() {
                Some(ErrorPosition::Original(p)) => Some(*p),
                Some(ErrorPosition::Internal { .. }) | None => None,
            },
            context: db.where_().map(str::to_owned),
            column: db.column().map(str::to_owned),
        })
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.severity, self.sqlstate, self.message)?;
        if let Some(detail) = &self.detail {
            write!(f, "; detail: {detail}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "; hint: {hint}")?;
        }
        if let Some(context) = &self.context {
            write!(f, "; context: {}", context.replace('\n', " / "))?;
        }
        Ok(())
    }
}

/// Opens a SQL connection with `search_path` pinned to `pg_catalog, pg_temp`, and spawns its
/// connection task. `application_name` is used unless the settings name one. The task ends when
/// the client is dropped; its handle is returned so that the owner can await it.
///
/// `connect_timeout` (10 s when the settings give none) bounds the whole connect: the TCP
/// connect, TLS and authentication — a server that accepts the connection and never answers
/// fails in that time too. Cancellation-safe: dropping the future drops the half-open socket.
///
/// With several hosts (`host=a,b`), they are tried in order, each within the timeout, until one
/// connects — with `target_session_attrs`, until one in the state asked for connects.
pub async fn connect(
    config: &ConnectConfig,
    application_name: &str,
) -> Result<(Client, JoinHandle<()>), ClientError> {
    connect_with(config, application_name, true).await
}

/// Opens a SQL connection without the pinned `search_path` (and without any startup option
/// blueshift would add): for `migrate`, whose scripts run with the user's `search_path`, and for
/// PgBouncer's admin console. Its caller qualifies every name it sends. TLS, hosts and the
/// timeout are as in [`connect`].
pub async fn connect_unpinned(
    config: &ConnectConfig,
    application_name: &str,
) -> Result<(Client, JoinHandle<()>), ClientError> {
    connect_with(config, application_name, false).await
}

async fn connect_with(
    config: &ConnectConfig,
    application_name: &str,
    pin: bool,
) -> Result<(Client, JoinHandle<()>), ClientError> {
    let attrs = config.target_session_attrs();
    let candidates = config.candidates();
    let mut last_error = None;
    let mut unsuitable = Vec::new();
    for &pass in attrs.passes() {
        for candidate in &candidates {
            let (client, connection) = match connect_one(candidate, application_name, pin).await {
                Ok(connected) => connected,
                Err(e) => {
                    if candidates.len() > 1 {
                        debug!(target = %candidate, error = %e, "could not connect; trying the next host");
                    }
                    last_error = Some(e);
                    continue;
                }
            };
            if !attrs.needs_check(pass) {
                return Ok((client, connection));
            }
            let fail = |source| ClientError {
                target: candidate.to_string(),
                source,
            };
            let row = client
                .query_one(ServerState::QUERY, &[])
                .await
                .map_err(|e| fail(SqlError::from(e)))?;
            let state = ServerState::from_row(row.try_get(0).ok(), row.try_get(1).ok());
            match state {
                Some(state) if attrs.accepts(pass, state) => return Ok((client, connection)),
                Some(state) => {
                    unsuitable.push(format!(
                        "{}:{} is {state}",
                        candidate.host(),
                        candidate.port()
                    ));
                }
                None => unsuitable.push(format!(
                    "{}:{} is unknown",
                    candidate.host(),
                    candidate.port()
                )),
            }
            close(client, connection).await;
        }
    }
    match last_error {
        Some(e) if unsuitable.is_empty() => Err(e),
        _ => Err(ClientError {
            target: config.to_string(),
            source: SqlError::NoSuitableHost {
                target_session_attrs: attrs.as_str(),
                found: unsuitable.join(", "),
            },
        }),
    }
}

/// Connects to the one host of `config`, within its connect timeout.
async fn connect_one(
    config: &ConnectConfig,
    application_name: &str,
    pin: bool,
) -> Result<(Client, JoinHandle<()>), ClientError> {
    let limit = config.connect_timeout().unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    match tokio::time::timeout(limit, open(config, application_name, pin)).await {
        Ok(connected) => connected,
        Err(_) => Err(ClientError {
            target: config.to_string(),
            source: SqlError::Timeout { after: limit },
        }),
    }
}

async fn open(
    config: &ConnectConfig,
    application_name: &str,
    pin: bool,
) -> Result<(Client, JoinHandle<()>), ClientError> {
    let target = config.to_string();
    let fail = |source: SqlError| ClientError {
        target: target.clone(),
        source,
    };
    let connector = TlsConnector::new(config).map_err(|e| fail(SqlError::Tls(Box::new(e))))?;
    let make_tls = tls::MakeRustls::new(connector.clone());
    let mut tokio = tokio_config(config, application_name, pin);
    let ssl_mode = match (&connector, config.sslmode()) {
        (None, _) | (Some(_), Mode::Disable | Mode::Allow) => SslMode::Disable,
        (Some(_), Mode::Prefer) => SslMode::Prefer,
        (Some(_), Mode::Require | Mode::VerifyCa | Mode::VerifyFull) => SslMode::Require,
    };
    tokio.ssl_mode(ssl_mode);
    debug!(target = %target, application_name, sslmode = %config.sslmode(), "connecting");
    let connected = match tokio.connect(make_tls.clone()).await {
        // libpq's `allow`: the server refused a plaintext session; try again over TLS.
        Err(e)
            if connector.is_some()
                && config.sslmode() == Mode::Allow
                && e.as_db_error().is_some() =>
        {
            debug!(target = %target, error = %e, "plaintext session refused; retrying with tls");
            tokio.ssl_mode(SslMode::Require);
            tokio.connect(make_tls).await
        }
        other => other,
    };
    let (client, connection) = connected.map_err(|e| fail(SqlError::from(e)))?;
    let handle = tokio::spawn(async move {
        if let Err(e) = connection.await {
            warn!(target = %target, error = %e, "sql connection ended with an error");
        }
    });
    Ok((client, handle))
}

/// How long closing a connection may take before its task is aborted.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Ends a connection politely: drops the client, so that its connection task sends
/// `Terminate` and closes the socket, and waits for that task (at most five seconds). Aborting
/// the task instead drops the socket mid-conversation, which the server logs as an error.
pub async fn close(client: Client, connection: JoinHandle<()>) {
    drop(client);
    finish(connection).await;
}

/// [`close`] for a client shared with tasks that are stopping: the connection ends once the
/// last of them lets go.
pub async fn close_shared(client: std::sync::Arc<Client>, connection: JoinHandle<()>) {
    drop(client);
    finish(connection).await;
}

/// Waits for the connection task of a client that is gone (at most five seconds, then aborts
/// it).
pub async fn finish(mut connection: JoinHandle<()>) {
    if tokio::time::timeout(CLOSE_TIMEOUT, &mut connection)
        .await
        .is_err()
    {
        connection.abort();
    }
}

/// blueshift's connection settings as a `tokio_postgres::Config`, with `search_path` pinned
/// when `pin` is set. TLS (`ssl_mode` and the connector) is [`connect`]'s business.
fn tokio_config(
    config: &ConnectConfig,
    application_name: &str,
    pin: bool,
) -> tokio_postgres::Config {
    let mut tokio = tokio_postgres::Config::new();
    match config.host() {
        Host::Tcp(name) => tokio.host(name),
        Host::Unix(dir) => tokio.host_path(dir),
    };
    tokio
        .port(config.port())
        .user(config.user())
        .dbname(config.dbname())
        .application_name(config.application_name().unwrap_or(application_name))
        .ssl_mode(SslMode::Disable)
        .channel_binding(match config.tls().channel_binding() {
            ChannelBinding::Disable => tokio_postgres::config::ChannelBinding::Disable,
            ChannelBinding::Prefer => tokio_postgres::config::ChannelBinding::Prefer,
            ChannelBinding::Require => tokio_postgres::config::ChannelBinding::Require,
        })
        .connect_timeout(config.connect_timeout().unwrap_or(DEFAULT_CONNECT_TIMEOUT));
    if let Some(password) = config.password_for_auth() {
        tokio.password(password.expose());
    }
    let mut options = config.options().unwrap_or_default().to_owned();
    if pin {
        // Last, so it wins over a `-c search_path` of the user's.
        if !options.is_empty() {
            options.push(' ');
        }
        options.push_str("-c search_path=");
        options.push_str(&PINNED_SEARCH_PATH.replace(' ', "\\ "));
        // blueshift's own sessions write on a database the cutover fenced read-only
        // (`ALTER DATABASE … SET default_transaction_read_only = on` stops everyone else).
        options.push_str(" -c default_transaction_read_only=off");
    }
    if !options.is_empty() {
        tokio.options(&options);
    }
    tokio
}

/// The server's `server_version_num` (e.g. 150004 for 15.4).
pub async fn server_version_num(
    client: &impl tokio_postgres::GenericClient,
) -> Result<i32, tokio_postgres::Error> {
    client
        .query_one(
            "SELECT pg_catalog.current_setting('server_version_num')::pg_catalog.int4",
            &[],
        )
        .await?
        .try_get(0)
}

/// Whether relation `name` (schema-qualified, e.g. `blueshift.verify_run`) exists: blueshift's
/// own tables are created on first use, so readers look before they read.
pub async fn relation_exists(
    client: &impl tokio_postgres::GenericClient,
    name: &str,
) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .query_one("SELECT pg_catalog.to_regclass($1) IS NOT NULL", &[&name])
        .await?
        .get(0))
}
