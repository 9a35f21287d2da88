//! Asks blue where it is, for two gauges: `blueshift_lag_bytes` (blue's current WAL position
//! minus what green durably holds) and `blueshift_slot_retained_wal_bytes` (the WAL between the
//! slot's `restart_lsn` and blue's current position, which blue cannot recycle while the slot
//! holds it) — and `blueshift_source_lsn`, blue's current position itself.

use std::sync::Arc;
use std::time::Duration;

use blueshift_decoder::Lsn;
use tokio::task::JoinHandle;
use tokio_postgres::Client;

use super::acknowledge::Acks;
use super::background::StopRequest;
use crate::client;
use crate::metrics::Metrics;

/// How often blue is asked.
const EVERY: Duration = Duration::from_secs(1);

/// Updates the gauges until asked to stop, then closes the connection; a failed query is
/// logged and retried.
pub(crate) async fn watch_blue(
    blue: Client,
    connection: JoinHandle<()>,
    slot: String,
    durable: Arc<Acks>,
    metrics: Metrics,
    mut stop: StopRequest,
) {
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {}
        }
        let row = blue
            .query_opt(
                "SELECT pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), restart_lsn)::int8,
                        pg_catalog.pg_current_wal_lsn()::text
                   FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await;
        match row {
            Ok(Some(row)) => {
                let bytes: Option<i64> = row.get(0);
                metrics.set_retained_wal(u64::try_from(bytes.unwrap_or(0)).unwrap_or(0));
                let current: String = row.get(1);
                if let Ok(current) = current.parse::<Lsn>() {
                    metrics.set_lag_bytes(current.bytes_since(durable.wanted()));
                    metrics.set_source_lsn(current.0);
                }
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "could not read blue's position"),
        }
    }
    client::close(blue, connection).await;
}
