//! Pipelined statements: an applier sends a transaction — `BEGIN`, every change and, once the transaction's turn has come, the `COMMIT` — without waiting for any
//! answer, up to a bounded depth, and reads the answers back in order.
//!
//! tokio-postgres sends a request to the server when its future is first polled, and the
//! server answers requests in the order it received them. Each request's future is polled
//! once as soon as it is created, so requests leave in blue's order; answers are then awaited
//! oldest first. The first error in that order is the transaction's error: every request after
//! it failed only because the transaction was already aborted (a `COMMIT` sent behind it
//! answers `ROLLBACK`). A depth of 1 is the serial path: each statement is answered before the
//! next is sent.
//!
//! Exactly-once with the `COMMIT` in flight: green commits the transaction, and advances the
//! applier's replication origin with it, only if every request before the `COMMIT` succeeded on
//! green. Every check that could stop the transaction therefore runs on green, not in the
//! client: an UPDATE or DELETE that finds no row fails there
//! ([`statement::NO_ROW_MARKER`](crate::statement::NO_ROW_MARKER)), and comes back as
//! [`ApplyError::RowNotFound`]. That form costs green about 1.7 times the plain statement, so
//! only a small transaction is sent with its `COMMIT` this way (`Applier::apply`); a larger one
//! (a catch-up group) sends plain statements, whose row counts the client checks once every
//! answer is in, and commits in a second round trip. Whatever happens to blueshift after the `COMMIT` left (a crash,
//! a lost connection), the origin's progress on green says whether it landed.
//!
//! tokio-postgres ends every request with a Sync (green answers and flushes each); one Sync
//! per window would need a protocol client of our own. What pipelining removes is the waiting:
//! a transaction whose turn has come costs one round trip, not one per step.
//!
//! A statement that fails keeps its shape and parameters until its answer is read, so that a
//! value error can name its column and row ([`diagnose`](crate::diagnose)).

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use blueshift_decoder::pgoutput::ColumnValue;
use blueshift_decoder::Lsn;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, SimpleQueryMessage, Statement};

use crate::client::SqlError;
use crate::diagnose;
use crate::error::{ApplyError, Operation};
use crate::outcome::RowCounts;
use crate::statement::{self, Shape};
use crate::target::TargetTable;
use crate::value::Value;

/// What one request answered.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// A row statement: its operation and the rows it touched.
    Rows(Operation, u64),
    /// `BEGIN`.
    Done,
    /// `COMMIT`, with where green's WAL insert position stood just after it.
    Committed(Lsn),
}

/// A request sent and not yet answered.
type Pending<'a> = Pin<Box<dyn Future<Output = Result<Answer, ApplyError>> + Send + 'a>>;

/// The statements in flight on one connection, oldest first.
pub(crate) struct Pipeline<'a> {
    client: &'a Client,
    in_flight: VecDeque<Pending<'a>>,
    depth: usize,
    /// Rows touched by the statements answered so far.
    pub(crate) rows: RowCounts,
    /// Green's WAL insert position after the pipelined `COMMIT`, once it is answered.
    pub(crate) committed: Option<Lsn>,
}

impl<'a> Pipeline<'a> {
    /// An empty pipeline of at most `depth` statements in flight (at least one).
    pub(crate) fn new(client: &'a Client, depth: usize) -> Self {
        Pipeline {
            client,
            in_flight: VecDeque::new(),
            depth: depth.max(1),
            rows: RowCounts::default(),
            committed: None,
        }
    }

    /// Sends `BEGIN`; `error` explains a failure.
    pub(crate) async fn begin(
        &mut self,
        error: impl FnOnce(tokio_postgres::Error) -> ApplyError + Send + 'a,
    ) -> Result<(), ApplyError> {
        let client = self.client;
        self.push(Box::pin(async move {
            client.batch_execute("BEGIN").await.map_err(error)?;
            Ok(Answer::Done)
        }))
        .await
    }

