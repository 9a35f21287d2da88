//! `verify`: proves that green holds what blue holds, at one consistent point L of blue, while
//! writes go on — down to the keys that differ.
//!
//! ```text
//!  green (sidecar running): control channel ─► arm: sync's commits wait
//!  blue: CREATE_REPLICATION_SLOT tmp TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT
//!          └─► L (consistent point) + snapshot Sb: exactly the transactions committed before L
//!  green (sidecar running): locate at L ─► sync commits what ends ≤ L, holds its next commit
//!          └─► BEGIN REPEATABLE READ; pg_export_snapshot() = Sg ─► release (pause: a few ms)
//!  green (no sidecar): the sync's slot is idle and holds no change for green before L that
//!          green's origins do not cover (peeked up to L) ─► Sg
//!
//!  planner (plain sessions, while the point above is taken): the tables' column mapping from
//!          both catalogs; each table's key ranges from blue's key index and planner estimate
//!          (no row scan for an integer key, see [`chunks`]); the plan recorded on green
//!          │ chunk queue
//!          ▼
//!  workers 1..N: (blue in Sb, green in Sg) per worker, the N pairs opened at once
//!          count + Σ hashtextextended(canonical row) per range, both sides at once
//!          mismatch ─► bisect the range (median key) down to ≤ 256 rows ─► (key, row hash)
//!          lists ─► each candidate key looked up on both sides: missing / extra / different
//!          keyless tables: one multiset (row hash → multiplicity)
//!          │ finished chunks ─► recorder: recorded on green in batches (blueshift.verify_chunk)
//!          ▼
//!  beside the workers, on a pair of its own (green in Sg, blue in Sb): foreign keys,
//!          NOT VALID checks, invalid indexes; sequences green ≥ blue
//!          ▼
//!  blueshift.verify_run: outcome equal | different | failed, L, differences
//! ```
//!
//! **One point.** See [`point`]: the transactions committed on blue before L are exactly those
//! whose commit record ends at or before L, which is what the sidecar compares
//! (`sync::hold`). Green's commits pause only from the moment the sidecar reaches L until
//! verify's snapshot is open; the pause is measured by the sidecar and reported.
//!
//! **Canonical rows.** Every verify session pins `DateStyle`, `IntervalStyle`, `TimeZone`,
//! `extra_float_digits`, `bytea_output`, `lc_monetary` and `client_encoding`, so a value prints
//! the same on 14–18. A row is `ROW(c1, …)::text` over the compared columns through the same
//! mapping as sync (renames; excluded and green-only columns left out; a blue column whose green
//! type differs cast to green's type on blue, so both print green's text form) — see [`plan`].
//! Hashing is server-side by default ([`Hashing::Server`]: `hashtextextended` of that text, 64
//! bits, summed in SQL): no row leaves a server unless a chunk differs, and the sum makes a
//! chunk's checksum a multiset hash, so keyless tables and duplicates are covered by the same
//! form. [`Hashing::Client`] (`--hashing client`) streams each chunk's canonical rows out (a
//! portal of the extended protocol: COPY takes no parameters for the key bounds) and sums their
//! xxh3-64 hashes here, as they arrive, on the worker's task — the same canonical bytes, so the
//! same answers. Both were measured side by side (`blueshift bench verify`, BENCHMARKS.md): the
//! server path is several times faster, because streaming makes each server format and send
//! every row, which costs it more than hashing it in place; hence the default. Rayon was not
//! used: the hashing itself is not where the streamed path's time goes.
//!
//! **Progress and metrics.** Workers count into backfill's [`Progress`]
//! ([`Progress::for_verify`]): the CLI draws it as bars or logs it every 10 s, and it feeds
//! verify's series in [`crate::metrics::verify`] (which also says which process exports what).
//!
//! **Resumable and recorded.** The chunk plan and every finished chunk are recorded on green
//! ([`record`]); `--resume` takes the last unfinished run and compares only the chunks it did not
//! finish, at a new L (each chunk's own L is recorded with it). Finished chunks are written in
//! batches — whatever finished while the recorder's previous write was in flight, one statement
//! and one commit each — so no worker waits for green's commit; a chunk counts as finished only
//! once its batch is committed, so a kill loses at most the results not yet committed, and
//! `--resume` compares those chunks again (each chunk is recorded exactly once). The run's
//! outcome, L and time are what cutover reads ([`last_run`]).
//!
//! **Where the time goes** (measured with `blueshift bench verify`, BENCHMARKS.md): the
//! comparison is the servers' CPU hashing rows; what comes before it is kept off its path —
//! the plan is made while the point is taken, the session pairs open at once, constraints and
//! sequences are checked beside the workers, and recording does not stall them.

