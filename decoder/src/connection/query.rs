//! The simple query protocol on a replication connection: one command string, text rows back.
//!
//! Implements <https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-SIMPLE-QUERY>.
//! Replication commands (`IDENTIFY_SYSTEM`, `CREATE_REPLICATION_SLOT`, `SHOW`,
//! `TIMELINE_HISTORY`, ...) and, on a `replication=database` connection, plain SQL go through
//! it. An `ErrorResponse` is held until `ReadyForQuery`, so the connection stays usable after a
//! server error.

use std::sync::Arc;

use postgres_protocol::message::frontend;

use super::error::{ProtocolError, ReplicationError};
use super::message::BackendMessage;
use super::{log_notice, ReplicationConnection};

const DURING_QUERY: &str = "running a command";

/// One row of a simple-query result, every value in text form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    columns: Arc<[String]>,
    values: Vec<Option<String>>,
}

impl Row {
    /// The column names.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The value of column `index`; `None` for SQL NULL or no such column.
    pub fn get(&self, index: usize) -> Option<&str> {
        self.values.get(index)?.as_deref()
    }

    /// The value of the column named `name`; `None` for SQL NULL or no such column.
    pub fn get_by_name(&self, name: &str) -> Option<&str> {
        let index = self.columns.iter().position(|c| c == name)?;
        self.get(index)
    }

    /// The number of columns.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True for a row without columns.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

impl ReplicationConnection {
    /// Runs `command` with the simple query protocol and returns the rows of all its results.
    ///
    /// `command` is sent as is: use it for fixed commands (`SHOW wal_sender_timeout`,
    /// `BEGIN ISOLATION LEVEL REPEATABLE READ`), never with text from outside. Results are held
    /// in memory, so it is not for large queries. A command that starts a COPY is refused with a
    /// protocol error (and the connection must then be dropped).
    pub async fn simple_query(&mut self, command: &str) -> Result<Vec<Row>, ReplicationError> {
        tracing::debug!(command, "running command");
        frontend::query(command, self.write_buf()).map_err(|_| {
            ReplicationError::InvalidOption {
                problem: "the command contains a NUL byte".to_owned(),
            }
        })?;
        self.flush(DURING_QUERY).await?;

        let mut rows = Vec::new();
        let mut columns: Option<Arc<[String]>> = None;
        let mut error = None;
        loop {
            match self.recv(DURING_QUERY).await? {
                BackendMessage::RowDescription { columns: names } => columns = Some(names.into()),
                BackendMessage::DataRow { values } => {
                    let Some(columns) = &columns else {
                        return Err(ProtocolError::Malformed {
                            message: "DataRow",
                            problem: "row without a preceding RowDescription",
                        }
                        .into());
                    };
                    if values.len() != columns.len() {
                        return Err(ProtocolError::Malformed {
                            message: "DataRow",
                            problem: "column count differs from RowDescription",
                        }
                        .into());
                    }
                    let values = values
                        .into_iter()
                        .map(|v| v.map(|v| String::from_utf8(v.to_vec())).transpose())
                        .collect::<Result<_, _>>()
                        .map_err(|_| ProtocolError::Malformed {
                            message: "DataRow",
                            problem: "value is not UTF-8",
                        })?;
                    rows.push(Row {
                        columns: Arc::clone(columns),
                        values,
                    });
                }
                BackendMessage::CommandComplete { .. } | BackendMessage::EmptyQueryResponse => {
                    columns = None
                }
                BackendMessage::ErrorResponse(e) => error = Some(e),
                BackendMessage::NoticeResponse(notice) => log_notice(&notice),
                BackendMessage::ParameterStatus { name, value } => {
                    self.session_mut().set_parameter(name, value)
                }
                BackendMessage::NotificationResponse => {}
                BackendMessage::ReadyForQuery { status } => {
                    self.set_transaction_status(status);
                    break;
                }
                other => return Err(other.unexpected(DURING_QUERY)),
            }
        }
        match error {
            Some(e) => Err(e.into()),
            None => Ok(rows),
        }
    }
}
