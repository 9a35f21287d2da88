//! The reverse direction inside `blueshift sync`: next to the forward pipeline, a supervisor
//! looks for the `blueshift.reverse` row of the sync's slot on green (at start, then every
//! second) and, while it is there, runs the same pipeline green → blue:
//!
//! ```text
//!  run_with_progress ──► with_reverse ──┬── forward: run_stages (blue → green), as before
//!                                       └── supervise: row? ──► attempts (green → blue) until
//!                                                               shutdown or the row is deleted
//! ```
//!
//! The two share nothing but the process and the shutdown: each has its own connections,
//! slot, appliers, origins and metrics registry ([`Metrics::reverse`]). A definite error in
//! either stops both (the forward drains what is in flight first): a reverse direction that
//! silently stopped would leave green's writes off blue, which a rollback relies on. Transient
//! errors reconnect with backoff, each direction on its own.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use blueshift_applier::{ErrorClass, Mapping};
use tokio::sync::watch;

use super::{read_reverse, Direction, Reverse};
use crate::client;
use crate::metrics::Metrics;
use crate::status::Side;
use crate::sync::{
    attempt, back_off, error_chain, unless, wait_for_green, Shutdown, SyncConfig, SyncError,
    SyncSummary, BLOCKED_RETRY_FIRST,
};

/// How often the supervisor looks for the row.
const POLL: Duration = Duration::from_secs(1);

/// Runs `forward` (given a shutdown of its own) and, beside it, the reverse direction whenever
/// it is armed; returns once both ended: the reverse direction's error when it failed (it stops
/// the forward one), else the forward's result.
pub(in crate::sync) async fn with_reverse<F, Fut>(
    config: &SyncConfig,
    metrics: &Metrics,
    shutdown: Shutdown,
    forward: F,
) -> Result<SyncSummary, SyncError>
where
    F: FnOnce(Shutdown) -> Fut,
    Fut: Future<Output = Result<SyncSummary, SyncError>>,
{
    let (stop_forward, forward_stopped) = watch::channel(false);
    let (stop_reverse, reverse_stopped) = watch::channel(false);
    let stop_forward = Arc::new(stop_forward);
    let stop_reverse = Arc::new(stop_reverse);
    let relay = {
        let (shutdown, f, r) = (
            shutdown.clone(),
            Arc::clone(&stop_forward),
            Arc::clone(&stop_reverse),
        );
        tokio::spawn(async move {
            shutdown.wait().await;
            let _ = f.send(true);
            let _ = r.send(true);
        })
    };
    let mut reverse = tokio::spawn(supervise(
        config.clone(),
        metrics.clone(),
        Shutdown(reverse_stopped),
    ));
    let run = forward(Shutdown(forward_stopped));
    tokio::pin!(run);
    let mut reverse_done: Option<Result<(), SyncError>> = None;
    let result = loop {
        tokio::select! {
            r = &mut run => break r,
            r = &mut reverse, if reverse_done.is_none() => {
                let r = r.unwrap_or_else(|e| Err(SyncError::Task(e)));
                if let Err(e) = &r {
                    tracing::error!(direction = "reverse", error = %error_chain(e), "the reverse direction stopped; stopping the forward direction too");
                    let _ = stop_forward.send(true);
                }
                reverse_done = Some(r);
            }
        }
    };
    let _ = stop_reverse.send(true);
    let reverse_result = match reverse_done {
        Some(r) => r,
        None => reverse.await.unwrap_or_else(|e| Err(SyncError::Task(e))),
    };
    relay.abort();
    match (result, reverse_result) {
        // The reverse stopped first and stopped the forward: its error is the cause.
        (result, Err(e)) => {
            if let Err(forward) = result {
                tracing::debug!(error = %error_chain(&forward), "the forward direction stopped too");
            }
            Err(SyncError::Reverse(Box::new(e)))
        }
        (result, Ok(())) => result,
    }
}