    /// Sends `sql`: the origin tag, a `COMMIT`, then a query of one row of one `pg_lsn` as text (green's
    /// WAL position after it), which [`committed`](Self::committed) holds once answered.
    /// `error` explains a failure; `bad_lsn` an answer that is not a position.
    pub(crate) async fn commit(
        &mut self,
        sql: String,
        error: impl FnOnce(tokio_postgres::Error) -> ApplyError + Send + 'a,
    ) -> Result<(), ApplyError> {
        let client = self.client;
        self.push(Box::pin(async move {
            let messages = client.simple_query(&sql).await.map_err(error)?;
            // The last row: the first is the origin tag's.
            let text = messages
                .iter()
                .rev()
                .find_map(|m| match m {
                    SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                    _ => None,
                })
                .unwrap_or_default();
            let lsn = text
                .parse()
                .map_err(|_| ApplyError::BadLsn { value: text })?;
            Ok(Answer::Committed(lsn))
        }))
        .await
    }

    /// Queues a request whose future was just made: when the pipeline is full, first waits for
    /// the oldest answer; then polls it once, which sends it.
    async fn push(&mut self, mut pending: Pending<'a>) -> Result<(), ApplyError> {
        while self.in_flight.len() >= self.depth {
            self.next().await?;
        }
        match poll_fn(|cx| Poll::Ready(pending.as_mut().poll(cx))).await {
            Poll::Ready(result) => self.record(result?),
            Poll::Pending => self.in_flight.push_back(pending),
        }
        Ok(())
    }

    /// Sends `statement` with `params` (no unchanged-TOAST values: callers leave those out);
    /// when the pipeline is full, first waits for the oldest answer. An UPDATE or DELETE that
    /// touches no row fails with [`ApplyError::RowNotFound`].
    pub(crate) async fn send(
        &mut self,
        target: Arc<TargetTable>,
        shape: Shape,
        statement: Statement,
        params: Vec<ColumnValue>,
    ) -> Result<(), ApplyError> {
        self.send_checked(target, shape, statement, params, true)
            .await
    }

