//! The lag heartbeat: once a second the running sync records on green, in
//! `blueshift.sync_lag`, the instant its lag is measured from (see
//! [`crate::metrics::lag`]), so that `blueshift status` computes the lag in seconds the same way
//! as `blueshift_lag_seconds`, whether the sidecar runs or not:
//!
//! - a fresh row (recorded within [`STALE_AFTER`]): lag = now − its basis, 0 when it has none;
//! - a stale row (the sidecar is not recording: stopped, or cut off from green): lag = now −
//!   its basis, or now − the time it was recorded when it had none. Blue may have committed
//!   anything since, and nothing of it reaches green.
//!
//! Each tick also reads the cutover's row of the slot (`blueshift.cutover`) into
//! `blueshift_cutover_state` and `blueshift_cutover_pause_seconds` (see
//! `metrics::cutover`): the sidecar is what Prometheus scrapes, also while a cutover is stuck.
//!
//! Recording is best effort: a green that refuses the table (no CREATE privilege) costs the
//! status its lag in seconds, never the sync.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_postgres::Client;

use super::background::StopRequest;
use crate::cutover::State;
use crate::metrics::Metrics;

/// The table, in green's `blueshift` schema.
pub const TABLE: &str = "blueshift.sync_lag";

/// How often the lag is recorded.
const EVERY: Duration = Duration::from_secs(1);

/// A row older than this means the sync is not recording.
pub const STALE_AFTER: Duration = Duration::from_secs(5);

/// Creates the table when missing, without the server's "already exists" notices.
const CREATE: &str = "
BEGIN;
SET LOCAL client_min_messages = warning;
CREATE SCHEMA IF NOT EXISTS blueshift;
CREATE TABLE IF NOT EXISTS blueshift.sync_lag (
    slot text PRIMARY KEY,
    recorded_at timestamptz NOT NULL,
    lag_basis timestamptz
);
COMMIT;";

/// Records the lag of `slot` every second until asked to stop. Returns by itself only when
/// the connection to green is gone (green stopped, or the network failed): the attempt then
/// ends, even if no transaction was in flight to notice it.
pub(crate) async fn record(
    green: Arc<Client>,
    slot: String,
    metrics: Metrics,
    mut stop: StopRequest,
) {
    let mut table = true;
    if let Err(e) = green.batch_execute(CREATE).await {
        tracing::warn!(table = TABLE, error = %e, "cannot create the lag heartbeat table on green: `blueshift status` will not know the lag in seconds");
        table = false;
    }
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {}
        }
        if green.is_closed() {
            return;
        }
        // The cutover's row of this slot, for `blueshift_cutover_state` (a missing table or
        // row: no cutover ever ran, the sync replicates).
        match crate::cutover::read_state(&green, &slot).await {
            Ok(record) => metrics.set_cutover(
                record.as_ref().map_or(State::Replicating, |r| r.state),
                record.and_then(|r| r.pause_ms).map(|ms| ms / 1000.0),
            ),
            Err(e) => tracing::debug!(error = %e, "could not read the cutover's state on green"),
        }
        if !table {
            continue;
        }
        let basis = metrics.lag().basis();
        let now = SystemTime::now();
        let recorded = green
            .execute(
                "INSERT INTO blueshift.sync_lag (slot, recorded_at, lag_basis) VALUES ($1, $2, $3)
                 ON CONFLICT (slot) DO UPDATE SET recorded_at = excluded.recorded_at,
                                                  lag_basis = excluded.lag_basis",
                &[&slot, &now, &basis],
            )
            .await;
        if let Err(e) = recorded {
            tracing::debug!(error = %e, "could not record the lag heartbeat on green");
        }
    }
}

/// Whether green holds a heartbeat row of `slot` (false when the table does not exist).
pub(crate) async fn recorded(green: &Client, slot: &str) -> Result<bool, tokio_postgres::Error> {
    if !crate::client::relation_exists(green, "blueshift.sync_lag").await? {
        return Ok(false);
    }
    let row = green
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM blueshift.sync_lag WHERE slot = $1)",
            &[&slot],
        )
        .await?;
    Ok(row.get(0))
}

/// Deletes the heartbeat row of `slot` (`blueshift cleanup`).
pub(crate) async fn forget(green: &Client, slot: &str) -> Result<(), tokio_postgres::Error> {
    green
        .execute("DELETE FROM blueshift.sync_lag WHERE slot = $1", &[&slot])
        .await
        .map(|_| ())
}

/// The lag in seconds at `now` from a heartbeat row recorded at `recorded_at` with `basis`.
pub fn lag_seconds(now: SystemTime, recorded_at: SystemTime, basis: Option<SystemTime>) -> f64 {
    let stale = now
        .duration_since(recorded_at)
        .is_ok_and(|age| age > STALE_AFTER);
    let basis = if stale {
        Some(basis.unwrap_or(recorded_at))
    } else {
        basis
    };
    basis
        .map_or(Duration::ZERO, |b| {
            now.duration_since(b).unwrap_or_default()
        })
        .as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn the_same_rule_as_the_metric() {
        // Fresh: the basis, or caught up.
        assert_eq!(lag_seconds(at(100), at(99), None), 0.0);
        assert_eq!(lag_seconds(at(100), at(99), Some(at(90))), 10.0);
        // Stale: the sidecar stopped recording at 50; it is behind since then at least.
        assert_eq!(lag_seconds(at(100), at(50), None), 50.0);
        assert_eq!(lag_seconds(at(100), at(50), Some(at(40))), 60.0);
    }
}