/// Waits for the row (arming it in two-way mode once the forward direction streams), runs the
/// reverse direction while it exists; until shutdown or a definite error. `forward`: the
/// forward direction's metrics (the reverse direction's registry hangs off it).
async fn supervise(
    config: SyncConfig,
    forward: Metrics,
    shutdown: Shutdown,
) -> Result<(), SyncError> {
    let mut announced = false;
    let mut strategy_applied = false;
    // Two-way mode arms once; a row deleted later (disarmed) is not armed again.
    let mut may_arm = config.bidirectional;
    if may_arm && !config.mapping.is_empty() {
        return Err(SyncError::ReverseMapping {
            slot: config.slot.clone(),
        });
    }
    loop {
        // Looking for the row never delays a shutdown (a green that does not answer holds a
        // connect for up to connect_timeout).
        let found = tokio::select! {
            () = shutdown.clone().wait() => return Ok(()),
            found = armed(&config) => found,
        };
        match found {
            Ok(Some(row)) => {
                if !config.mapping.is_empty() {
                    return Err(SyncError::ReverseMapping {
                        slot: config.slot.clone(),
                    });
                }
                may_arm = false;
                // Two-way conflicts: a local row version older than this cannot race the other
                // side (see `blueshift_applier::conflict`).
                config.conflicts.armed(row.armed_at);
                if let Some(strategy) = config.conflicts.sequence_strategy {
                    if !strategy_applied {
                        apply_strategy(&config, strategy).await?;
                        strategy_applied = true;
                    }
                }
                run_reverse(&config, &row, &forward.reverse(), &shutdown).await?;
                announced = false;
            }
            Ok(None) if may_arm && streaming(&forward) => {
                // Green holds only what the forward direction applied (origin-tagged, never
                // sent back) and the backfill is done: every write green takes from the reverse
                // slot's consistent point on flows to blue.
                match super::arm_reverse(
                    &config.source,
                    &config.target,
                    &config.slot,
                    &config.publication,
                )
                .await
                {
                    Ok(row) => {
                        may_arm = false;
                        tracing::info!(direction = "reverse", slot = %config.slot, armed_lsn = %row.armed_lsn, "two-way sync: the reverse direction is armed; green may take writes now");
                        continue;
                    }
                    Err(e) if e.is_transient() => {
                        tracing::warn!(error = %error_chain(&e), "could not arm the reverse direction yet; retrying");
                    }
                    Err(e) => return Err(SyncError::Direction(e)),
                }
            }
            Ok(None) => {
                if !announced {
                    tracing::debug!(slot = %config.slot, "the reverse direction is not armed; looking for it every second");
                    announced = true;
                }
            }
            Err(e) => {
                tracing::debug!(error = %error_chain(&e), "could not look for the reverse direction's row on green")
            }
        }
        tokio::select! {
            () = shutdown.clone().wait() => return Ok(()),
            () = tokio::time::sleep(POLL) => {}
        }
        if shutdown.fired() {
            return Ok(());
        }
    }
}

/// Applies the sequence strategy (once: see `sequence::two_way`), green now taking writes.
async fn apply_strategy(
    config: &SyncConfig,
    strategy: crate::sequence::two_way::Strategy,
) -> Result<(), SyncError> {
    let connect = |target: &blueshift_decoder::config::ConnectConfig, side: &str| {
        let target = target.clone();
        let side = side.to_owned();
        async move {
            client::connect(&target, "blueshift sequences")
                .await
                .map_err(|source| SyncError::Sql {
                    what: format!("could not connect to {side} ({target})"),
                    source,
                })
        }
    };
    let (blue, blue_conn) = connect(&config.source, "blue").await?;
    let (green, green_conn) = match connect(&config.target, "green").await {
        Ok(c) => c,
        Err(e) => {
            client::close(blue, blue_conn).await;
            return Err(e);
        }
    };
    let applied = crate::sequence::two_way::apply(
        &blue,
        &green,
        &config.slot,
        &config.publication,
        config.mapping.renames(),
        strategy,
    )
    .await;
    client::close(blue, blue_conn).await;
    client::close(green, green_conn).await;
    let changed = applied.map_err(|e| SyncError::Direction(super::DirectionError::Sequences(e)))?;
    tracing::info!(strategy = %strategy, sequences = changed.len(), "two-way sync: the sequences of both sides no longer overlap");
    Ok(())
}

/// Whether the forward direction streams (connected to both sides: its backfill is done).
fn streaming(forward: &Metrics) -> bool {
    forward.snapshot().connected.iter().all(|c| *c)
}

/// The row of the sync's slot, read over a short-lived connection to green.
async fn armed(config: &SyncConfig) -> Result<Option<Reverse>, SyncError> {
    let (green, conn) = client::connect(&config.target, "blueshift reverse")
        .await
        .map_err(|source| SyncError::Sql {
            what: format!("could not connect to green ({})", config.target),
            source,
        })?;
    let row = read_reverse(&green, &config.slot).await;
    client::close(green, conn).await;
    row.map_err(|source| SyncError::Sql {
        what: "could not read blueshift.reverse on green".to_owned(),
        source: client::ClientError {
            target: config.target.to_string(),
            source,
        },
    })
}

