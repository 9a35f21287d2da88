//! `sync`: keeps green caught up with blue, exactly once, whatever crashes.
//!
//! This module only wires the stages together; the work is in the crates and modules it wires.
//!
//! ```text
//!  blue ──WAL──► ReplicationStream ──► PgOutputDecoder ──► TxAssembler ──► Scheduler
//!                  ▲ (decoder)            (decoder)       (assembler,      (writesets,
//!                  │                                       spills to disk)  commit order)
//!                  │                                                           │ bounded job queue
//!                  │ flushed = end of the last transaction                     ▼
//!                  └──────────── committed on green, in order ◄──── appliers 0..N (applier crate)
//!                                                                              │
//!                                                                              ▼
//!                                                                            green
//! ```
//!
//! - One reader task ([`reader`]) owns the stream, the decoder, the assembler and the scheduler.
//! - N applier tasks ([`worker`]) share one bounded job queue: a slow green fills it and the
//!   reader stops reading. Memory is one budget (`--max-txn-memory`,
//!   [`MemoryBudget`]): every in-flight transaction — being assembled, queued, being applied —
//!   holds the real bytes of its changes of it, and when it is used up the assembler spills and
//!   the reader waits for the appliers, so memory stays bounded by configuration.
//! - Each applier has its own replication origin on green (`blueshift_<slot>_<n>`), set up in
//!   every transaction it applies. On start, the maximum of their progress is the last
//!   transaction green holds: streaming resumes there and anything at or before it is skipped.
//! - The slot is told *flushed* only up to the end of the last transaction committed on green in
//!   order **and flushed to green's disk** ([`durability`]: the appliers commit with
//!   `synchronous_commit = off`, as native apply does, and green's flush position is tracked),
//!   and only once green has recorded that position in the slot guard ([`acknowledge`]).
//! - The slot is resumed only if it is the one blueshift left, where it left it ([`slot`],
//!   [`crate::slot_guard`]); standby status goes out within a third of blue's
//!   `wal_sender_timeout`, whatever the appliers are blocked on.
//!
//! Transient errors (a connection lost, blue or green restarting) end the attempt; [`run`]
//! reconnects with backoff and resumes from green's durable position. A change green cannot
//! take as it is does not stop sync either — it waits, holding the line, until the operator
//! fixes green: a relation description from blue that green cannot take losslessly is held by
//! the reader before it is scheduled ([`reader`]), and a change green refuses when applied (a
//! value too long, a foreign key forbidding a TRUNCATE: [`ApplyError::is_blocked`]) ends the
//! attempt with nothing after it committed, and is tried again every few seconds from green's
//! durable position ([`SyncError::is_blocked`]). Both log what they wait for and the fix, and set
//! the `blueshift_blocked` gauge. Other definite errors stop.

mod acknowledge;
mod background;
pub mod direction;
mod durability;
pub mod heartbeat;
mod hold;
pub mod identity;
mod loaded;
mod monitor;
mod order;
pub(crate) mod preflight;
mod reader;
mod scheduler;
mod slot;
pub mod spool;
mod streamed;
mod verified;
mod worker;
mod writeset;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use blueshift_applier::conflict::{ConflictOptions, Resolution, Side as ConflictSide};
use blueshift_applier::{
    Applier, ApplierOptions, ApplyError, ErrorClass, Mapping, SynchronousCommit,
};
use blueshift_decoder::config::ConnectConfig;
use blueshift_decoder::connection::ReplicationError;
use blueshift_decoder::pgoutput::{DecodeError, PgOutputDecoder, ProtocolVersion};
use blueshift_decoder::Lsn;
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinSet;

use crate::assembler::{AssembleError, AssemblerOptions, MemoryBudget, TxAssembler};
use crate::backfill::{self, BackfillError, BackfillOptions, Progress};
use crate::client;
use crate::metrics::Metrics;
use crate::slot_guard::SlotError;
use crate::status::Side;
use background::Background;
use order::CommitOrder;
use scheduler::Scheduler;
use writeset::KeyCatalog;

pub use blueshift_applier::conflict::{Policies, Policy};
pub use preflight::{PreflightError, PUBLICATION_COMMENT};

/// The prefix of every replication origin blueshift creates; transactions that arrive on blue
/// with such an origin were applied by blueshift and are not sent back.
pub const ORIGIN_PREFIX: &str = "blueshift_";

/// The slot (and publication) name when none is given.
pub const DEFAULT_SLOT: &str = "blueshift";

