//! The drain: wait until green durably holds everything blue committed before the fence.
//!
//! Green's durable position is the maximum of the sync's origins' progress
//! (`pg_replication_origin_progress(name, true)`, which flushes green's WAL that far): the
//! commit LSN on blue of the last transaction green holds, in blue's commit order. The fence
//! marker is a transaction of its own on blue, so once the position is at or past the marker's
//! LSN, every transaction blue committed before it is on green.

use std::time::Duration;

use blueshift_decoder::Lsn;
use tokio::time::Instant;
use tokio_postgres::Client;

use super::error::CutoverError;
use crate::status::origin;

/// How often green is asked while waiting.
const POLL: Duration = Duration::from_millis(2);

/// Green's durable position for `slot` (`None` before the first commit).
pub(crate) async fn position(green: &Client, slot: &str) -> Result<Option<Lsn>, CutoverError> {
    let origins = origin::read(green, slot)
        .await
        .map_err(|source| CutoverError::Query {
            side: "green",
            what: "read the sync's replication origins".to_owned(),
            source,
        })?;
    Ok(origin::durable_position(&origins))
}

/// Waits until green's durable position is at or past `fence`, at most until `deadline`;
/// returns the position reached.
pub(crate) async fn until(
    green: &Client,
    slot: &str,
    fence: Lsn,
    deadline: Instant,
    budget: Duration,
) -> Result<Lsn, CutoverError> {
    loop {
        let held = position(green, slot).await?;
        if let Some(held) = held.filter(|h| *h >= fence) {
            return Ok(held);
        }
        if Instant::now() >= deadline {
            return Err(CutoverError::DrainTimeout {
                fence: fence.to_string(),
                held: held.map_or_else(|| "nothing".to_owned(), |h| h.to_string()),
                budget_ms: budget.as_millis(),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}
