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
//! Two backends. On the applier's own session ([`wire`](crate::wire), the default for one-way
//! sync) a window — every request of the green transaction, or `pipeline_depth` statements of
//! a larger one — goes as `Parse` (first use only)/`Bind`/`Execute` per statement and ONE
//! `Sync` at its end: green answers and flushes once per window. After an `ErrorResponse` green
//! skips every message up to that `Sync`; the reader then knows exactly what was answered
//! before it (a `COMMIT` only counts once its `CommandComplete` and its position came back),
//! and puts back to unparsed the statements whose `Parse` was skipped. The origin tag and the
//! `COMMIT` still travel as one simple-query message inside the window (green reads a message
//! whole or not at all; see [`applier`](crate::applier) on why the tag must never be separated
//! from the `COMMIT`); green skips it, too, after an earlier error in the window.
//!
//! On tokio-postgres (two-way appliers, or `wire` off) every request ends with its own Sync
//! (green answers and flushes each). What pipelining removes there is the waiting: a
//! transaction whose turn has come costs one round trip, not one per step.
//!
//! A statement that fails keeps its shape and parameters until its answer is read, so that a
//! value error can name its column and row ([`diagnose`](crate::diagnose)).

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use blueshift_decoder::connection::session::Reply;
use blueshift_decoder::pgoutput::ColumnValue;
use blueshift_decoder::Lsn;
use postgres_protocol::message::frontend;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, SimpleQueryMessage, Statement};

use crate::client::SqlError;
use crate::error::{ApplyError, Operation};
use crate::outcome::RowCounts;
use crate::statement::{self, Shape};
use crate::target::TargetTable;
use crate::value::Value;
use crate::wire::{self, Wire, WireStatement, PARSED, PARSING, UNPARSED};

mod answers;

use answers::{
    bind, execute_answer, execute_error, expect_ready, out_of_protocol, parse_error, row_answer,
    row_error, server, set_answer, set_error, Params,
};

/// Bytes of requests buffered before they are written out (without a `Sync`: green runs them
/// as they arrive and answers at the window's end).
const WRITE_CHUNK: usize = 256 * 1024;

/// A prepared statement on either backend.
#[derive(Debug, Clone)]
pub(crate) enum Prepared {
    /// Prepared by tokio-postgres.
    Tokio(Statement),
    /// A named statement of the wire session, parsed on green in the window of its first use.
    Wire(Arc<WireStatement>),
}

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

/// Turns a failed request's error into the transaction's.
type OnError = Box<dyn FnOnce(SqlError) -> ApplyError + Send>;

/// A request of a wire window, in the order green answers them.
enum Request {
    /// `Parse` of a named statement (`None`: the unnamed one).
    Parse(Option<Arc<WireStatement>>, OnError),
    /// `Close` of an evicted statement.
    Close,
    /// `Bind` of the unnamed portal.
    Bind,
    /// `Execute` of the unnamed portal.
    Execute(Execute),
    /// The origin tag, `COMMIT` and green's position, one simple query.
    Commit(OnError),
    /// The window's end.
    Sync,
}

/// What an `Execute` runs, and how its answer is checked.
enum Execute {
    /// `BEGIN`.
    Begin(OnError),
    /// A row statement ([`Pipeline::send_checked`]).
    Row {
        target: Arc<TargetTable>,
        shape: Shape,
        params: Vec<ColumnValue>,
        must_touch: bool,
    },
    /// A set statement ([`Pipeline::send_set`]).
    Set {
        target: Arc<TargetTable>,
        absent: bool,
        operation: Operation,
        expected: u64,
    },
    /// A statement whose rows do not matter ([`Pipeline::run`]).
    Plain(OnError),
}

enum Backend<'a> {
    Tokio {
        client: &'a Client,
        in_flight: VecDeque<Pending<'a>>,
    },
    Wire {
        wire: &'a mut Wire,
        requests: VecDeque<Request>,
        /// Statements since the last `Sync`.
        statements: usize,
    },
}

/// The statements in flight on one connection, oldest first.
pub(crate) struct Pipeline<'a> {
    backend: Backend<'a>,
    depth: usize,
    /// Rows touched by the statements answered so far.
    pub(crate) rows: RowCounts,
    /// Green's WAL insert position after the pipelined `COMMIT`, once it is answered.
    pub(crate) committed: Option<Lsn>,
}