mod chunks;
mod compare;
mod constraints;
mod plan;
mod point;
mod record;
mod sample;
mod workers;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use blueshift_applier::Mapping;
use blueshift_decoder::config::ConnectConfig;
use blueshift_decoder::connection::ReplicationError;
use blueshift_decoder::Lsn;

use crate::backfill::{Phase, Progress};
use crate::client::{ClientError, SqlError};
use crate::metrics::verify::LastVerify;
use crate::metrics::Metrics;
use crate::schema::{QualifiedName, SchemaError};

pub use record::{last_run, last_verify, VerifyRun};

/// What is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// Row counts and per-chunk checksums, bisected to the differing keys.
    Checksum,
    /// Row counts only.
    Counts,
}

/// Where a chunk's rows are hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hashing {
    /// On each server: `hashtextextended` of the canonical row, summed in SQL; two numbers per
    /// chunk cross the network.
    Server,
    /// Here: the canonical rows streamed out and hashed with xxh3 as they arrive.
    Client,
}

/// Everything `verify` needs, validated.
#[derive(Debug, Clone)]
pub struct VerifyConfig {
    /// Blue.
    pub source: ConnectConfig,
    /// Green.
    pub target: ConnectConfig,
    /// The publication on blue: the tables compared.
    pub publication: String,
    /// The sync's slot (its sidecar is asked to hold; its idle slot proves a quiet pair).
    pub slot: String,
    /// Only these tables (`name` or `schema.name`); all published when empty.
    pub tables: Vec<String>,
    /// Checksums or counts.
    pub depth: Depth,
    /// Where checksums are computed.
    pub hashing: Hashing,
    /// Rows per chunk.
    pub chunk_rows: u64,
    /// Connections per side.
    pub workers: usize,
    /// Random rows per table also compared column by column.
    pub sample: u64,
    /// Continue the last unfinished run.
    pub resume: bool,
    /// The declared column mapping, as sync applies it.
    pub mapping: Arc<Mapping>,
}

/// Why verify could not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A connection failed.
    #[error("could not connect to {side}")]
    Connect {
        /// `blue` or `green`.
        side: &'static str,
        /// Why.
        #[source]
        source: ClientError,
    },
    /// The replication connection to blue (the snapshot at L) failed.
    #[error("could not take blue's snapshot at a consistent point")]
    Replication(#[source] ReplicationError),
    /// A query failed.
    #[error("could not {what} on {side}")]
    Sql {
        /// `blue` or `green`.
        side: &'static str,
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: SqlError,
    },
    /// Reading the tables failed.
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// Sequences could not be read.
    #[error(transparent)]
    Sequence(#[from] crate::sequence::SequenceError),
    /// A published table green does not have.
    #[error(
        "table {table} is published on blue but green has no such table — create it on green \
         (blueshift migrate) or leave it out of the publication"
    )]
    GreenTableMissing {
        /// The table.
        table: QualifiedName,
    },
    /// A blue column green lacks and the mapping does not exclude.
    #[error(
        "column \"{column}\" of table {table} is on blue but green has no column \"{green}\" — \
         declare a rename or an exclusion (as for sync), or add the column on green"
    )]
    GreenColumnMissing {
        /// The table.
        table: QualifiedName,
        /// Blue's column.
        column: String,
        /// The green column it maps to.
        green: String,
    },
    /// `--tables` named a table the publication does not publish.
    #[error("table {name:?} is not published by publication \"{publication}\" on blue")]
    NotPublished {
        /// The name given.
        name: String,
        /// The publication.
        publication: String,
    },
    /// No consistent point could be established.
    #[error("{0}")]
    NoPoint(String),
    /// `--resume` without an unfinished run.
    #[error(
        "--resume: green records no unfinished verify run (blueshift.verify_run) — run verify \
         without --resume"
    )]
    NothingToResume,
    /// A verify worker failed.
    #[error("a verify worker ended abnormally")]
    Task(#[source] tokio::task::JoinError),
}

