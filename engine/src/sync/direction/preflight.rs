//! Two-way mode's own preflight (`blueshift sync --bidirectional`): conflicts are told apart
//! by the commit timestamp and origin of a row's last writer, which PostgreSQL records only
//! with `track_commit_timestamp = on` — on both sides, since each detects the conflicts of the
//! changes it takes.

use tokio_postgres::Client;

use crate::sync::PreflightError;

/// Refuses two-way mode unless both servers record commit timestamps.
pub(crate) async fn check(blue: &Client, green: &Client) -> Result<(), PreflightError> {
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