impl<'a> Pipeline<'a> {
    /// An empty pipeline on tokio-postgres of at most `depth` statements in flight (at least
    /// one).
    pub(crate) fn new(client: &'a Client, depth: usize) -> Self {
        Pipeline {
            backend: Backend::Tokio {
                client,
                in_flight: VecDeque::new(),
            },
            depth: depth.max(1),
            rows: RowCounts::default(),
            committed: None,
        }
    }

    /// An empty pipeline on the wire session: a `Sync` after at most `depth` statements (at
    /// least one), else at the end of the window.
    pub(crate) fn on_wire(wire: &'a mut Wire, depth: usize) -> Self {
        Pipeline {
            backend: Backend::Wire {
                wire,
                requests: VecDeque::new(),
                statements: 0,
            },
            depth: depth.max(1),
            rows: RowCounts::default(),
            committed: None,
        }
    }

    /// True on the wire session.
    pub(crate) fn is_wire(&self) -> bool {
        matches!(self.backend, Backend::Wire { .. })
    }

    /// A statement of `sql`: prepared now on tokio-postgres (`error` explains a failure); on
    /// the wire, named and parsed in the window of its first use.
    pub(crate) async fn prepare(
        &mut self,
        sql: String,
        error: impl FnOnce(SqlError) -> ApplyError,
    ) -> Result<Prepared, ApplyError> {
        match &mut self.backend {
            Backend::Tokio { client, .. } => client
                .prepare(&sql)
                .await
                .map(Prepared::Tokio)
                .map_err(|e| error(SqlError::from(e))),
            Backend::Wire { wire, .. } => Ok(Prepared::Wire(wire.statement(sql))),
        }
    }

    /// A statement evicted from the cache: closed on green in the next window.
    pub(crate) fn forget(&mut self, evicted: Prepared) {
        if let (Backend::Wire { wire, .. }, Prepared::Wire(statement)) =
            (&mut self.backend, evicted)
        {
            if statement.state() != UNPARSED {
                wire.to_close.push(statement.name.clone());
            }
        }
    }

    /// Sends `BEGIN`; `error` explains a failure.
    pub(crate) async fn begin(
        &mut self,
        error: impl Fn(SqlError) -> ApplyError + Send + Sync + 'static,
    ) -> Result<(), ApplyError> {
        let client = match &mut self.backend {
            Backend::Wire { wire, .. } => {
                let begin = Arc::clone(&wire.begin);
                let error = Arc::new(error);
                let on_parse = Arc::clone(&error);
                return self
                    .write(
                        &begin,
                        Box::new(move |e| on_parse(e)),
                        Params::None,
                        Execute::Begin(Box::new(move |e| error(e))),
                    )
                    .await;
            }
            Backend::Tokio { client, .. } => *client,
        };
        self.push(Box::pin(async move {
            client
                .batch_execute("BEGIN")
                .await
                .map_err(|e| error(SqlError::from(e)))?;
            Ok(Answer::Done)
        }))
        .await
    }

