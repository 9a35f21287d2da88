//! The applier's session on our own protocol client: extended-protocol requests pipelined with
//! one `Sync` per window (see [`pipeline`](crate::pipeline) for how a window is sent and read).
//!
//! tokio-postgres ends every request with its own `Sync`, so green answers and flushes each
//! statement. Here a window — the requests of one green transaction (a live source transaction,
//! or a catch-up group), or [`ApplierOptions::pipeline_depth`] statements of a larger one — is
//! written as `Parse` (only the first time a statement is used on the session), `Bind`,
//! `Execute` per statement, and a single `Sync` at its end; green answers once.
//!
//! The connection is [`blueshift_decoder::connection::session::SqlSession`]: the replication
//! connection's transport, startup and authentication (TLS with libpq `sslmode` semantics,
//! SCRAM/MD5/cleartext, `connect_timeout`, the pinned `search_path`) started as a plain session.
//! [`pin`] gives it the settings [`session::pin`](crate::session::pin) gives a tokio-postgres
//! session, as parameters through the extended protocol.
//!
//! Prepared statements are named (`bs<n>`), one per target table and shape, cached in the
//! [`StatementCache`](crate::statement::StatementCache) as today. A statement's `Parse` travels
//! in the window of its first use; when the window fails before green answered it, green skipped
//! it, and the statement is parsed again on its next use ([`WireStatement`] keeps that state).
//! A statement evicted from the cache is closed on green in the next window.
//!
//! The catalog reads (green's tables, foreign keys for a TRUNCATE) stay on the applier's
//! tokio-postgres connection: they do not belong to the applied transaction.
//!
//! Fail closed: a window whose answers were not all read (a cancelled future, a broken socket)
//! leaves the session [`unusable`](Wire::is_closed); the engine replaces the applier, which
//! reads green's origin progress to know what landed.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use blueshift_decoder::config::ConnectConfig;
use blueshift_decoder::connection::session::{Reply, SqlSession};
use postgres_protocol::message::frontend;

use crate::client::SqlError;
use crate::error::ApplyError;
use crate::session::ApplierOptions;

/// Green has not seen the statement (or skipped its `Parse` after an error).
pub(crate) const UNPARSED: u8 = 0;
/// Its `Parse` is in a window not read yet.
pub(crate) const PARSING: u8 = 1;
/// Green answered its `Parse`: prepared on the session.
pub(crate) const PARSED: u8 = 2;

/// A named prepared statement of the wire session.
#[derive(Debug)]
pub(crate) struct WireStatement {
    pub(crate) name: String,
    pub(crate) sql: String,
    /// [`UNPARSED`], [`PARSING`] or [`PARSED`].
    pub(crate) state: AtomicU8,
}

impl WireStatement {
    pub(crate) fn state(&self) -> u8 {
        self.state.load(Ordering::Relaxed)
    }

    pub(crate) fn set_state(&self, state: u8) {
        self.state.store(state, Ordering::Relaxed);
    }
}

/// The applier's pipelined session on green.
#[derive(Debug)]
pub(crate) struct Wire {
    pub(crate) session: SqlSession,
    next_name: u64,
    /// A window was sent and not every answer read: the session's state is unknown.
    pub(crate) outstanding: bool,
    /// Statements evicted from the cache, to close on green in the next window.
    pub(crate) to_close: Vec<String>,
    /// The session's `BEGIN`, prepared once.
    pub(crate) begin: Arc<WireStatement>,
}

