//! PgBouncer's admin console: `SHOW DATABASES`, `PAUSE`, `RESUME`, `RELOAD`.
//!
//! The console is the virtual database `pgbouncer` on PgBouncer's listener; it speaks only the
//! simple query protocol and refuses startup options, so its session is opened with
//! [`client::connect_unpinned`] (TLS and the connect timeout as everywhere). Database names are
//! sent quoted as identifiers. `PAUSE` returns once every server connection of the database is
//! released (clients queue meanwhile and none fails); it is bounded here by a deadline, after
//! which a second session sends `RESUME` (cancelling the pause).

use std::time::Duration;

use blueshift_decoder::config::ConnectConfig;
use blueshift_decoder::ident::quote_ident;
use tokio_postgres::{Client, SimpleQueryMessage};

use super::error::CutoverError;
use crate::client::{self, SqlError};

/// One row of `SHOW DATABASES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseRow {
    /// The entry's name.
    pub name: String,
    /// Where it points.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// The server database.
    pub database: String,
    /// Whether it is paused.
    pub paused: bool,
}

/// An admin console session.
pub(crate) struct Admin {
    config: ConnectConfig,
    client: Client,
    connection: tokio::task::JoinHandle<()>,
}

impl Admin {
    /// Connects to the console of the PgBouncer `pooler` reaches (its database replaced by
    /// `pgbouncer`).
    pub(crate) async fn connect(pooler: &ConnectConfig) -> Result<Admin, CutoverError> {
        let mut config = pooler.clone();
        config.set_dbname("pgbouncer");
        let (client, connection) = client::connect_unpinned(&config, "blueshift cutover")
            .await
            .map_err(CutoverError::connect("PgBouncer's admin console"))?;
        Ok(Admin {
            config,
            client,
            connection,
        })
    }

    pub(crate) async fn close(self) {
        client::close(self.client, self.connection).await;
    }

    async fn command(&self, sql: &str) -> Result<Vec<SimpleQueryMessage>, CutoverError> {
        self.client
            .simple_query(sql)
            .await
            .map_err(|e| CutoverError::Query {
                side: "PgBouncer",
                what: sql.to_owned(),
                source: SqlError::from(e),
            })
    }

    /// `SHOW DATABASES`: the entry `name`, if PgBouncer has it.
    pub(crate) async fn database(&self, name: &str) -> Result<Option<DatabaseRow>, CutoverError> {
        for message in self.command("SHOW DATABASES").await? {
            let SimpleQueryMessage::Row(row) = message else {
                continue;
            };
            let column = |wanted: &str| {
                row.columns()
                    .iter()
                    .position(|c| c.name() == wanted)
                    .and_then(|i| row.get(i))
                    .map(str::to_owned)
            };
            if column("name").as_deref() != Some(name) {
                continue;
            }
            return Ok(Some(DatabaseRow {
                name: name.to_owned(),
                host: column("host").unwrap_or_default(),
                port: column("port").and_then(|p| p.parse().ok()).unwrap_or(0),
                database: column("database").unwrap_or_default(),
                paused: column("paused").is_some_and(|p| p != "0"),
            }));
        }
        Ok(None)
    }

    /// The backend pids of PgBouncer's server connections (`SHOW SERVERS`, `remote_pid`): its
    /// pool on the servers, which are not sessions that bypass it.
    pub(crate) async fn server_pids(&self) -> Result<Vec<i32>, CutoverError> {
        let mut pids = Vec::new();
        for message in self.command("SHOW SERVERS").await? {
            let SimpleQueryMessage::Row(row) = message else {
                continue;
            };
            let pid = row
                .columns()
                .iter()
                .position(|c| c.name() == "remote_pid")
                .and_then(|i| row.get(i))
                .and_then(|p| p.parse::<i32>().ok());
            pids.extend(pid.filter(|p| *p != 0));
        }
        Ok(pids)
    }

    /// `PAUSE name`, unless already paused; waits at most `within`, then cancels the pause with
    /// `RESUME` from a second session and fails.
    pub(crate) async fn pause(&self, name: &str, within: Duration) -> Result<(), CutoverError> {
        if self.database(name).await?.is_some_and(|d| d.paused) {
            return Ok(());
        }
        let sql = format!("PAUSE {}", quote_ident(name));
        match tokio::time::timeout(within, self.command(&sql)).await {
            Ok(result) => result.map(|_| ()),
            Err(_) => {
                let other = Admin::connect(&self.config).await?;
                let resumed = other.resume(name).await;
                other.close().await;
                resumed?;
                Err(CutoverError::PauseBudget {
                    step: "PAUSE returned (a transaction through PgBouncer did not finish)",
                    budget_ms: within.as_millis(),
                })
            }
        }
    }

    /// `RESUME name`, unless it is not paused.
    pub(crate) async fn resume(&self, name: &str) -> Result<(), CutoverError> {
        if self.database(name).await?.is_some_and(|d| !d.paused) {
            return Ok(());
        }
        self.command(&format!("RESUME {}", quote_ident(name)))
            .await
            .map(|_| ())
    }

    /// `RELOAD`: PgBouncer reads its configuration files again.
    pub(crate) async fn reload(&self) -> Result<(), CutoverError> {
        self.command("RELOAD").await.map(|_| ())
    }
}