impl VerifyError {
    pub(crate) fn sql(
        side: &'static str,
        what: impl Into<String>,
        e: tokio_postgres::Error,
    ) -> Self {
        VerifyError::Sql {
            side,
            what: what.into(),
            source: e.into(),
        }
    }

    /// Whether running verify again may help (a lost connection, a server restarting).
    pub fn is_transient(&self) -> bool {
        match self {
            VerifyError::Connect { source, .. } => source.is_transient(),
            VerifyError::Sql { source, .. } => source.is_transient(),
            VerifyError::Replication(e) => crate::sync::replication_is_transient(e),
            _ => false,
        }
    }
}

/// How a difference shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DifferenceKind {
    /// On blue, not on green.
    MissingOnGreen,
    /// On green, not on blue (for a keyless table: one more copy on green).
    ExtraOnGreen,
    /// The same key, other values.
    Different,
    /// A constraint on green that apply did not check is violated (or an index is invalid).
    Constraint,
    /// A sequence on green is behind blue's.
    Sequence,
}

impl DifferenceKind {
    /// As printed.
    pub fn as_str(self) -> &'static str {
        match self {
            DifferenceKind::MissingOnGreen => "missing on green",
            DifferenceKind::ExtraOnGreen => "extra on green",
            DifferenceKind::Different => "different",
            DifferenceKind::Constraint => "constraint violated on green",
            DifferenceKind::Sequence => "sequence behind on green",
        }
    }
}

/// One difference, with the key and both rows (in their canonical text form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The table (or sequence).
    pub table: QualifiedName,
    /// What differs.
    pub kind: DifferenceKind,
    /// The key's values as text (`None` for a keyless table).
    pub key: Option<Vec<Option<String>>>,
    /// Blue's row.
    pub blue: Option<String>,
    /// Green's row.
    pub green: Option<String>,
    /// For constraints and sequences: which and why.
    pub detail: Option<String>,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.table, self.kind.as_str())?;
        if let Some(key) = &self.key {
            let key: Vec<&str> = key.iter().map(|k| k.as_deref().unwrap_or("NULL")).collect();
            write!(f, " key ({})", key.join(", "))?;
        }
        if let Some(detail) = &self.detail {
            write!(f, " — {detail}")?;
        }
        if let Some(blue) = &self.blue {
            write!(f, "\n    blue:  {blue}")?;
        }
        if let Some(green) = &self.green {
            write!(f, "\n    green: {green}")?;
        }
        Ok(())
    }
}

/// One table's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableReport {
    /// The table.
    pub table: QualifiedName,
    /// Rows on blue at L (in the chunks compared by this invocation).
    pub blue_rows: u64,
    /// Rows on green at L.
    pub green_rows: u64,
    /// Chunks compared by this invocation.
    pub chunks: u64,
    /// Chunks finished by an earlier invocation of a resumed run.
    pub chunks_resumed: u64,
    /// Differences found (rows; duplicates count each copy).
    pub differences: u64,
    /// Time spent on its chunks (summed over workers).
    pub time: Duration,
    /// Whether it has no key (compared as a multiset).
    pub keyless: bool,
}