impl Wire {
    /// Connects (see the module docs) and pins the session as
    /// [`session::pin`](crate::session::pin) does.
    pub(crate) async fn connect(
        green: &ConnectConfig,
        options: &ApplierOptions,
    ) -> Result<Wire, ApplyError> {
        let mut config = green.clone();
        if config.application_name().is_none() {
            config.set_application_name(options.application_name.clone());
        }
        let session = SqlSession::connect(&config).await.map_err(|e| {
            ApplyError::Connect(crate::client::ClientError {
                target: green.to_string(),
                source: SqlError::from(e),
            })
        })?;
        let mut wire = Wire {
            session,
            next_name: 0,
            outstanding: false,
            to_close: Vec::new(),
            begin: Arc::new(WireStatement {
                name: "bs_begin".to_owned(),
                sql: "BEGIN".to_owned(),
                state: AtomicU8::new(UNPARSED),
            }),
        };
        for (setting, value) in crate::session::settings(options) {
            wire.query(
                "SELECT pg_catalog.set_config($1, $2, false)",
                &[setting, value],
            )
            .await
            .map_err(|source| ApplyError::Session { setting, source })?;
        }
        Ok(wire)
    }

    /// True when the session cannot be used any more.
    pub(crate) fn is_closed(&self) -> bool {
        self.outstanding || self.session.is_broken()
    }

    /// A new statement of `sql`, not yet parsed.
    pub(crate) fn statement(&mut self, sql: String) -> Arc<WireStatement> {
        self.next_name += 1;
        Arc::new(WireStatement {
            name: format!("bs{}", self.next_name),
            sql,
            state: AtomicU8::new(UNPARSED),
        })
    }

    /// Runs `sql` with text `params` as one window of its own (unnamed statement) and returns
    /// the first column of each row, as text.
    pub(crate) async fn query(
        &mut self,
        sql: &str,
        params: &[&str],
    ) -> Result<Vec<Option<String>>, SqlError> {
        if self.is_closed() {
            return Err(closed());
        }
        let buf = self.session.buffer();
        frontend::parse("", sql, std::iter::empty(), buf).map_err(|_| nul("a statement"))?;
        frontend::bind(
            "",
            "",
            std::iter::empty(),
            params.iter(),
            |p, out| {
                out.extend_from_slice(p.as_bytes());
                Ok(postgres_protocol::IsNull::No)
            },
            std::iter::empty(),
            buf,
        )
        .map_err(|_| nul("a parameter"))?;
        frontend::execute("", 0, buf).map_err(|_| nul("a portal"))?;
        frontend::sync(buf);
        self.outstanding = true;
        self.session.send().await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match self.session.recv().await? {
                Reply::DataRow(values) => rows.push(
                    values
                        .into_iter()
                        .next()
                        .flatten()
                        .map(|v| String::from_utf8_lossy(&v).into_owned()),
                ),
                Reply::Error(e) => error = Some(e),
                Reply::ReadyForQuery(_) => break,
                _ => {}
            }
        }
        self.outstanding = false;
        match error {
            Some(e) => Err(SqlError::from(blueshift_decoder::ReplicationError::Server(
                e,
            ))),
            None => Ok(rows),
        }
    }

    /// `ROLLBACK`, between windows.
    pub(crate) async fn rollback(&mut self) -> Result<(), SqlError> {
        self.batch("ROLLBACK").await
    }

    /// Runs `sql` (statements of blueshift's own, no value from outside) in the simple query
    /// protocol, between windows.
    pub(crate) async fn batch(&mut self, sql: &str) -> Result<(), SqlError> {
        if self.is_closed() {
            return Err(closed());
        }
        self.session.simple_query(sql).await?;
        Ok(())
    }

    /// Closes the connection politely.
    pub(crate) async fn close(self) {
        if let Err(e) = self.session.close().await {
            tracing::debug!(error = %e, "the applier's wire session did not close cleanly");
        }
    }
}

/// The error for a session that must not be used any more.
pub(crate) fn closed() -> SqlError {
    SqlError::Wire(Box::new(blueshift_decoder::ReplicationError::Closed {
        during: "reusing an applier session whose last window was not read to its end",
    }))
}

fn nul(what: &str) -> SqlError {
    SqlError::Wire(Box::new(
        blueshift_decoder::ReplicationError::InvalidOption {
            problem: format!("{what} contains a NUL byte"),
        },
    ))
}