    /// Sends `sql`: the origin tag, a `COMMIT`, then a query of one row of one `pg_lsn` as
    /// text (green's WAL position after it), which [`committed`](Self::committed) holds once
    /// answered. `error` explains a failure.
    pub(crate) async fn commit(
        &mut self,
        sql: String,
        error: impl FnOnce(SqlError) -> ApplyError + Send + 'static,
    ) -> Result<(), ApplyError> {
        let client = match &mut self.backend {
            Backend::Wire { wire, requests, .. } => {
                frontend::query(&sql, wire.session.buffer())
                    .map_err(|_| ApplyError::Misuse("the COMMIT message contains a NUL byte"))?;
                requests.push_back(Request::Commit(Box::new(error)));
                return Ok(());
            }
            Backend::Tokio { client, .. } => *client,
        };
        self.push(Box::pin(async move {
            let messages = client
                .simple_query(&sql)
                .await
                .map_err(|e| error(SqlError::from(e)))?;
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

    /// Runs `sql` (no parameters, e.g. a TRUNCATE) in order after everything sent, and waits
    /// for every answer; `error` explains its failure.
    pub(crate) async fn run(
        &mut self,
        sql: &str,
        error: impl Fn(SqlError) -> ApplyError + Send + Sync + 'static,
    ) -> Result<(), ApplyError> {
        let client = match &mut self.backend {
            Backend::Wire { wire, requests, .. } => {
                let buf = wire.session.buffer();
                frontend::parse("", sql, std::iter::empty(), buf)
                    .map_err(|_| ApplyError::Misuse("a statement contains a NUL byte"))?;
                bind("", Params::None, buf)?;
                frontend::execute("", 0, buf)
                    .map_err(|_| ApplyError::Misuse("a portal name contains a NUL byte"))?;
                let error = Arc::new(error);
                let on_parse = Arc::clone(&error);
                requests.push_back(Request::Parse(None, Box::new(move |e| on_parse(e))));
                requests.push_back(Request::Bind);
                requests.push_back(Request::Execute(Execute::Plain(Box::new(move |e| {
                    error(e)
                }))));
                return self.drain().await;
            }
            Backend::Tokio { client, .. } => *client,
        };
        self.drain().await?;
        client
            .execute(sql, &[])
            .await
            .map_err(|e| error(SqlError::from(e)))?;
        Ok(())
    }

    /// Queues a request whose future was just made: when the pipeline is full, first waits for
    /// the oldest answer; then polls it once, which sends it.
    async fn push(&mut self, mut pending: Pending<'a>) -> Result<(), ApplyError> {
        while self.in_flight() >= self.depth {
            self.next().await?;
        }
        match poll_fn(|cx| Poll::Ready(pending.as_mut().poll(cx))).await {
            Poll::Ready(result) => self.record(result?),
            Poll::Pending => {
                if let Backend::Tokio { in_flight, .. } = &mut self.backend {
                    in_flight.push_back(pending);
                }
            }
        }
        Ok(())
    }

    fn in_flight(&self) -> usize {
        match &self.backend {
            Backend::Tokio { in_flight, .. } => in_flight.len(),
            Backend::Wire { statements, .. } => *statements,
        }
    }

    /// Writes a statement into the wire window: its `Parse` on first use, `Bind` and
    /// `Execute`. After `depth` statements the window ends (a `Sync`, every answer read); past
    /// [`WRITE_CHUNK`] bytes the requests are written out (green runs them as they arrive).
    async fn write(
        &mut self,
        statement: &Arc<WireStatement>,
        on_parse: OnError,
        params: Params<'_>,
        execute: Execute,
    ) -> Result<(), ApplyError> {
        let depth = self.depth;
        let Backend::Wire {
            wire,
            requests,
            statements,
        } = &mut self.backend
        else {
            return Err(ApplyError::Misuse(
                "a wire statement sent on a tokio-postgres pipeline",
            ));
        };
        // A window under way (part of it written out) is this one's; at a window's start the
        // session must have been read to its end.
        if requests.is_empty() && wire.is_closed() {
            return Err(ApplyError::Transaction {
                step: "a statement",
                commit_lsn: String::new(),
                source: wire::closed(),
            });
        }
        let buf = wire.session.buffer();
        for name in wire.to_close.drain(..) {
            frontend::close(b'S', &name, buf)
                .map_err(|_| ApplyError::Misuse("a statement name contains a NUL byte"))?;
            requests.push_back(Request::Close);
        }
        if statement.state() == UNPARSED {
            frontend::parse(&statement.name, &statement.sql, std::iter::empty(), buf)
                .map_err(|_| ApplyError::Misuse("a statement contains a NUL byte"))?;
            statement.set_state(PARSING);
            requests.push_back(Request::Parse(Some(Arc::clone(statement)), on_parse));
        }
        bind(&statement.name, params, buf)?;
        frontend::execute("", 0, buf)
            .map_err(|_| ApplyError::Misuse("a portal name contains a NUL byte"))?;
        requests.push_back(Request::Bind);
        requests.push_back(Request::Execute(execute));
        *statements += 1;
        if *statements >= depth {
            return self.drain().await;
        }
        if buf.len() >= WRITE_CHUNK {
            wire.outstanding = true;
            wire.session
                .send()
                .await
                .map_err(|e| ApplyError::Transaction {
                    step: "a pipelined window",
                    commit_lsn: String::new(),
                    source: SqlError::from(e),
                })?;
            // Test builds: a crash with part of a window written, its Sync not yet sent.
            crate::failpoint::hit("mid-window");
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
        statement: Prepared,
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
        statement: Prepared,
        params: Vec<ColumnValue>,
        must_touch: bool,
    ) -> Result<(), ApplyError> {
        // Test builds: a crash with part of the (group's) green transaction sent.
        crate::failpoint::hit("between-statements");
        let statement = match statement {
            Prepared::Wire(statement) => {
                let on_parse = parse_error(&target, shape.operation());
                let values = params.clone();
                return self
                    .write(
                        &statement,
                        on_parse,
                        Params::Values(&values),
                        Execute::Row {
                            target,
                            shape,
                            params,
                            must_touch,
                        },
                    )
                    .await;
            }
            Prepared::Tokio(statement) => statement,
        };
        while self.in_flight() >= self.depth {
            self.next().await?;
        }
        let Backend::Tokio { client, .. } = &self.backend else {
            return Err(ApplyError::Misuse(
                "a tokio-postgres statement sent on the wire session",
            ));
        };
        let client: &'a Client = client;
        let operation = shape.operation();
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
            match answered {
                Ok(rows) => row_answer(&target, operation, rows, must_touch),
                Err(e) => Err(row_error(&target, &shape, &params, SqlError::from(e))),
            }
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
        statement: Prepared,
        arrays: Vec<crate::set::TextArray>,
        expected: u64,
    ) -> Result<(), ApplyError> {
        // Test builds: a crash with part of the group's green transaction sent.
        crate::failpoint::hit("between-statements");
        let operation = shape.operation();
        let absent = matches!(shape, Shape::SetAbsent);
        let statement = match statement {
            Prepared::Wire(statement) => {
                let on_parse = parse_error(&target, operation);
                return self
                    .write(
                        &statement,
                        on_parse,
                        Params::Arrays(&arrays),
                        Execute::Set {
                            target,
                            absent,
                            operation,
                            expected,
                        },
                    )
                    .await;
            }
            Prepared::Tokio(statement) => statement,
        };
        while self.in_flight() >= self.depth {
            self.next().await?;
        }
        let Backend::Tokio { client, .. } = &self.backend else {
            return Err(ApplyError::Misuse(
                "a tokio-postgres statement sent on the wire session",
            ));
        };
        let client: &'a Client = client;
        let pending: Pending<'a> = Box::pin(async move {
            let refs: Vec<&(dyn ToSql + Sync)> =
                arrays.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
            let rows = client
                .execute(&statement, &refs)
                .await
                .map_err(|e| set_error(&target, operation, SqlError::from(e)))?;
            set_answer(&target, operation, absent, rows, expected)
        });
        self.push(pending).await
    }

    /// Waits for every statement in flight: on the wire, ends the window with its `Sync` and
    /// reads every answer. The error is the first in the order sent.
    pub(crate) async fn drain(&mut self) -> Result<(), ApplyError> {
        if let Backend::Wire { .. } = self.backend {
            return self.finish_window().await;
        }
        while self.in_flight() > 0 {
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
        let Backend::Tokio { in_flight, .. } = &mut self.backend else {
            return self.finish_window().await;
        };
        if let Some(pending) = in_flight.pop_front() {
            match pending.await {
                Ok(answer) => self.record(answer),
                Err(e) => {
                    if let Backend::Tokio { in_flight, .. } = &mut self.backend {
                        in_flight.clear();
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Ends the wire window with a `Sync`, writes it out and reads every answer, in order.
    /// The first failure in that order is the error; a statement whose `Parse` green skipped
    /// (after an error) is parsed again on its next use. Only a `COMMIT` whose answer came
    /// back whole counts as committed.
    async fn finish_window(&mut self) -> Result<(), ApplyError> {
        let Backend::Wire {
            wire,
            requests,
            statements,
        } = &mut self.backend
        else {
            return Ok(());
        };
        *statements = 0;
        if requests.is_empty() {
            return Ok(());
        }
        let commits = requests.iter().any(|r| matches!(r, Request::Commit(_)));
        frontend::sync(wire.session.buffer());
        requests.push_back(Request::Sync);
        wire.outstanding = true;
        let broken = |e| ApplyError::Transaction {
            step: "a pipelined window",
            commit_lsn: String::new(),
            source: SqlError::from(e),
        };
        wire.session.send().await.map_err(broken)?;
        // Test builds: a crash with a window sent and its Sync unanswered ...
        crate::failpoint::hit("mid-window");
        if commits {
            // ... with its COMMIT among it.
            crate::failpoint::hit("commit-in-flight");
        }
        let mut first: Option<ApplyError> = None;
        let mut answers = Vec::new();
        // After an ErrorResponse to an extended-protocol message green skips to the Sync.
        let mut skipping = false;
        while let Some(request) = requests.pop_front() {
            if skipping {
                match request {
                    Request::Parse(Some(statement), _) => statement.set_state(UNPARSED),
                    Request::Sync => {
                        skipping = false;
                        expect_ready(wire).await.map_err(broken)?;
                    }
                    _ => {}
                }
                continue;
            }
            let outcome = match request {
                Request::Parse(statement, on_error) => {
                    match wire.session.recv().await.map_err(broken)? {
                        Reply::ParseComplete => {
                            if let Some(s) = statement {
                                s.set_state(PARSED);
                            }
                            Ok(None)
                        }
                        Reply::Error(e) => {
                            if let Some(s) = statement {
                                s.set_state(UNPARSED);
                            }
                            skipping = true;
                            Err(on_error(server(e)))
                        }
                        other => return Err(out_of_protocol(&other)),
                    }
                }
                Request::Close => match wire.session.recv().await.map_err(broken)? {
                    Reply::CloseComplete => Ok(None),
                    Reply::Error(e) => {
                        skipping = true;
                        Err(ApplyError::Transaction {
                            step: "closing a prepared statement",
                            commit_lsn: String::new(),
                            source: server(e),
                        })
                    }
                    other => return Err(out_of_protocol(&other)),
                },
                Request::Bind => match wire.session.recv().await.map_err(broken)? {
                    Reply::BindComplete => Ok(None),
                    Reply::Error(e) => {
                        skipping = true;
                        // The Execute behind it explains the failure (its table and row).
                        match requests.pop_front() {
                            Some(Request::Execute(execute)) => {
                                Err(execute_error(execute, server(e)))
                            }
                            Some(other) => {
                                requests.push_front(other);
                                Err(ApplyError::Transaction {
                                    step: "binding a statement",
                                    commit_lsn: String::new(),
                                    source: server(e),
                                })
                            }
                            None => return Err(ApplyError::Misuse("a Bind without its Execute")),
                        }
                    }
                    other => return Err(out_of_protocol(&other)),
                },
                Request::Execute(execute) => {
                    let mut first_row = None;
                    loop {
                        match wire.session.recv().await.map_err(broken)? {
                            Reply::DataRow(values) => {
                                if first_row.is_none() {
                                    first_row = Some(values);
                                }
                            }
                            Reply::CommandComplete(tag) => {
                                break execute_answer(execute, &tag, first_row.take());
                            }
                            Reply::EmptyQuery => break execute_answer(execute, "", None),
                            Reply::Error(e) => {
                                skipping = true;
                                break Err(execute_error(execute, server(e)));
                            }
                            other => return Err(out_of_protocol(&other)),
                        }
                    }
                }
                Request::Commit(on_error) => {
                    // A simple query inside the window: several results, then ReadyForQuery.
                    // An error here does not make green skip to the Sync.
                    let mut last = None;
                    let mut committed = false;
                    let mut failed = None;
                    loop {
                        match wire.session.recv().await.map_err(broken)? {
                            Reply::DataRow(values) => last = values.into_iter().next().flatten(),
                            Reply::CommandComplete(tag) => committed |= tag == "COMMIT",
                            Reply::ReadyForQuery(_) => break,
                            Reply::Error(e) => failed = Some(e),
                            Reply::RowDescription | Reply::EmptyQuery => {}
                            other => return Err(out_of_protocol(&other)),
                        }
                    }
                    match (failed, committed) {
                        (Some(e), _) => Err(on_error(server(e))),
                        (None, false) => Err(ApplyError::Misuse(
                            "green answered the pipelined COMMIT without committing",
                        )),
                        (None, true) => {
                            let text = last
                                .map(|v| String::from_utf8_lossy(&v).into_owned())
                                .unwrap_or_default();
                            match text.parse() {
                                Ok(lsn) => Ok(Some(Answer::Committed(lsn))),
                                Err(_) => Err(ApplyError::BadLsn { value: text }),
                            }
                        }
                    }
                }
                Request::Sync => {
                    expect_ready(wire).await.map_err(broken)?;
                    Ok(None)
                }
            };
            match outcome {
                Ok(Some(answer)) => answers.push(answer),
                Ok(None) => {}
                Err(e) => {
                    if first.is_none() {
                        first = Some(e);
                    }
                }
            }
        }
        wire.outstanding = false;
        if let Some(e) = first {
            // Only what was answered before the first failure counts (a later COMMIT cannot
            // have run: green skipped it, or it ran on an aborted transaction).
            return Err(e);
        }
        for answer in answers {
            self.record(answer);
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

impl std::fmt::Debug for Pipeline<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("in_flight", &self.in_flight())
            .field("depth", &self.depth)
            .field("rows", &self.rows)
            .finish()
    }
}