/// Fails with [`DirectionError::SlotLost`](super::DirectionError::SlotLost) when the reverse
/// slot is not on green, with [`DirectionError::NotReversed`](super::DirectionError::NotReversed)
/// when blue publishes a table the reverse publication lacks (a lost connection is left to the
/// attempt, which retries it).
async fn slot_present(config: &SyncConfig, row: &Reverse) -> Result<(), SyncError> {
    let Ok((green, conn)) = client::connect(&config.target, "blueshift reverse").await else {
        return Ok(());
    };
    let found = super::slot_on(&green, &row.reverse_slot).await;
    let checked = match client::connect(&config.source, "blueshift reverse").await {
        Ok((blue, blue_conn)) => {
            let checked =
                super::check_reversed(&blue, &green, &config.publication, &row.reverse_publication)
                    .await;
            client::close(blue, blue_conn).await;
            checked
        }
        Err(_) => Ok(()),
    };
    client::close(green, conn).await;
    match (found, checked) {
        (Ok(None), _) => Err(SyncError::Direction(super::DirectionError::SlotLost {
            slot: row.slot.clone(),
            reverse_slot: row.reverse_slot.clone(),
            armed_lsn: row.armed_lsn,
        })),
        (_, Err(e)) if !e.is_transient() => Err(SyncError::Direction(e)),
        _ => Ok(()),
    }
}

/// The forward configuration turned around: green is the source, blue the target, the reverse
/// slot and publication, no declared mapping.
pub(in crate::sync) fn reverse_config(config: &SyncConfig, row: &Reverse) -> SyncConfig {
    let mut source = config.target.clone();
    source.set_fallback_application_name(format!(
        "blueshift sync {} (pid {} on {})",
        row.reverse_slot,
        std::process::id(),
        crate::sync::hostname()
    ));
    SyncConfig {
        source,
        target: config.source.clone(),
        publication: row.reverse_publication.clone(),
        create_publication: None,
        binary: false,
        slot: row.reverse_slot.clone(),
        mapping: Arc::new(Mapping::default()),
        ..config.clone()
    }
}

/// Runs the reverse direction of `row` until shutdown or the row is deleted (transient errors
/// reconnect with backoff; a definite one is returned).
async fn run_reverse(
    config: &SyncConfig,
    row: &Reverse,
    metrics: &Metrics,
    shutdown: &Shutdown,
) -> Result<(), SyncError> {
    let reverse = reverse_config(config, row);
    let direction = Direction::Reverse {
        forward_slot: config.slot.clone(),
    };
    tracing::info!(direction = "reverse", slot = %reverse.slot, publication = %reverse.publication, armed_lsn = %row.armed_lsn, "the reverse direction is armed: applying green's writes to blue");
    // Stops when the sidecar stops or the row goes (disarmed).
    let (stop, stopped) = watch::channel(false);
    let watcher = {
        let (shutdown, config) = (shutdown.clone(), config.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.clone().wait() => break,
                    () = tokio::time::sleep(POLL) => {}
                }
                if let Ok(None) = armed(&config).await {
                    tracing::info!(direction = "reverse", slot = %config.slot, "the reverse direction was disarmed; stopping it");
                    break;
                }
            }
            let _ = stop.send(true);
        })
    };
    let stopping = Shutdown(stopped);
    // A row whose slot is gone: what green took since it was armed may be missing on blue.
    if let Err(e) = slot_present(config, row).await {
        watcher.abort();
        return Err(e);
    }
    let mut wait = config.backoff.0;
    let mut blocked_wait = BLOCKED_RETRY_FIRST;
    let result = loop {
        let started = std::time::Instant::now();
        let streaming = AtomicBool::new(false);
        let is_streaming = || streaming.load(Ordering::Acquire);
        let result = tokio::select! {
            result = attempt(&reverse, &direction, metrics, stopping.clone(), None, &streaming) => result,
            () = unless(&stopping, is_streaming) => Ok(0),
        };
        metrics.set_connected(Side::Blue, false);
        metrics.set_connected(Side::Green, false);
        if result.is_err() || !is_streaming() {
            metrics.lag().down(std::time::SystemTime::now());
        }
        if started.elapsed() > config.backoff.1 {
            wait = config.backoff.0;
            blocked_wait = BLOCKED_RETRY_FIRST;
        }
        match result {
            Ok(_) if stopping.fired() => break Ok(()),
            // The stream ended without a shutdown: go again.
            Ok(_) => {}
            Err(e) if e.is_transient() && !stopping.fired() => {
                let what = "reverse direction interrupted; reconnecting";
                if !back_off(&e, what, &mut wait, config, metrics, &stopping).await {
                    break Ok(());
                }
            }
            Err(e) if e.is_blocked() && !stopping.fired() => {
                if !wait_for_green(&e, &mut blocked_wait, metrics, &stopping).await {
                    break Ok(());
                }
            }
            Err(_) if stopping.fired() && !shutdown.fired() => {
                // Disarmed under it (the slot dropped while it streamed): nothing is lost, the
                // way back is gone on purpose.
                break Ok(());
            }
            Err(e) => {
                metrics.error(ErrorClass::Definite);
                crate::sync::count_conflict_stop(&e, metrics);
                break Err(e);
            }
        }
    };
    watcher.abort();
    result
}
