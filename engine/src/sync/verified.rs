//! The latest verify run, for the sidecar's metrics: every few seconds the running sync reads
//! `blueshift.verify_run` on green ([`crate::verify::last_verify`]: two index reads) and sets
//! `blueshift_verified_lsn` and `blueshift_verify_last_run_*`, so that a dashboard and an alert
//! see the last proof without a verify process running (see [`crate::metrics::verify`]).
//!
//! Best effort: a read that fails leaves the gauges as they were (logged at debug level); it
//! never costs the sync anything.

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Client;

use super::background::StopRequest;
use crate::metrics::Metrics;

/// How often green is read.
const EVERY: Duration = Duration::from_secs(5);

/// Reads the latest verify run every [`EVERY`] until asked to stop or green's connection is
/// gone.
pub(crate) async fn watch(green: Arc<Client>, metrics: Metrics, mut stop: StopRequest) {
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {}
        }
        if green.is_closed() {
            return;
        }
        match crate::verify::last_verify(&green).await {
            Ok(last) => metrics.set_last_verify(last),
            Err(e) => tracing::debug!(error = %e, "could not read the latest verify run on green"),
        }
    }
}
