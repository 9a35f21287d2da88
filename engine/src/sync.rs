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
mod attempt;
mod background;
pub mod direction;
mod durability;
mod error;
pub mod heartbeat;
mod hold;
pub mod identity;
mod loaded;
mod monitor;
mod order;
pub(crate) mod preflight;
mod queue;
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
use blueshift_applier::{ApplyError, ErrorClass, Mapping};
use blueshift_decoder::config::ConnectConfig;
use blueshift_decoder::Lsn;

use crate::backfill::{self, BackfillError, BackfillOptions, Progress};
use crate::metrics::Metrics;
use crate::status::Side;
use attempt::attempt;

pub use blueshift_applier::conflict::{Policies, Policy};
pub(crate) use error::replication_is_transient;
pub use error::SyncError;
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