/// How L was agreed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointMode {
    /// The running sidecar held green's next commit for `pause`.
    Sidecar {
        /// How long green's commits waited (measured by the sidecar).
        pause: Option<Duration>,
        /// Attempts needed (a new L when green had passed the last).
        attempts: u32,
    },
    /// No sidecar: the pair was proven quiet and caught up.
    Quiet,
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// The run's id in `blueshift.verify_run`.
    pub run_id: i64,
    /// Whether it continued an earlier run.
    pub resumed: bool,
    /// The consistent point.
    pub lsn: Lsn,
    /// How it was agreed.
    pub point: PointMode,
    /// Per table.
    pub tables: Vec<TableReport>,
    /// Every difference found by this invocation, up to [`MAX_REPORTED`] (the counts are exact).
    pub differences: Vec<Difference>,
    /// Differences in total, recorded chunks of a resumed run included.
    pub total_differences: u64,
    /// Of those, sequences behind on green (sync does not carry sequences; the cutover copies
    /// them during its pause, so its gate lets these through).
    pub sequences_behind: u64,
    /// Random rows compared column by column.
    pub sampled: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// Differences kept with their rows for the report; the count goes on past it.
pub const MAX_REPORTED: usize = 1000;

impl VerifyReport {
    /// Whether green equals blue.
    pub fn equal(&self) -> bool {
        self.total_differences == 0
    }