    /// [`send`](Self::send), but an UPDATE or DELETE that touches no row is no error when
    /// `must_touch` is false (a reconcile window's DELETE).
    pub(crate) async fn send_checked(
        &mut self,
        target: Arc<TargetTable>,
        shape: Shape,
        statement: Statement,
        params: Vec<ColumnValue>,
        must_touch: bool,
    ) -> Result<(), ApplyError> {
        // Test builds: a crash with part of the (group's) green transaction sent.
        crate::failpoint::hit("between-statements");
        while self.in_flight.len() >= self.depth {
            self.next().await?;
        }
        let operation = shape.operation();
        let client = self.client;
        let pending: Pending<'a> = Box::pin(async move {
            let values: Vec<Value<'_>> = params
                .iter()
                .map(|c| Value::of(c).unwrap_or(Value::Null))
                .collect();
            let refs: Vec<&(dyn ToSql + Sync)> =
                values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
            let answered = if statement::is_checked(&shape) {
                // One row: the rows touched (green fails the statement when none).
                match client.query(&statement, &refs).await {
                    Ok(rows) => Ok(rows
                        .first()
                        .and_then(|r| r.try_get::<_, i64>(0).ok())
                        .map_or(0, |n| u64::try_from(n).unwrap_or(0))),
                    Err(e) => Err(e),
                }
            } else {
                client.execute(&statement, &refs).await
            };
            let rows = match answered {
                Ok(rows) => rows,
                Err(e) => {
                    let source = SqlError::from(e);
                    if no_row_matched(&source) {
                        return Err(ApplyError::RowNotFound {
                            table: target.display.clone(),
                            operation,
                        });
                    }
                    let culprit = diagnose::culprit(&target, &shape, &params, &source);
                    return Err(ApplyError::Statement {
                        table: target.display.clone(),
                        operation,
                        culprit: culprit.map(Box::new),
                        source: diagnose::redact(source),
                    });
                }
            };
            if must_touch && rows == 0 && matches!(operation, Operation::Update | Operation::Delete)
            {
                return Err(ApplyError::RowNotFound {
                    table: target.display.clone(),
                    operation,
                });
            }
            Ok(Answer::Rows(operation, rows))
        });
        self.push(pending).await
    }

    /// Sends a set statement of a folded group ([`crate::set`]) with its arrays; its answer must
    /// count exactly `expected` rows: fewer rows updated or deleted than keys is
    /// [`ApplyError::RowNotFound`], a key expected absent that green has
    /// ([`Shape::SetAbsent`]) is [`ApplyError::RowExists`].
    pub(crate) async fn send_set(
        &mut self,
        target: Arc<TargetTable>,
        shape: Shape,
        statement: Statement,
        arrays: Vec<crate::set::TextArray>,
        expected: u64,
    ) -> Result<(), ApplyError> {
        // Test builds: a crash with part of the group's green transaction sent.
        crate::failpoint::hit("between-statements");
        while self.in_flight.len() >= self.depth {
            self.next().await?;
        }
        let operation = shape.operation();
        let absent = matches!(shape, Shape::SetAbsent);
        let client = self.client;
        let pending: Pending<'a> = Box::pin(async move {
            let refs: Vec<&(dyn ToSql + Sync)> =
                arrays.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
            let rows =
                client
                    .execute(&statement, &refs)
                    .await
                    .map_err(|e| ApplyError::Statement {
                        table: target.display.clone(),
                        operation,
                        culprit: None,
                        source: diagnose::redact(SqlError::from(e)),
                    })?;
            if rows != expected {
                return Err(match operation {
                    _ if absent => ApplyError::RowExists {
                        table: target.display.clone(),
                    },
                    Operation::Update | Operation::Delete => ApplyError::RowNotFound {
                        table: target.display.clone(),
                        operation,
                    },
                    Operation::Insert | Operation::Truncate => ApplyError::Misuse(
                        "a set INSERT inserted another number of rows than it was given",
                    ),
                });
            }
            Ok(Answer::Rows(operation, if absent { 0 } else { rows }))
        });
        self.push(pending).await
    }

    /// Waits for every statement in flight.
    pub(crate) async fn drain(&mut self) -> Result<(), ApplyError> {
        while !self.in_flight.is_empty() {
            self.next().await?;
        }
        Ok(())
    }

    /// The error to report when a step outside the pipeline (a prepare, a catalog read, a
    /// TRUNCATE) failed with `error`: an earlier statement's failure, when there was one, is
    /// the cause (it aborted the transaction); else `error` itself.
    pub(crate) async fn explain(&mut self, error: ApplyError) -> ApplyError {
        match self.drain().await {
            Err(first) => first,
            Ok(()) => error,
        }
    }

    /// Waits for the oldest answer. On error the statements after it are dropped: they can
    /// only fail because the transaction is aborted, and the error in hand is the cause.
    async fn next(&mut self) -> Result<(), ApplyError> {
        if let Some(pending) = self.in_flight.pop_front() {
            match pending.await {
                Ok(answer) => self.record(answer),
                Err(e) => {
                    self.in_flight.clear();
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn record(&mut self, answer: Answer) {
        let (operation, rows) = match answer {
            Answer::Rows(operation, rows) => (operation, rows),
            Answer::Done => return,
            Answer::Committed(lsn) => {
                self.committed = Some(lsn);
                return;
            }
        };
        let counter = match operation {
            Operation::Insert => &mut self.rows.inserted,
            Operation::Update => &mut self.rows.updated,
            Operation::Delete => &mut self.rows.deleted,
            Operation::Truncate => &mut self.rows.truncated,
        };
        *counter += rows;
    }
}

/// Green's error when a checked UPDATE or DELETE found no row: an input error on exactly
/// [`statement::NO_ROW_MARKER`].
fn no_row_matched(error: &SqlError) -> bool {
    error.server().is_some_and(|e| {
        e.sqlstate == "22P02"
            && e.message
                .contains(&format!("\"{}\"", statement::NO_ROW_MARKER))
    })
}

impl std::fmt::Debug for Pipeline<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("in_flight", &self.in_flight.len())
            .field("depth", &self.depth)
            .field("rows", &self.rows)
            .finish()
    }
}