/// Everything `sync` needs, validated.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Blue.
    pub source: ConnectConfig,
    /// Green.
    pub target: ConnectConfig,
    /// The publication on blue.
    pub publication: String,
    /// Create the publication when it does not exist: `None` = never; `Some(empty)` = for all
    /// tables; `Some(list)` = for those tables (`table` or `schema.table`).
    pub create_publication: Option<Vec<String>>,
    /// Ask blue for values in binary. Preflight refuses it unless every published column has
    /// the same built-in type on green.
    pub binary: bool,
    /// The logical replication slot on blue.
    pub slot: String,
    /// Number of appliers (connections to green).
    pub workers: usize,
    /// Transactions queued for the appliers at most.
    pub queue_capacity: usize,
    /// The one memory budget of in-flight transactions, in the real bytes their decoded
    /// changes hold: being assembled, queued for the appliers and being applied together
    /// ([`MemoryBudget`]). Past it the largest open transaction spills to disk as it arrives,
    /// and reading waits for the appliers, so memory stays bounded by this whatever the
    /// transaction or table sizes.
    pub max_txn_memory: usize,
    /// Where spill files go.
    pub spill_dir: PathBuf,
    /// How often standby status goes to blue.
    pub status_interval: Duration,
    /// How long a transaction waits for its commit turn, holding its locks, before it rolls
    /// back and re-runs after the head of line.
    pub turn_timeout: Duration,
    /// First and longest wait between reconnection attempts.
    pub backoff: (Duration, Duration),
    /// The initial copy of blue's rows (see [`crate::backfill`]).
    pub backfill: BackfillOptions,
    /// The declared column mapping (renames, exclusions, accepted lossy casts), for the plan
    /// checked at preflight, the stream's Relation messages and the appliers.
    pub mapping: Arc<Mapping>,
    /// Two-way sync: arm the reverse direction (green → blue) once the forward one streams
    /// (see [`direction`]). Without it, the reverse direction runs only when armed by another
    /// (`blueshift cutover`).
    pub bidirectional: bool,
    /// Two-way mode's conflict handling (see [`blueshift_applier::conflict`]).
    pub conflicts: ConflictSettings,
    /// Fold catch-up groups per key and apply them as set statements (`--fold`, see
    /// `blueshift_applier`'s `fold` module); off: row by row in blue's order.
    pub fold: bool,
    /// The spool's limit in bytes (`--spool-limit`, see [`spool`]): while green is down, blue's
    /// stream is read into a local file of at most this size and applied once green is back.
    /// 0: no spool (a green outage ends the attempt, and blue is read again from green's
    /// position once it is back).
    pub spool_limit: u64,
    /// Apply a transaction blue streams while it is in progress as its blocks arrive, on a
    /// connection of its own, committed at its turn (`--stream-apply`, see [`streamed`]); off:
    /// applied from its spill after its commit.
    pub stream_apply: bool,
    /// At most this many streamed transactions applied at once (`--stream-apply-max`), each on
    /// an applier of its own; the others go the spill path.
    pub stream_apply_max: usize,
    /// Apply over the applier's own protocol session, one Sync per window
    /// (`--pipelined-apply`, see `blueshift_applier`'s `wire` module); off: over
    /// tokio-postgres, one Sync per statement.
    pub pipelined_apply: bool,
}

/// The default of [`SyncConfig::stream_apply_max`].
pub const DEFAULT_STREAM_APPLY_MAX: usize = streamed::DEFAULT_MAX;

/// How two-way sync resolves conflicts, and since when it runs.
#[derive(Debug, Clone, Default)]
pub struct ConflictSettings {
    /// The policy of each table, else the global one (`stop` unless declared).
    pub policies: Arc<Policies>,
    /// When two-way mode began (the reverse direction's `armed_at`), microseconds since the
    /// Unix epoch, 0 until it is armed: set by the sidecar, read by every applier.
    pub since: Arc<std::sync::atomic::AtomicI64>,
    /// How to keep the two sides' sequences apart (`--sequence-strategy`), applied once the
    /// reverse direction is armed; `None`: only named by preflight.
    pub sequence_strategy: Option<crate::sequence::two_way::Strategy>,
}

impl ConflictSettings {
    /// Two-way mode began at `at` (the reverse direction's `armed_at`).
    pub(crate) fn armed(&self, at: std::time::SystemTime) {
        let micros = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
        self.since
            .store(micros.max(1), std::sync::atomic::Ordering::Release);
    }
}