    /// The summary table and the differences, as text.
    pub fn to_text(&self) -> String {
        use fmt::Write as _;
        let mut out = String::new();
        let point = match self.point {
            PointMode::Sidecar { pause, attempts } => format!(
                "sidecar held green's commits for {}{}",
                pause.map_or_else(
                    || "an unknown time".to_owned(),
                    |p| format!("{:.1} ms", p.as_secs_f64() * 1000.0)
                ),
                if attempts > 1 {
                    format!(" (attempt {attempts})")
                } else {
                    String::new()
                }
            ),
            PointMode::Quiet => "quiet pair (no sync running, green caught up)".to_owned(),
        };
        let _ = writeln!(
            out,
            "verify run {}{} at {} — {point}",
            self.run_id,
            if self.resumed { " (resumed)" } else { "" },
            self.lsn
        );
        let width = self
            .tables
            .iter()
            .map(|t| t.table.to_string().chars().count())
            .max()
            .unwrap_or(5)
            .max(5);
        let _ = writeln!(
            out,
            "{:<width$}  {:>12}  {:>12}  {:>7}  {:>11}  {:>9}",
            "table", "blue rows", "green rows", "chunks", "differences", "time"
        );
        for t in &self.tables {
            let _ = writeln!(
                out,
                "{:<width$}  {:>12}  {:>12}  {:>7}  {:>11}  {:>8.2}s",
                t.table.to_string(),
                t.blue_rows,
                t.green_rows,
                t.chunks + t.chunks_resumed,
                t.differences,
                t.time.as_secs_f64()
            );
        }
        for d in &self.differences {
            let _ = writeln!(out, "{d}");
        }
        let _ = writeln!(
            out,
            "{} in {:.2}s: {} difference{}{}",
            if self.equal() { "equal" } else { "DIFFERENT" },
            self.elapsed.as_secs_f64(),
            self.total_differences,
            if self.total_differences == 1 { "" } else { "s" },
            if self.sequences_behind > 0 {
                format!(
                    " ({} of them sequences behind on green, which `blueshift cutover` copies)",
                    self.sequences_behind
                )
            } else {
                String::new()
            }
        );
        out
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        let (mode, pause_ms, attempts) = match self.point {
            PointMode::Sidecar { pause, attempts } => (
                "sidecar",
                pause.map(|p| p.as_secs_f64() * 1000.0),
                Some(attempts),
            ),
            PointMode::Quiet => ("quiet", None, None),
        };
        json!({
            "run_id": self.run_id,
            "resumed": self.resumed,
            "lsn": self.lsn.to_string(),
            "point": { "mode": mode, "pause_ms": pause_ms, "attempts": attempts },
            "equal": self.equal(),
            "differences_total": self.total_differences,
            "sequences_behind": self.sequences_behind,
            "sampled": self.sampled,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "tables": self.tables.iter().map(|t| json!({
                "table": t.table.to_string(),
                "schema": t.table.schema,
                "name": t.table.name,
                "blue_rows": t.blue_rows,
                "green_rows": t.green_rows,
                "chunks": t.chunks,
                "chunks_resumed": t.chunks_resumed,
                "differences": t.differences,
                "keyless": t.keyless,
                "time_s": t.time.as_secs_f64(),
            })).collect::<Vec<_>>(),
            "differences": self.differences.iter().map(|d| json!({
                "table": d.table.to_string(),
                "kind": d.kind.as_str(),
                "key": d.key,
                "blue": d.blue,
                "green": d.green,
                "detail": d.detail,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Session settings pinned on every verify session, so that a value prints the same on both
/// sides and on every major version 14–18.
pub(crate) const PINNED: &[(&str, &str)] = &[
    ("DateStyle", "ISO, YMD"),
    ("IntervalStyle", "postgres"),
    ("TimeZone", "UTC"),
    ("extra_float_digits", "1"),
    ("bytea_output", "hex"),
    ("lc_monetary", "C"),
    ("client_encoding", "UTF8"),
    ("row_security", "off"),
    ("statement_timeout", "0"),
    ("idle_in_transaction_session_timeout", "0"),
];

/// `'…'` with quotes doubled (for [`PINNED`]'s constants).
fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Opens a verify session on `side` with the settings pinned.
pub(crate) async fn connect(
    config: &ConnectConfig,
    side: &'static str,
) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), VerifyError> {
    let (client, conn) = crate::client::connect(config, "blueshift verify")
        .await
        .map_err(|source| VerifyError::Connect { side, source })?;
    // One round trip for all of them: a simple query of constants (the values are this file's,
    // quoted as literals).
    let calls: Vec<String> = PINNED
        .iter()
        .map(|(k, v)| {
            format!(
                "pg_catalog.set_config({}, {}, false)",
                quote_literal(k),
                quote_literal(v)
            )
        })
        .collect();
    client
        .batch_execute(&format!("SELECT {}", calls.join(", ")))
        .await
        .map_err(|e| VerifyError::sql(side, "pin the session's settings", e))?;
    Ok((client, conn))
}

/// Runs one verification (see the module docs). Differences are a result, not an error; the
/// outcome is recorded on green either way (`failed` when this returns an error after the run
/// was recorded).
pub async fn run(config: &VerifyConfig) -> Result<VerifyReport, VerifyError> {
    run_with(config, &Progress::for_verify(Metrics::for_verify())).await
}

/// [`run`], counting rows and chunks into `progress` (made by [`Progress::for_verify`]) and
/// verify's series into its metrics: rows and differences as chunks finish, the latest run's
/// gauges from green's records when it starts and from its own outcome when it ends.
pub async fn run_with(
    config: &VerifyConfig,
    progress: &Arc<Progress>,
) -> Result<VerifyReport, VerifyError> {
    let started = Instant::now();
    let (records, records_conn) = connect(&config.target, "green").await?;
    let records = Arc::new(records);
    if !record::in_place(&records).await? {
        record::ensure(&records).await?;
    }
    // Pipelined on the one session.
    let (last, control) = tokio::join!(last_verify(&records), crate::control::ensure(&records));
    match last {
        Ok(last) => progress.metrics().set_last_verify(last),
        Err(e) => tracing::debug!(error = %e, "could not read the latest verify run"),
    }
    control.map_err(|e| {
        VerifyError::sql(
            "green",
            "create the control table (blueshift.control_hold)",
            e,
        )
    })?;
    let resumed = if config.resume {
        Some(
            record::unfinished(&records)
                .await?
                .ok_or(VerifyError::NothingToResume)?,
        )
    } else {
        None
    };
    let run_id = match resumed {
        Some(id) => id,
        None => record::start(&records, config).await?,
    };
    tracing::info!(
        run = run_id,
        resumed = resumed.is_some(),
        "verify run recorded"
    );
    let result = run_recorded(
        config,
        &records,
        run_id,
        resumed.is_some(),
        started,
        progress,
    )
    .await;
    progress.set_phase(Phase::Done);
    match &result {
        Ok(report) => {
            record::finish(
                &records,
                run_id,
                Some(report.lsn),
                if report.equal() { "equal" } else { "different" },
                Some((report.total_differences, report.sequences_behind)),
            )
            .await?;
            let previous = progress.metrics().verify_snapshot().last;
            progress.metrics().set_last_verify(Some(LastVerify {
                outcome: if report.equal() { "equal" } else { "different" }.to_owned(),
                differences: report.total_differences,
                at: Some(SystemTime::now()),
                verified_lsn: if report.equal() {
                    Some(report.lsn.0)
                } else {
                    previous.and_then(|l| l.verified_lsn)
                },
            }));
        }
        Err(e) => {
            tracing::error!(run = run_id, error = %e, "verify failed");
            let previous = progress.metrics().verify_snapshot().last;
            progress.metrics().set_last_verify(Some(LastVerify {
                outcome: "failed".to_owned(),
                differences: 0,
                at: Some(SystemTime::now()),
                verified_lsn: previous.and_then(|l| l.verified_lsn),
            }));
            if let Err(e2) = record::finish(&records, run_id, None, "failed", None).await {
                tracing::warn!(run = run_id, error = %e2, "could not record the failed run");
            }
        }
    }
    crate::client::close_shared(records, records_conn).await;
    result
}

async fn run_recorded(
    config: &VerifyConfig,
    records: &Arc<tokio_postgres::Client>,
    run_id: i64,
    resumed: bool,
    started: Instant,
    progress: &Arc<Progress>,
) -> Result<VerifyReport, VerifyError> {
    // A new run is its first invocation (the column's default).
    let invocation = if resumed {
        record::invocation(records, run_id).await?
    } else {
        1
    };
    // The tables, their canonical forms and their chunks (from both catalogs, on sessions of
    // their own: the plan is recorded in a transaction) while the consistent point is taken.
    let prepare = async {
        let ((blue, blue_conn), (green, green_conn)) = tokio::try_join!(
            connect(&config.source, "blue"),
            connect(&config.target, "green")
        )?;
        let prepared = async {
            let plans = plan::tables(&blue, &green, config).await?;
            let chunks = chunks::plan_all(&blue, &green, &plans, config, run_id, resumed).await?;
            Ok::<_, VerifyError>((plans, chunks))
        }
        .await;
        crate::client::close(blue, blue_conn).await;
        crate::client::close(green, green_conn).await;
        prepared
    };
    let (prepared, point) = tokio::join!(prepare, point::take(config, records));
    let (plans, chunks) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => {
            if let Ok(point) = point {
                point.close().await;
            }
            return Err(e);
        }
    };
    let point = point?;
    let plans = Arc::new(plans);
    tracing::info!(
        run = run_id,
        tables = plans.len(),
        chunks = chunks.iter().map(|t| t.chunks.len()).sum::<usize>(),
        "planned"
    );
    tracing::info!(run = run_id, lsn = %point.lsn, mode = ?point.mode, "consistent point taken");
    // The comparison, and beside it on a pair of its own what apply does not check (foreign
    // keys, constraints, indexes) and sequences, in the same snapshots.
    let compared = async {
        record::set_lsn(records, run_id, point.lsn).await?;
        let outcome = workers::run(
            config, &plans, chunks, &point, records, run_id, invocation, progress,
        )
        .await?;
        progress.set_phase(Phase::Checking);
        Ok(outcome)
    };
    let result = tokio::try_join!(compared, constraints::check(config, &plans, &point));
    let (lsn, mode) = (point.lsn, point.mode);
    point.close().await;
    let (outcome, extra) = result?;
    let compare::Outcome {
        mut tables,
        mut differences,
        mut total,
        sampled,
    } = outcome;
    let mut sequences_behind = 0;
    for d in extra {
        total += 1;
        if d.kind == DifferenceKind::Sequence {
            sequences_behind += 1;
        }
        progress.metrics().verify_differences(1);
        if let Some(t) = tables.iter_mut().find(|t| t.table == d.table) {
            t.differences += 1;
        }
        if differences.len() < MAX_REPORTED {
            differences.push(d);
        }
    }
    tables.sort_by(|a, b| a.table.cmp(&b.table));
    Ok(VerifyReport {
        run_id,
        resumed,
        lsn,
        point: mode,
        tables,
        differences,
        total_differences: total,
        sequences_behind,
        sampled,
        elapsed: started.elapsed(),
    })
}
