//! The drain: wait until green durably holds everything blue committed before the fence (or,
//! rolling back, blue everything green committed before its fence, through the reverse
//! direction's origins on blue).
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
use super::state::Way;
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

/// The durable position of the direction `way` drains: green's forward origins, or blue's
/// reverse ones.
pub(crate) async fn position_of(
    way: Way,
    green: &Client,
    blue: &Client,
    slot: &str,
) -> Result<Option<Lsn>, CutoverError> {
    match way {
        Way::Forward => position(green, slot).await,
        Way::Back => reverse_position(blue, slot).await,
    }
}

/// Waits until the durable position of `way` is at or past `fence`, at most until `deadline`;
/// returns the position reached.
pub(crate) async fn until(
    way: Way,
    green: &Client,
    blue: &Client,
    slot: &str,
    fence: Lsn,
    deadline: Instant,
    budget: Duration,
) -> Result<Lsn, CutoverError> {
    loop {
        let held = position_of(way, green, blue, slot).await?;
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

/// Blue's durable position of the reverse direction for forward slot `slot`: the maximum
/// progress of the reverse appliers' origins on blue (`blueshift_<slot>_r<n>`), in green's
/// WAL (`None` before the first commit).
pub(crate) async fn reverse_position(
    blue: &Client,
    slot: &str,
) -> Result<Option<Lsn>, CutoverError> {
    let prefix = format!("{}{slot}_r", crate::sync::ORIGIN_PREFIX);
    let rows = blue
        .query(
            "SELECT roname::pg_catalog.text,
                    pg_catalog.pg_replication_origin_progress(roname, true)::pg_catalog.text
               FROM pg_catalog.pg_replication_origin
              WHERE pg_catalog.starts_with(roname, $1)",
            &[&prefix],
        )
        .await
        .map_err(CutoverError::query(
            "blue",
            "read the reverse direction's replication origins",
        ))?;
    let mut best: Option<Lsn> = None;
    for row in rows {
        let name: String = row.get(0);
        if crate::sync::direction::reverse_origin_worker(slot, &name).is_none() {
            continue;
        }
        let progress = row
            .get::<_, Option<String>>(1)
            .and_then(|t| t.parse::<Lsn>().ok())
            .filter(|l| !l.is_invalid());
        best = best.max(progress);
    }
    Ok(best)
}