/// Why sync stopped.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A preflight check failed.
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    /// The replication connection to blue failed.
    #[error("replication from blue failed")]
    Source(#[source] ReplicationError),
    /// Blue ended the replication stream.
    #[error("blue ended the replication stream")]
    SourceEnded,
    /// A payload could not be decoded.
    #[error("could not decode the pgoutput message at {lsn}")]
    Decode {
        /// Where the frame starts.
        lsn: Lsn,
        /// Why.
        #[source]
        source: DecodeError,
    },
    /// Another process holds this sync's spill folder.
    #[error(
        "another blueshift sync on this host, of slot \"{slot}\" between the same databases, uses \
         the spill folder (it holds {lock:?}): the two would remove and overwrite each other's \
         spill files — stop the other one, or give this one its own --spill-dir"
    )]
    SpillInUse {
        /// The slot.
        slot: String,
        /// The lock file.
        lock: PathBuf,
    },
    /// The spill folder's lock could not be taken.
    #[error("cannot lock {lock:?}, beside the spill folder — choose another with --spill-dir")]
    SpillLock {
        /// The lock file.
        lock: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The message sequence could not be assembled into transactions.
    #[error("could not assemble the transaction at {lsn}")]
    Assemble {
        /// Where the frame starts.
        lsn: Lsn,
        /// Why.
        #[source]
        source: AssembleError,
    },
    /// A transaction could not be applied to green.
    #[error("could not apply transaction #{seq} to green")]
    Apply {
        /// Its number in this run.
        seq: u64,
        /// Why.
        #[source]
        source: ApplyError,
    },
    /// An applier could not start on green.
    #[error("could not start the applier with replication origin \"{origin}\" on green")]
    ApplierSetup {
        /// Its origin.
        origin: String,
        /// Why.
        #[source]
        source: ApplyError,
    },
    /// Green's unique indexes could not be read.
    #[error(transparent)]
    KeyCatalog(#[from] writeset::KeyCatalogError),
    /// A relation description from blue could not be checked against green's table.
    #[error("could not check blue's definition of table \"{table}\" against green")]
    RelationCheck {
        /// The table, `schema.name`.
        table: String,
        /// Why.
        #[source]
        source: crate::schema::SchemaError,
    },
    /// A SQL connection to blue or green failed.
    #[error("{what}")]
    Sql {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: client::ClientError,
    },
    /// A connection to green failed.
    #[error("{what}")]
    Green {
        /// What was being done.
        what: &'static str,
        /// Why.
        #[source]
        source: tokio_postgres::Error,
    },
    /// Every applier stopped.
    #[error("the appliers stopped")]
    AppliersGone,
    /// The connection to green closed (green stopped, or the network failed).
    #[error("lost the connection to green")]
    GreenClosed,
    /// A task panicked or was cancelled.
    #[error("a sync task ended abnormally")]
    Task(#[source] tokio::task::JoinError),
    /// The backfill failed.
    #[error("the backfill failed")]
    Backfill(#[source] BackfillError),
    /// A signal stopped sync before its work was done; running it again resumes.
    #[error(
        "{during} was interrupted by a signal: {state} — run the same command again to resume"
    )]
    Interrupted {
        /// What was running: `sync` (before streaming started), `the backfill`.
        during: &'static str,
        /// What the interruption left behind.
        state: &'static str,
    },
    /// Blue's stream carries a change to a table green does not hold the rows of: one added to
    /// the publication while sync ran. Sync copies it (see `backfill::start`) and goes on.
    #[error(
        "table {table} was added to the publication while sync ran: its existing rows must be \
         copied before its changes are applied"
    )]
    TableAdded {
        /// The table.
        table: crate::schema::QualifiedName,
    },
    /// The slot is not the one blueshift left, or not usable (see [`crate::slot_guard`]).
    #[error(transparent)]
    Slot(#[from] SlotError),
    /// A loaded table on blue is not the table green was loaded from any more (see
    /// [`identity`]): green has forgotten that it holds it.
    #[error(
        "green no longer follows blue for every table of publication \"{publication}\": {changed}. \
         Green has forgotten that it holds these tables (their rows stay): TRUNCATE each on \
         green, then start sync again — it copies them afresh from blue. To stop migrating a \
         table instead, leave it out of the publication and keep or drop green's copy knowingly"
    )]
    SourceChanged {
        /// The tables and what happened to each.
        changed: identity::Changed,
        /// The publication.
        publication: String,
    },
    /// Reading or recording the loaded tables' identities failed.
    #[error("could not {what} on {side}")]
    Identity {
        /// What was being done.
        what: &'static str,
        /// `blue` or `green`.
        side: &'static str,
        /// Why.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The reverse direction (green → blue) stopped with this error.
    #[error("the reverse direction (green → blue) stopped")]
    Reverse(#[source] Box<SyncError>),
    /// The reverse direction is armed but the forward one declares a column mapping.
    #[error(
        "the reverse direction of slot \"{slot}\" is armed, but sync declares a column mapping \
         (renames, exclusions or lossy casts) that cannot be applied backwards — run sync without \
         the mapping, or disarm the reverse direction (blueshift finalize)"
    )]
    ReverseMapping {
        /// The forward slot.
        slot: String,
    },
    /// Arming or disarming the reverse direction failed.
    #[error(transparent)]
    Direction(#[from] direction::DirectionError),
    /// The spool could not be written or read (see [`spool`]).
    #[error(transparent)]
    Spool(#[from] spool::SpoolError),
    /// The spool to replay turned out not to fit the stream just opened: it was removed, and
    /// the next attempt streams from green's position.
    #[error("the spool did not fit blue's stream ({why}); it was discarded")]
    SpoolMismatch {
        /// Why.
        why: String,
    },
}

impl SyncError {
    fn apply(seq: u64, source: ApplyError) -> SyncError {
        SyncError::Apply { seq, source }
    }

    /// Whether reconnecting and resuming may help: a lost connection, a server restarting,
    /// a serialization failure. Everything else needs an operator.
    pub fn is_transient(&self) -> bool {
        match self {
            SyncError::Source(e) => replication_is_transient(e),
            SyncError::Backfill(e) => e.is_transient(),
            SyncError::SourceEnded | SyncError::GreenClosed => true,
            SyncError::Apply { source, .. } | SyncError::ApplierSetup { source, .. } => {
                source.is_transient()
            }
            SyncError::Sql { source, .. } => source.is_transient(),
            SyncError::KeyCatalog(_) | SyncError::Green { .. } => true,
            SyncError::Slot(e) => e.is_transient(),
            // A lost connection, not a server's refusal.
            SyncError::Identity { source, .. } => source.as_db_error().is_none(),
            SyncError::Reverse(e) => e.is_transient(),
            SyncError::Direction(e) => e.is_transient(),
            SyncError::SpoolMismatch { .. } => true,
            SyncError::RelationCheck {
                source: crate::schema::SchemaError::Query { source, .. },
                ..
            } => source.is_transient(),
            _ => false,
        }
    }

    /// Whether green refuses a change as it is and an operator can fix green while sync waits
    /// (see [`ApplyError::is_blocked`]): sync then retries instead of stopping.
    pub fn is_blocked(&self) -> bool {
        match self {
            SyncError::Apply { source, .. } => source.is_blocked(),
            SyncError::Reverse(e) => e.is_blocked(),
            _ => false,
        }
    }
}

/// Whether a replication connection error may go away by reconnecting.
pub(crate) fn replication_is_transient(e: &ReplicationError) -> bool {
    e.is_io()
        || matches!(
            e,
            ReplicationError::Closed { .. }
                | ReplicationError::Connect { .. }
                | ReplicationError::NoSuitableHost { .. }
        )
        || e.sqlstate()
            .is_some_and(|s| blueshift_applier::class_of_sqlstate(s) == ErrorClass::Transient)
}

/// How a sync run ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncSummary {
    /// Transactions scheduled in the last attempt.
    pub transactions: u64,
    /// Reconnections after transient errors.
    pub reconnects: u64,
    /// What the backfill did.
    pub backfill: crate::backfill::BackfillSummary,
}

