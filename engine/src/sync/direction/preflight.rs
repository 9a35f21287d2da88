//! Two-way mode's own preflight (`blueshift sync --bidirectional`): conflicts are told apart
//! by the commit timestamp and origin of a row's last writer, which PostgreSQL records only
//! with `track_commit_timestamp = on` — on both sides, since each detects the conflicts of the
//! changes it takes.

use tokio_postgres::Client;

use crate::sequence::two_way;
use crate::sync::{PreflightError, SyncConfig};

/// Refuses two-way mode unless both servers record commit timestamps; names the sequences
/// whose values the two sides would both hand out.
pub(crate) async fn check(
    config: &SyncConfig,
    blue: &Client,
    green: &Client,
) -> Result<(), PreflightError> {
    commit_timestamps(blue, green).await?;
    let pairs = two_way::pairs(blue, green, &config.publication, config.mapping.renames())
        .await
        .map_err(|e| PreflightError::Failed {
            problem: format!("could not read the published sequences: {e}"),
            fix: "grant SELECT on them (the error names them) and start sync again".to_owned(),
        })?;
    let overlapping: Vec<String> = pairs
        .iter()
        .filter(|p| two_way::overlaps(&p.blue_params, &p.green_params))
        .map(|p| p.blue.to_string())
        .collect();
    if overlapping.is_empty() {
        return Ok(());
    }
    match config.conflicts.sequence_strategy {
        Some(strategy) => tracing::info!(
            strategy = %strategy,
            sequences = %overlapping.join(", "),
            "two-way sync: these sequences overlap; the strategy is applied once the reverse direction is armed"
        ),
        None => tracing::warn!(
            sequences = %overlapping.join(", "),
            "two-way sync: blue and green would hand out the same values of these sequences \
             (their inserts then collide: insert_exists) — pass --sequence-strategy interleave \
             (odd/even) or offset (green far beyond blue), or keep each side's inserts apart"
        ),
    }
    Ok(())
}

/// Refuses two-way mode unless both servers record commit timestamps.
async fn commit_timestamps(blue: &Client, green: &Client) -> Result<(), PreflightError> {
    let mut off = Vec::new();
    for (side, client) in [("blue", blue), ("green", green)] {
        let row = client
            .query_one(
                "SELECT pg_catalog.current_setting('track_commit_timestamp')",
                &[],
            )
            .await
            .map_err(|source| PreflightError::Query {
                side,
                what: "track_commit_timestamp",
                source,
            })?;
        let value: String = row.get(0);
        if value != "on" {
            off.push(side);
        }
    }
    if off.is_empty() {
        return Ok(());
    }
    Err(PreflightError::Failed {
        problem: format!(
            "two-way sync needs track_commit_timestamp = on on both sides to tell conflicts \
             apart (the commit time and origin of each row's last writer), but it is off on {}",
            off.join(" and ")
        ),
        fix: format!(
            "run ALTER SYSTEM SET track_commit_timestamp = on on {} and restart {}, then start \
             sync again",
            off.join(" and "),
            if off.len() == 2 { "both" } else { "it" }
        ),
    })
}
