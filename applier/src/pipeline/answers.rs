//! The wire window's messages and answers: a `Bind`'s parameters, and what each answer (a
//! row count, a command tag, green's error) means for the statement that asked — the same
//! errors as on tokio-postgres ([`ApplyError::RowNotFound`], a value error naming its column
//! and row through [`diagnose`], ...).

use std::sync::Arc;

use blueshift_decoder::connection::session::Reply;
use blueshift_decoder::pgoutput::ColumnValue;
use bytes::BytesMut;
use postgres_protocol::message::frontend;
use tokio_postgres::types::{ToSql, Type};

use super::{Answer, Execute, OnError};
use crate::client::SqlError;
use crate::diagnose;
use crate::error::{ApplyError, Operation};
use crate::statement::{self, Shape};
use crate::target::TargetTable;
use crate::value::Value;
use crate::wire::Wire;

/// The parameters of a `Bind`.
pub(super) enum Params<'p> {
    None,
    /// Row values, each in the format blue sent it (see [`Value`]).
    Values(&'p [ColumnValue]),
    /// A set statement's `text[]` arrays, binary.
    Arrays(&'p [crate::set::TextArray]),
}

/// Writes a `Bind` of the unnamed portal to `statement` with `params`; every result column in
/// text.
pub(super) fn bind(
    statement: &str,
    params: Params<'_>,
    buf: &mut BytesMut,
) -> Result<(), ApplyError> {
    let bad = |_| ApplyError::Misuse("a parameter could not be encoded");
    match params {
        Params::None => frontend::bind(
            "",
            statement,
            std::iter::empty(),
            std::iter::empty::<()>(),
            |(), _| Ok(postgres_protocol::IsNull::No),
            std::iter::empty(),
            buf,
        )
        .map_err(|_| ApplyError::Misuse("a statement name contains a NUL byte")),
        Params::Values(values) => {
            let values: Vec<Value<'_>> = values
                .iter()
                .map(|c| Value::of(c).unwrap_or(Value::Null))
                .collect();
            frontend::bind(
                "",
                statement,
                values.iter().map(|v| match v {
                    Value::Binary(_) => 1,
                    Value::Null | Value::Text(_) => 0,
                }),
                values.iter(),
                |v, out| match v {
                    Value::Null => Ok(postgres_protocol::IsNull::Yes),
                    Value::Text(b) | Value::Binary(b) => {
                        out.extend_from_slice(b);
                        Ok(postgres_protocol::IsNull::No)
                    }
                },
                std::iter::empty(),
                buf,
            )
            .map_err(bad)
        }
        Params::Arrays(arrays) => frontend::bind(
            "",
            statement,
            arrays.iter().map(|_| 1),
            arrays.iter(),
            |a, out| {
                a.to_sql(&Type::TEXT_ARRAY, out)
                    .map(|_| postgres_protocol::IsNull::No)
            },
            std::iter::empty(),
            buf,
        )
        .map_err(bad),
    }
}

/// Reads the `ReadyForQuery` of a `Sync`, skipping whatever green answered before it.
pub(super) async fn expect_ready(
    wire: &mut Wire,
) -> Result<(), blueshift_decoder::ReplicationError> {
    loop {
        if let Reply::ReadyForQuery(_) = wire.session.recv().await? {
            return Ok(());
        }
    }
}

/// A server's error report as a [`SqlError`].
pub(super) fn server(e: Box<blueshift_decoder::ServerError>) -> SqlError {
    SqlError::from(blueshift_decoder::ReplicationError::Server(e))
}

/// Green answered something the requests sent cannot explain: the session is unusable (it
/// stays marked outstanding, so the applier is replaced).
pub(super) fn out_of_protocol(reply: &Reply) -> ApplyError {
    tracing::warn!(?reply, "green answered a pipelined request out of protocol");
    ApplyError::Misuse("green answered a pipelined request out of protocol")
}

/// The error of a `Parse` of a statement on `target`, as a failed prepare is reported.
pub(super) fn parse_error(target: &Arc<TargetTable>, operation: Operation) -> OnError {
    let table = target.display.clone();
    Box::new(move |e| ApplyError::Statement {
        table,
        operation,
        culprit: None,
        source: diagnose::redact(e),
    })
}

/// The answer of an `Execute` that completed with `tag` (its first row, if any).
pub(super) fn execute_answer(
    execute: Execute,
    tag: &str,
    first_row: Option<Vec<Option<bytes::Bytes>>>,
) -> Result<Option<Answer>, ApplyError> {
    match execute {
        Execute::Begin(_) | Execute::Plain(_) => Ok(Some(Answer::Done)),
        Execute::Row {
            target,
            shape,
            must_touch,
            ..
        } => {
            let rows = if statement::is_checked(&shape) {
                first_row
                    .and_then(|r| r.into_iter().next().flatten())
                    .and_then(|v| std::str::from_utf8(&v).ok()?.parse::<u64>().ok())
                    .unwrap_or(0)
            } else {
                tag_rows(tag)
            };
            row_answer(&target, shape.operation(), rows, must_touch).map(Some)
        }
        Execute::Set {
            target,
            absent,
            operation,
            expected,
        } => set_answer(&target, operation, absent, tag_rows(tag), expected).map(Some),
    }
}

/// The error of an `Execute` that failed with `error`.
pub(super) fn execute_error(execute: Execute, error: SqlError) -> ApplyError {
    match execute {
        Execute::Begin(on_error) | Execute::Plain(on_error) => on_error(error),
        Execute::Row {
            target,
            shape,
            params,
            ..
        } => row_error(&target, &shape, &params, error),
        Execute::Set {
            target, operation, ..
        } => set_error(&target, operation, error),
    }
}

/// The rows a command tag reports (`UPDATE 3`, `INSERT 0 5`, `DELETE 0`): its last number.
pub(super) fn tag_rows(tag: &str) -> u64 {
    tag.rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A row statement that touched `rows`: an UPDATE or DELETE that must touch one and touched
/// none is [`ApplyError::RowNotFound`].
pub(super) fn row_answer(
    target: &TargetTable,
    operation: Operation,
    rows: u64,
    must_touch: bool,
) -> Result<Answer, ApplyError> {
    if must_touch && rows == 0 && matches!(operation, Operation::Update | Operation::Delete) {
        return Err(ApplyError::RowNotFound {
            table: target.display.clone(),
            operation,
        });
    }
    Ok(Answer::Rows(operation, rows))
}

/// A row statement's failure: no row matched (the checked form), or green's error with the
/// column and row it is about.
pub(super) fn row_error(
    target: &TargetTable,
    shape: &Shape,
    params: &[ColumnValue],
    source: SqlError,
) -> ApplyError {
    let operation = shape.operation();
    if no_row_matched(&source) {
        return ApplyError::RowNotFound {
            table: target.display.clone(),
            operation,
        };
    }
    let culprit = diagnose::culprit(target, shape, params, &source);
    ApplyError::Statement {
        table: target.display.clone(),
        operation,
        culprit: culprit.map(Box::new),
        source: diagnose::redact(source),
    }
}

/// A set statement's failure.
pub(super) fn set_error(
    target: &TargetTable,
    operation: Operation,
    source: SqlError,
) -> ApplyError {
    ApplyError::Statement {
        table: target.display.clone(),
        operation,
        culprit: None,
        source: diagnose::redact(source),
    }
}

/// A set statement that touched `rows` of `expected`.
pub(super) fn set_answer(
    target: &TargetTable,
    operation: Operation,
    absent: bool,
    rows: u64,
    expected: u64,
) -> Result<Answer, ApplyError> {
    if rows != expected {
        return Err(match operation {
            _ if absent => ApplyError::RowExists {
                table: target.display.clone(),
            },
            Operation::Update | Operation::Delete => ApplyError::RowNotFound {
                table: target.display.clone(),
                operation,
            },
            Operation::Insert | Operation::Truncate => {
                ApplyError::Misuse("a set INSERT inserted another number of rows than it was given")
            }
        });
    }
    Ok(Answer::Rows(operation, if absent { 0 } else { rows }))
}

/// Green's error when a checked UPDATE or DELETE found no row: an input error on exactly
/// [`statement::NO_ROW_MARKER`].
pub(super) fn no_row_matched(error: &SqlError) -> bool {
    error.server().is_some_and(|e| {
        e.sqlstate == "22P02"
            && e.message
                .contains(&format!("\"{}\"", statement::NO_ROW_MARKER))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_tags_give_their_row_counts() {
        assert_eq!(tag_rows("UPDATE 3"), 3);
        assert_eq!(tag_rows("INSERT 0 5"), 5);
        assert_eq!(tag_rows("DELETE 0"), 0);
        assert_eq!(tag_rows("BEGIN"), 0);
    }
}