/// Runs sync until `shutdown` completes (then drains what is in flight and returns) or a
/// definite error stops it. Transient errors reconnect with backoff.
pub async fn run(
    config: SyncConfig,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<SyncSummary, SyncError> {
    let progress = Progress::new(metrics.clone());
    let logger = progress.log_periodically(Duration::from_secs(10));
    let result = run_with_progress(config, metrics, &progress, shutdown).await;
    logger.abort();
    result
}

/// [`run`], reporting the backfill's progress to `progress` (and nowhere else).
pub async fn run_with_progress(
    config: SyncConfig,
    metrics: Metrics,
    progress: &Arc<Progress>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<SyncSummary, SyncError> {
    let shutdown = shutdown_signal(shutdown);
    let mut config = config;
    // Who holds the slot, for a second sync refused at preflight (and in pg_stat_activity).
    let name = format!(
        "blueshift sync {} (pid {} on {})",
        config.slot,
        std::process::id(),
        hostname()
    );
    config.source.set_fallback_application_name(name);
    let result = if config.backfill.only {
        run_stages(config, metrics.clone(), progress, shutdown).await
    } else {
        // The reverse direction, green → blue, runs beside it whenever it is armed.
        let forward = |shutdown| run_stages(config.clone(), metrics.clone(), progress, shutdown);
        direction::sidecar::with_reverse(&config, &metrics, shutdown, forward).await
    };
    metrics.set_up(false);
    result
}

/// The assembler's folder under `--spill-dir`: one per slot and pair of databases, so that two
/// migrations on one host that use the same slot name never share one.
fn spill_folder(config: &SyncConfig) -> PathBuf {
    let pair = format!("{}\n{}", config.source, config.target);
    config.spill_dir.join(format!(
        "blueshift_spill_{}_{:016x}",
        config.slot,
        xxhash_rust::xxh3::xxh3_64(pair.as_bytes())
    ))
}

/// This machine's name (for `application_name`), or `unknown host`.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown host".to_owned())
}

/// What an interrupted backfill leaves behind.
const BACKFILL_INTERRUPTED: &str = "green's tables are partly loaded (their indexes not yet \
    rebuilt) and every finished chunk is recorded; the next run copies only the unfinished ones";

async fn run_stages(
    config: SyncConfig,
    metrics: Metrics,
    progress: &Arc<Progress>,
    shutdown: Shutdown,
) -> Result<SyncSummary, SyncError> {
    let before_streaming = SyncError::Interrupted {
        during: "sync",
        state: "it had not started streaming, and nothing was changed",
    };
    let claim = || {
        let mut lock = spill_folder(&config).into_os_string();
        lock.push(".lock");
        let lock = PathBuf::from(lock);
        crate::assembler::spill::claim(&lock)
            .map_err(|source| SyncError::SpillLock {
                lock: lock.clone(),
                source,
            })?
            .ok_or_else(|| SyncError::SpillInUse {
                slot: config.slot.clone(),
                lock,
            })
    };
    loop {
        // A signal during the preflight's connects and queries stops at once.
        let checked = tokio::select! {
            biased;
            () = shutdown.clone().wait() => return Err(before_streaming),
            checked = preflight::check(&config) => checked,
        };
        let Err(refused) = checked else { break };
        // Started (again, after a crash) while green is down and the slot exists: blue is read
        // into the spool until green answers, then preflight runs again.
        let green_down = matches!(&refused, PreflightError::Connect { side: "green", .. });
        if !(green_down && config.spool_limit > 0 && !spool::green_answers(&config).await) {
            return Err(refused.into());
        }
        tracing::warn!(error = %error_chain(&refused), "green does not answer at start");
        let spooled = {
            let _spill = claim()?;
            spool::spool_while_green_down(&config, &metrics, &shutdown).await?
        };
        if shutdown.fired() {
            return Err(before_streaming);
        }
        if !spooled {
            // Nothing to spool from (no slot yet): as without a spool, green must be up.
            return Err(refused.into());
        }
    }
    // Held until sync ends: one sync per spill folder on this host.
    let _spill = claim()?;
    let mut summary = SyncSummary::default();
    backfill_until_done(&config, &metrics, progress, &shutdown, &mut summary).await?;
    if shutdown.fired() {
        return Err(before_streaming);
    }
    if config.backfill.only {
        return Ok(summary);
    }
    // The table the last attempt stopped at, added to the publication (see `loaded`).
    let mut added: Option<crate::schema::QualifiedName> = None;
    let mut wait = config.backoff.0;
    let mut blocked_wait = BLOCKED_RETRY_FIRST;
    loop {
        let started = std::time::Instant::now();
        let streaming = std::sync::atomic::AtomicBool::new(false);
        // A signal while the attempt connects drops it at once; once it streams, it drains
        // what is in flight itself.
        let is_streaming = || streaming.load(std::sync::atomic::Ordering::Acquire);
        let result = tokio::select! {
            result = attempt(&config, &direction::Direction::Forward, &metrics, shutdown.clone(), None, &streaming) => result,
            () = unless(&shutdown, is_streaming) => Ok(0),
        };
        metrics.set_connected(Side::Blue, false);
        metrics.set_connected(Side::Green, false);
        if result.is_err() || !is_streaming() {
            metrics.lag().down(std::time::SystemTime::now());
        }
        if started.elapsed() > config.backoff.1 {
            // It ran well for a while: the next failure starts the backoff afresh.
            wait = config.backoff.0;
            blocked_wait = BLOCKED_RETRY_FIRST;
        }
        match result {
            Ok(transactions) => {
                summary.transactions = transactions;
                return Ok(summary);
            }
            Err(SyncError::TableAdded { table }) if !shutdown.fired() => {
                // The same table again right after the backfill: it is not published any more,
                // so the backfill could not copy it.
                if added.as_ref() == Some(&table) {
                    metrics.error(ErrorClass::Definite);
                    return Err(SyncError::Backfill(BackfillError::NotPublished {
                        table,
                        publication: config.publication.clone(),
                    }));
                }
                tracing::info!(table = %table, "table was added to the publication: copying its rows before applying its changes");
                added = Some(table);
                backfill_until_done(&config, &metrics, progress, &shutdown, &mut summary).await?;
                wait = config.backoff.0;
            }
            Err(SyncError::TableAdded { .. }) => return Ok(summary),
            Err(e) if e.is_transient() && !shutdown.fired() => {
                // Green down: blue's stream goes on into the spool until it is back.
                if config.spool_limit > 0 && !spool::green_answers(&config).await {
                    metrics.error(ErrorClass::Transient);
                    tracing::warn!(error = %error_chain(&e), "sync interrupted: green does not answer");
                    match spool::spool_while_green_down(&config, &metrics, &shutdown).await {
                        // A signal while spooling: nothing is in flight on green.
                        Ok(true) if shutdown.fired() => return Ok(summary),
                        Ok(true) => {
                            summary.reconnects += 1;
                            wait = config.backoff.0;
                            continue;
                        }
                        Ok(false) => {}
                        Err(e) if e.is_transient() => {
                            tracing::warn!(error = %error_chain(&e), "spooling blue's stream stopped");
                        }
                        Err(e) => {
                            metrics.error(ErrorClass::Definite);
                            return Err(e);
                        }
                    }
                }
                let what = "sync interrupted; reconnecting";
                if !back_off(&e, what, &mut wait, &config, &metrics, &shutdown).await {
                    return Ok(summary);
                }
                summary.reconnects += 1;
            }
            Err(e) if e.is_blocked() && !shutdown.fired() => {
                if !wait_for_green(&e, &mut blocked_wait, &metrics, &shutdown).await {
                    return Ok(summary);
                }
                summary.reconnects += 1;
            }
            Err(e) => {
                metrics.error(ErrorClass::Definite);
                count_conflict_stop(&e, &metrics);
                return Err(e);
            }
        }
    }
}

/// Completes when shutdown is requested while `busy` is false (checked when the request
/// comes); pends forever when the work in progress handles shutdown itself.
async fn unless(shutdown: &Shutdown, busy: impl Fn() -> bool) {
    shutdown.clone().wait().await;
    if busy() {
        std::future::pending::<()>().await;
    }
}

/// The backfill (see [`backfill::run`]), resumed after transient failures: each retry takes a
/// new snapshot and copies only what is unfinished. While it copies, a signal lets the chunks in
/// hand finish; in any other step (connecting, planning, rebuilding indexes) the step is dropped
/// at once and the next run resumes it, as after a crash. Either way it ends with
/// [`SyncError::Interrupted`].
async fn backfill_until_done(
    config: &SyncConfig,
    metrics: &Metrics,
    progress: &Arc<Progress>,
    shutdown: &Shutdown,
    summary: &mut SyncSummary,
) -> Result<(), SyncError> {
    let interrupted = || SyncError::Interrupted {
        during: "the backfill",
        state: BACKFILL_INTERRUPTED,
    };
    let mut wait = config.backoff.0;
    loop {
        let run = backfill::run(
            config,
            &config.backfill,
            metrics,
            progress,
            shutdown.clone().wait(),
        );
        let copying = || progress.phase() == backfill::Phase::Copying;
        let result = tokio::select! {
            result = run => result,
            () = unless(shutdown, copying) => return Err(interrupted()),
        };
        match result {
            Ok(done) => {
                if done.ran || !summary.backfill.ran {
                    summary.backfill = done;
                }
                return Ok(());
            }
            Err(BackfillError::Interrupted) => return Err(interrupted()),
            Err(e) if e.is_transient() && !shutdown.fired() => {
                let what = "backfill interrupted; resuming";
                if !back_off(&e, what, &mut wait, config, metrics, shutdown).await {
                    return Err(interrupted());
                }
                summary.reconnects += 1;
            }
            Err(e) => {
                metrics.error(ErrorClass::Definite);
                return Err(SyncError::Backfill(e));
            }
        }
    }
}

/// After a transient error: counts and logs it, waits `wait` (doubling it for next time, up to
/// the longest backoff); false when shutdown came during the wait.
async fn back_off(
    e: &(dyn std::error::Error + Send + Sync),
    what: &'static str,
    wait: &mut Duration,
    config: &SyncConfig,
    metrics: &Metrics,
    shutdown: &Shutdown,
) -> bool {
    metrics.error(ErrorClass::Transient);
    tracing::warn!(error = %error_chain(e), retry_in = ?*wait, "{what}");
    let slept = tokio::select! {
        () = tokio::time::sleep(*wait) => true,
        () = shutdown.clone().wait() => false,
    };
    *wait = (*wait * 2).min(config.backoff.1);
    slept
}

/// The first wait before retrying a change green refused; it doubles up to
/// [`BLOCKED_RETRY_MAX`].
const BLOCKED_RETRY_FIRST: Duration = Duration::from_secs(1);

/// The longest wait between two tries of a change green refused.
const BLOCKED_RETRY_MAX: Duration = Duration::from_secs(5);

/// After green refused a change an operator can fix there ([`SyncError::is_blocked`]): logs what
/// sync waits for and the fix (the error says both), sets the blocked gauge, and waits before the
/// change is tried again from green's durable position — nothing after it committed, since
/// commits go in blue's order. False when shutdown came during the wait.
async fn wait_for_green(
    e: &SyncError,
    wait: &mut Duration,
    metrics: &Metrics,
    shutdown: &Shutdown,
) -> bool {
    metrics.set_blocked(true);
    tracing::warn!(
        error = %error_chain(e),
        retry_in = ?*wait,
        "sync is blocked: green refuses a change, so nothing from it on is applied; waiting for \
         green to be fixed"
    );
    let slept = tokio::select! {
        () = tokio::time::sleep(*wait) => true,
        () = shutdown.clone().wait() => false,
    };
    *wait = (*wait * 2).min(BLOCKED_RETRY_MAX);
    slept
}

/// Applies blue's stream with one applier until every transaction committed before `until` is
/// on green: the catch-up after a resumed backfill, before the indexes it kept off are built.
pub(crate) async fn catch_up(
    config: &SyncConfig,
    metrics: &Metrics,
    until: Lsn,
) -> Result<(), SyncError> {
    let mut config = config.clone();
    config.workers = 1;
    // Never fired: the sender lives as long as the catch-up (a dropped sender would read as
    // fired at once).
    let (_never_fired, never) = tokio::sync::watch::channel(false);
    let never = Shutdown(never);
    let mut wait = config.backoff.0;
    let mut blocked_wait = BLOCKED_RETRY_FIRST;
    loop {
        let streaming = std::sync::atomic::AtomicBool::new(false);
        let forward = &direction::Direction::Forward;
        match attempt(
            &config,
            forward,
            metrics,
            never.clone(),
            Some(until),
            &streaming,
        )
        .await
        {
            Ok(_) => return Ok(()),
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %error_chain(&e), retry_in = ?wait, "catch-up interrupted; reconnecting");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(config.backoff.1);
            }
            Err(e) if e.is_blocked() => {
                wait_for_green(&e, &mut blocked_wait, metrics, &never).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// One connection to blue and N to green, until shutdown, an error, or (when `stop_at` is set)
/// every transaction committed before `stop_at` is applied.
///
/// Everything is connected first; `streaming` is set once the reader runs (until then, the
/// caller may drop the attempt when shutdown comes, and no task of it is left behind).
async fn attempt(
    config: &SyncConfig,
    direction: &direction::Direction,
    metrics: &Metrics,
    shutdown: Shutdown,
    stop_at: Option<Lsn>,
    streaming: &std::sync::atomic::AtomicBool,
) -> Result<u64, SyncError> {
    // What a backfill copied, each applier must not apply again; the tables green holds. (The
    // reverse direction copies nothing: it holds the tables of its publication.) Each loaded
    // table of the forward direction must still be the one green was loaded from (`identity`).
    let (fences, loaded, identities) =
        if let Some(tables) = direction::loaded(config, direction).await? {
            (Arc::default(), tables, std::collections::HashMap::new())
        } else {
            let (mut green, conn) = client::connect(&config.target, "blueshift sync")
                .await
                .map_err(|source| SyncError::Sql {
                    what: format!("could not connect to green ({})", config.target),
                    source,
                })?;
            let fences = backfill::fences(&green, &config.slot).await;
            let tables = backfill::loaded(&green, &config.slot).await;
            let checked = match &tables {
                Ok(tables) => Some(identity::check_at_start(config, &mut green, tables).await),
                Err(_) => None,
            };
            client::close(green, conn).await;
            let fences = fences.map_err(SyncError::Backfill)?;
            let tables = tables.map_err(SyncError::Backfill)?;
            let identities = checked.expect("checked when the tables were read")?;
            let relids = identities
                .iter()
                .map(|(t, i)| (t.clone(), i.relid))
                .collect();
            let loaded = loaded::Loaded::new(tables, relids, &config.slot, &config.publication);
            (Arc::new(fences), loaded, identities)
        };
    // Green: one applier per worker, each with its own origin; the maximum of their progress
    // is the last transaction green holds.
    let mut appliers = Vec::with_capacity(config.workers);
    let mut resume_after = Lsn::INVALID;
    for n in 0..config.workers {
        let mut options = ApplierOptions::new(direction.origin_name(&config.slot, n));
        options.fences = Arc::clone(&fences);
        // Durability is confirmed separately (sync::durability), as native apply does.
        options.synchronous_commit = SynchronousCommit::Off;
        options.mapping = Arc::clone(&config.mapping);
        options.fold = config.fold;
        options.wire = config.pipelined_apply;
        if config.bidirectional {
            options.conflicts = Some(conflict_options(config, direction));
        }
        let origin = options.origin_name.clone();
        let setup = |source| SyncError::ApplierSetup {
            origin: origin.clone(),
            source,
        };
        let mut applier = Applier::connect(&config.target, options)
            .await
            .map_err(setup)?;
        resume_after = resume_after.max(applier.origin_progress().await.map_err(setup)?);
        appliers.push(applier);
    }
    let (green, green_conn) = client::connect(&config.target, "blueshift sync")
        .await
        .map_err(|source| SyncError::Sql {
            what: format!("could not connect to green ({})", config.target),
            source,
        })?;
    // Every origin of the slot counts: streamed appliers committed under theirs.
    if *direction == direction::Direction::Forward {
        resume_after = resume_after.max(streamed::durable(&green, &config.slot).await?);
    }
    // Two-way conflicts compare row versions with the moment the reverse direction was armed:
    // known before the first change is applied (the sidecar sets it too when it arms).
    if config.bidirectional && *direction == direction::Direction::Forward {
        if let Ok(Some(row)) = direction::read_reverse(&green, &config.slot).await {
            config.conflicts.armed(row.armed_at);
        }
    }

    // Blue: the slot, checked against green's record of it (created when absent and nothing on
    // green depends on it), and the stream.
    let (mut guard_green, guard_conn) = client::connect(&config.target, "blueshift slot guard")
        .await
        .map_err(|source| SyncError::Sql {
            what: format!("could not connect to green ({})", config.target),
            source,
        })?;
    // The reverse slot is never created here (only when armed, where green equals blue).
    let in_use = resume_after != Lsn::INVALID
        || !fences.is_empty()
        || *direction != direction::Direction::Forward;
    // What blue sent while green was down (see `spool`): replayed first when it continues
    // green's position, and the live stream starts at its end.
    let replay = if *direction == direction::Direction::Forward && stop_at.is_none() {
        if config.spool_limit > 0 {
            let folder = spool::folder(&spill_folder(config));
            let recorded = crate::slot_guard::read(&guard_green, &config.slot)
                .await
                .map_err(|source| SyncError::Green {
                    what: "could not read the slot guard's record on green",
                    source,
                })?;
            let green_holds = recorded
                .as_ref()
                .map_or(resume_after, |r| r.acknowledged.max(resume_after));
            spool::prepare(
                &folder,
                green_holds,
                recorded.as_ref().map(|r| r.system_identifier.as_str()),
            )?
        } else {
            // Left as it is: a later run with a spool replays or discards it by the same rules.
            None
        }
    } else {
        None
    };
    let start_at = replay.as_ref().map_or(resume_after, |r| r.end);
    let slot::Opened {
        mut stream,
        record,
        blue_sql,
        blue_sql_conn,
        status_interval,
    } = slot::open(config, &mut guard_green, start_at, in_use).await?;
    if let Some(replay) = &replay {
        if replay.proto_version != stream.proto_version() {
            spool::discard(
                &spool::folder(&spill_folder(config)),
                "blue streams another protocol version now",
            );
            return Err(SyncError::SpoolMismatch {
                why: format!(
                    "its frames are in pgoutput version {}, blue streams version {}",
                    replay.proto_version,
                    stream.proto_version()
                ),
            });
        }
    }
    tracing::info!(slot = %config.slot, resume_after = %resume_after, workers = config.workers, "sync started");
    let version = ProtocolVersion::try_from(stream.proto_version())
        .expect("start_replication negotiates a protocol version from 1 to 4");
    let feedback = stream.feedback();
    let acks = acknowledge::Acks::new(feedback.clone());
    // Streamed apply (see `streamed`): its appliers, when the protocol and settings allow.
    let streamed_appliers = streamed::connect(config, direction, version).await?;
    let (stop_acks, acks_stopped) = tokio::sync::oneshot::channel();
    let mut acknowledger = tokio::spawn(
        acknowledge::Acknowledger {
            acks: Arc::clone(&acks),
            green: guard_green,
            slot: config.slot.clone(),
            recorded: record.acknowledged,
        }
        .run(status_interval, acks_stopped),
    );

    let order = CommitOrder::new(0);
    // Verify's hold (see `hold`): the appliers check it before each commit.
    let hold = Arc::new(hold::Hold::default());
    hold.set_feedback(feedback.clone());
    let durability = Arc::new(durability::Durability::default());
    let (green_flush, flush_conn) = client::connect(&config.target, "blueshift durability")
        .await
        .map_err(|source| SyncError::Sql {
            what: format!("could not connect to green ({})", config.target),
            source,
        })?;
    let green_flush = Arc::new(green_flush);
    // Connected: from here on nothing awaits a server before the reader runs.
    metrics.set_connected(Side::Blue, true);
    metrics.set_connected(Side::Green, true);
    let mut tracker = tokio::spawn(durability::track(
        Arc::clone(&durability),
        Arc::clone(&green_flush),
        Arc::clone(&acks),
    ));
    let mut heartbeat = {
        let (green, slot, metrics) = (
            Arc::clone(&green_flush),
            config.slot.clone(),
            metrics.clone(),
        );
        Background::spawn(move |stop| heartbeat::record(green, slot, metrics, stop))
    };
    // The latest verify run, for `blueshift_verified_lsn` and `blueshift_verify_last_run_*`.
    let verified = {
        let (green, metrics) = (Arc::clone(&green_flush), metrics.clone());
        Background::spawn(move |stop| verified::watch(green, metrics, stop))
    };
    let hold_server = {
        let (hold, target, slot) = (
            Arc::clone(&hold),
            config.target.clone(),
            config.slot.clone(),
        );
        Background::spawn(move |stop| hold::serve(hold, target, slot, stop))
    };
    let (job_tx, job_rx) = mpsc::channel(config.queue_capacity.max(1));
    let jobs = Arc::new(Mutex::new(job_rx));
    let mut tasks = JoinSet::new();
    let mut identity_watch = tokio::spawn(identity::watch(config.clone(), identities));
    let monitor = {
        let (slot, acks, metrics) = (config.slot.clone(), Arc::clone(&acks), metrics.clone());
        Background::spawn(move |stop| {
            monitor::watch_blue(blue_sql, blue_sql_conn, slot, acks, metrics, stop)
        })
    };
    for (n, applier) in appliers.into_iter().enumerate() {
        let task = worker::run(
            n,
            applier,
            Arc::clone(&jobs),
            order.clone(),
            Arc::clone(&durability),
            metrics.clone(),
            config.turn_timeout,
            Arc::clone(&hold),
        );
        tasks.spawn(task);
    }
    let streams = if streamed_appliers.is_empty() {
        streamed::StreamApply::off()
    } else {
        let context = streamed::Context {
            order: order.clone(),
            hold: Arc::clone(&hold),
            turn_timeout: config.turn_timeout,
        };
        let fenced_until = fences
            .values()
            .map(|f| f.reconcile_before.max(f.skip_before))
            .max()
            .unwrap_or(Lsn::INVALID);
        streamed::StreamApply::start(
            streamed_appliers,
            &context,
            (resume_after, fenced_until),
            &mut tasks,
        )
    };
    // One budget for every in-flight transaction: assembling, queued, being applied.
    let budget = MemoryBudget::new(config.max_txn_memory);
    let assembler = TxAssembler::sharing(
        AssemblerOptions {
            max_memory: config.max_txn_memory,
            // The assembler owns its folder (and clears it at start): one per slot.
            spill_dir: spill_folder(config),
            skip_origin_prefix: Some(ORIGIN_PREFIX.to_owned()),
        },
        budget,
    )
    .map_err(|source| SyncError::Assemble {
        lsn: resume_after,
        source,
    })?;
    let reader = reader::Reader {
        decoder: PgOutputDecoder::new(version),
        assembler,
        scheduler: Scheduler::starting_at(1),
        keys: KeyCatalog::new(Arc::clone(&config.mapping)),
        mapping: Arc::clone(&config.mapping),
        checked: std::collections::HashMap::new(),
        loaded,
        green,
        resume_after,
        stop_at,
        order: order.clone(),
        durability: Arc::clone(&durability),
        jobs: job_tx,
        acks: Arc::clone(&acks),
        metrics: metrics.clone(),
        hold: Arc::clone(&hold),
        spilled: (0, 0),
        fence_marker: false,
        replay: replay.map(|r| reader::Replaying {
            end: r.end,
            replay: Some(r),
            folder: spool::folder(&spill_folder(config)),
        }),
        streams,
    };

    // Read until shutdown or error; an applier failing ends reading too.
    streaming.store(true, std::sync::atomic::Ordering::Release);
    let outcome = {
        let read = reader.run(&mut stream, shutdown.wait());
        tokio::pin!(read);
        loop {
            tokio::select! {
                r = &mut read => break r,
                () = heartbeat.ended(), if !heartbeat.is_finished() => break Err(SyncError::GreenClosed),
                done = &mut tracker => break Err(match done {
                    Ok(Ok(())) => SyncError::AppliersGone,
                    Ok(Err(source)) => SyncError::Green {
                        what: "lost the connection to green that confirms durable commits",
                        source,
                    },
                    Err(e) => SyncError::Task(e),
                }),
                done = &mut identity_watch => break Err(match done {
                    Ok(changed) => changed,
                    Err(e) => SyncError::Task(e),
                }),
                done = &mut acknowledger => break Err(match done {
                    Ok(Ok(())) => SyncError::AppliersGone,
                    Ok(Err(e)) => SyncError::Slot(e),
                    Err(e) => SyncError::Task(e),
                }),
                Some(done) = tasks.join_next() => {
                    match done {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => break Err(e),
                        Err(e) => break Err(SyncError::Task(e)),
                    }
                }
            }
        }
    };
    // The reader (and with it the job sender) is gone: appliers drain the queue and stop. On
    // error they are aborted; their open transactions roll back with their connections.
    // A table added to the publication ends reading like a shutdown: what was scheduled
    // before it is applied.
    let graceful = matches!(outcome, Ok(_) | Err(SyncError::TableAdded { .. }));
    let drained = if graceful {
        let mut result = Ok(());
        while let Some(done) = tasks.join_next().await {
            let failed = match done {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e,
                Err(e) => SyncError::Task(e),
            };
            // The others may wait for its commit turn forever: stop them (their open
            // transactions roll back with their connections).
            result = Err(failed);
            tasks.shutdown().await;
            break;
        }
        result
    } else {
        tasks.shutdown().await;
        Ok(())
    };
    // What the appliers committed becomes durable within green's wal_writer_delay: confirm it
    // before the final status update, so a restart has little to resend.
    tracker.abort();
    identity_watch.abort();
    if graceful && drained.is_ok() {
        durability::drain(&durability, &green_flush, &acks, Duration::from_secs(10)).await;
    }
    // The acknowledger records what is durable once more and hands it to the stream.
    let _ = stop_acks.send(());
    if !acknowledger.is_finished() {
        match tokio::time::timeout(Duration::from_secs(10), &mut acknowledger).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                tracing::warn!(error = %error_chain(&e), "could not record the last durable position")
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "the acknowledger ended abnormally"),
            Err(_) => acknowledger.abort(),
        }
    }
    // A final status update carries the last flushed position.
    if let Err(e) = stream.close().await {
        tracing::debug!(error = %e, "the replication stream did not end cleanly");
    }
    // Every connection ends with a Terminate: the monitor's and the heartbeat's tasks close
    // theirs when stopped, the others here (the reader and the acknowledger, which owned the
    // other clients of green, are gone).
    monitor.stop().await;
    hold_server.stop().await;
    heartbeat.stop().await;
    verified.stop().await;
    client::finish(green_conn).await;
    client::finish(guard_conn).await;
    client::close_shared(green_flush, flush_conn).await;
    let scheduled = outcome?;
    drained?;
    tracing::info!(
        flushed = %feedback.flushed(),
        transactions = scheduled,
        stages_p50_p99_ms = %metrics.stage_summary(),
        "sync stopped"
    );
    Ok(scheduled)
}

/// The replication origin of applier `n` of `slot`: `blueshift_<slot>_<n>`.
pub fn origin_name(slot: &str, n: usize) -> String {
    format!("{ORIGIN_PREFIX}{slot}_{n}")
}

/// The conflict handling of `direction`'s appliers in two-way mode.
fn conflict_options(config: &SyncConfig, direction: &direction::Direction) -> ConflictOptions {
    let (slot, target, own_origin_prefix) = match direction {
        direction::Direction::Forward => (
            config.slot.clone(),
            ConflictSide::Green,
            format!("{ORIGIN_PREFIX}{}_", config.slot),
        ),
        direction::Direction::Reverse { forward_slot } => (
            forward_slot.clone(),
            ConflictSide::Blue,
            format!("{ORIGIN_PREFIX}{forward_slot}_r"),
        ),
    };
    ConflictOptions {
        slot,
        direction: direction.label(),
        target,
        own_origin_prefix,
        policies: Arc::clone(&config.conflicts.policies),
        since: Arc::clone(&config.conflicts.since),
    }
}

/// Counts a conflict that stopped sync (policy `stop`) in `metrics`.
pub(crate) fn count_conflict_stop(e: &SyncError, metrics: &Metrics) {
    let mut e = e;
    loop {
        match e {
            SyncError::Reverse(inner) => e = inner,
            SyncError::Apply {
                source: ApplyError::Conflict(stopped),
                ..
            } => {
                metrics.conflict(stopped.kind, Resolution::Stop);
                return;
            }
            _ => return,
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A shutdown request that every attempt can wait on, and that stays fired.
#[derive(Debug, Clone)]
struct Shutdown(tokio::sync::watch::Receiver<bool>);

impl Shutdown {
    fn fired(&self) -> bool {
        *self.0.borrow()
    }

    async fn wait(self) {
        let mut rx = self.0;
        let _ = rx.wait_for(|fired| *fired).await;
    }
}

/// Turns the caller's shutdown future into a [`Shutdown`] every attempt can wait on.
fn shutdown_signal(signal: impl Future<Output = ()> + Send + 'static) -> Shutdown {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        signal.await;
        tracing::info!("shutdown requested: draining what is in flight");
        let _ = tx.send(true);
    });
    Shutdown(rx)
}
