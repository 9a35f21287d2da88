//! Pipelined statements: an applier sends the statements of a transaction without waiting for
//! each answer, up to a bounded depth, and reads the answers back in order.
//!
//! tokio-postgres sends a request to the server when its future is first polled, and the
//! server answers requests in the order it received them. Each statement's future is polled
//! once as soon as it is created, so requests leave in blue's order; answers are then awaited
//! oldest first. The first error in that order is the transaction's error: every statement
//! after it failed only because the transaction was already aborted. A depth of 1 is the
//! serial path: each statement is answered before the next is sent.
//!
//! A statement that fails keeps its shape and parameters until its answer is read, so that a
//! value error can name its column and row ([`diagnose`](crate::diagnose)).

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use blueshift_decoder::pgoutput::ColumnValue;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use crate::client::SqlError;
use crate::diagnose;
use crate::error::{ApplyError, Operation};
use crate::outcome::RowCounts;
use crate::statement::Shape;
use crate::target::TargetTable;
use crate::value::Value;

/// What one statement did.
#[derive(Debug, Clone, Copy)]
struct Applied {
    operation: Operation,
    rows: u64,
}

/// A statement sent and not yet answered.
type Pending<'a> = Pin<Box<dyn Future<Output = Result<Applied, ApplyError>> + Send + 'a>>;

/// The statements in flight on one connection, oldest first.
pub(crate) struct Pipeline<'a> {
    client: &'a Client,
    in_flight: VecDeque<Pending<'a>>,
    depth: usize,
    /// Rows touched by the statements answered so far.
    pub(crate) rows: RowCounts,
}

impl<'a> Pipeline<'a> {
    /// An empty pipeline of at most `depth` statements in flight (at least one).
    pub(crate) fn new(client: &'a Client, depth: usize) -> Self {
        Pipeline {
            client,
            in_flight: VecDeque::new(),
            depth: depth.max(1),
            rows: RowCounts::default(),
        }
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
        let mut pending: Pending<'a> = Box::pin(async move {
            let values: Vec<Value<'_>> = params
                .iter()
                .map(|c| Value::of(c).unwrap_or(Value::Null))
                .collect();
            let refs: Vec<&(dyn ToSql + Sync)> =
                values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
            let rows = match client.execute(&statement, &refs).await {
                Ok(rows) => rows,
                Err(e) => {
                    let source = SqlError::from(e);
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
            Ok(Applied { operation, rows })
        });
        // The first poll sends the request.
        match poll_fn(|cx| Poll::Ready(pending.as_mut().poll(cx))).await {
            Poll::Ready(result) => self.record(result?),
            Poll::Pending => self.in_flight.push_back(pending),
        }
        Ok(())
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
                Ok(applied) => self.record(applied),
                Err(e) => {
                    self.in_flight.clear();
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn record(&mut self, applied: Applied) {
        let counter = match applied.operation {
            Operation::Insert => &mut self.rows.inserted,
            Operation::Update => &mut self.rows.updated,
            Operation::Delete => &mut self.rows.deleted,
            Operation::Truncate => &mut self.rows.truncated,
        };
        *counter += applied.rows;
    }
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
