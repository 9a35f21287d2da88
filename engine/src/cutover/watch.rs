//! The watch after the switch: for `--watch`, probes through PgBouncer must land on the side
//! that now takes the traffic (green after a cutover, blue after a rollback), its rollback rate
//! must stay under `--max-error-rate`, and no transaction may write the fenced side after the
//! fence.
//!
//! - **Probe**: a transaction through the pooler reads the server's identity
//!   (`pg_postmaster_start_time()`, port, database) and must find green's.
//! - **Error rate**: `pg_stat_database`'s `xact_rollback` over all transactions ended on green
//!   since the watch began (judged once at least 20 ended).
//! - **Late writes**: green's origins moving past the fence mean blue committed a published
//!   change after it (blue is read-only for everybody but blueshift, so only a session that
//!   bypassed PgBouncer and was already read-write can); named with its xids and tables.

use std::time::Duration;

use blueshift_decoder::config::ConnectConfig;
use blueshift_decoder::Lsn;
use tokio::time::Instant;
use tokio_postgres::{Client, SimpleQueryMessage};

use super::error::CutoverError;
use super::state::Way;
use super::{drain, fence};
use crate::client;

/// The query that says which server answered (qualified; simple protocol through PgBouncer).
const IDENTITY: &str = "SELECT pg_catalog.pg_postmaster_start_time()::pg_catalog.text || ' ' || \
     pg_catalog.current_setting('port') || ' ' || pg_catalog.current_database()";

/// How often the watch looks.
const EVERY: Duration = Duration::from_millis(500);

/// What the watch saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Watched {
    /// Probes through PgBouncer that landed on green.
    pub probes: u64,
    /// Transactions ended on green during the watch.
    pub transactions: i64,
    /// Of which rolled back.
    pub rollbacks: i64,
}

/// The identity [`IDENTITY`] reads, on a direct session.
pub(crate) async fn identity(client: &Client, side: &'static str) -> Result<String, CutoverError> {
    for m in client
        .simple_query(IDENTITY)
        .await
        .map_err(CutoverError::query(side, "read the server's identity"))?
    {
        if let SimpleQueryMessage::Row(r) = m {
            return Ok(r.get(0).unwrap_or_default().to_owned());
        }
    }
    Ok(String::new())
}

/// One probe through the pooler: the identity of the server that answered.
pub(crate) async fn probe(pooler: &ConnectConfig) -> Result<String, CutoverError> {
    let (c, conn) = client::connect_unpinned(pooler, "blueshift cutover probe")
        .await
        .map_err(CutoverError::connect("PgBouncer (probe)"))?;
    let id = identity(&c, "PgBouncer (probe)").await;
    client::close(c, conn).await;
    id
}

async fn xacts(client: &Client, side: &'static str) -> Result<(i64, i64), CutoverError> {
    let row = client
        .query_one(
            "SELECT xact_commit, xact_rollback FROM pg_catalog.pg_stat_database
              WHERE datname = pg_catalog.current_database()",
            &[],
        )
        .await
        .map_err(CutoverError::query(side, "read pg_stat_database"))?;
    Ok((row.get(0), row.get(1)))
}

/// What the watch needs.
pub(crate) struct Watch<'a> {
    pub(crate) green: &'a Client,
    pub(crate) blue: &'a Client,
    /// Which way traffic moved.
    pub(crate) way: Way,
    pub(crate) pooler: Option<&'a ConnectConfig>,
    pub(crate) slot: &'a str,
    /// The publication of the fenced side (the reverse one after a rollback).
    pub(crate) publication: &'a str,
    /// The durable position once drained: past it, the fenced side wrote after the fence.
    pub(crate) barrier: Lsn,
    pub(crate) fence_xid: i64,
    pub(crate) duration: Duration,
    pub(crate) max_error_rate: f64,
}

impl Watch<'_> {
    fn target(&self) -> (&Client, &'static str) {
        match self.way {
            Way::Forward => (self.green, "green"),
            Way::Back => (self.blue, "blue"),
        }
    }

    /// Watches for the duration; the first problem ends it.
    pub(crate) async fn run(&self) -> Result<Watched, CutoverError> {
        let (target, side) = self.target();
        let target_id = identity(target, side).await?;
        let (commits0, rollbacks0) = xacts(target, side).await?;
        let end = Instant::now() + self.duration;
        let mut watched = Watched::default();
        loop {
            if let Some(pooler) = self.pooler {
                let landed = probe(pooler).await?;
                if landed != target_id {
                    return Err(CutoverError::Watch(format!(
                        "a probe through PgBouncer landed on {landed:?}, not on {side} ({target_id:?}) — check PgBouncer's entry and RELOAD"
                    )));
                }
                watched.probes += 1;
            }
            let (commits, rollbacks) = xacts(target, side).await?;
            watched.transactions = (commits - commits0) + (rollbacks - rollbacks0);
            watched.rollbacks = rollbacks - rollbacks0;
            if watched.transactions >= 20 {
                #[allow(clippy::cast_precision_loss)]
                let rate = watched.rollbacks as f64 / watched.transactions as f64;
                if rate > self.max_error_rate {
                    return Err(CutoverError::Watch(format!(
                        "{} of {} transactions on {side} rolled back ({:.1} %, over --max-error-rate {:.1} %)",
                        watched.rollbacks,
                        watched.transactions,
                        rate * 100.0,
                        self.max_error_rate * 100.0
                    )));
                }
            }
            check_late_writes(
                self.way,
                self.green,
                self.blue,
                self.slot,
                self.publication,
                self.barrier,
                self.fence_xid,
            )
            .await?;
            if Instant::now() >= end {
                return Ok(watched);
            }
            tokio::time::sleep(EVERY.min(end.saturating_duration_since(Instant::now()))).await;
        }
    }
}

/// Fails with [`CutoverError::LateWrite`] when a session on the fenced side holds an xid (it
/// is writing) or the drained direction's origins moved past `barrier` (the fenced side
/// committed a published change after the fence).
pub(crate) async fn check_late_writes(
    way: Way,
    green: &Client,
    blue: &Client,
    slot: &str,
    publication: &str,
    barrier: Lsn,
    fence_xid: i64,
) -> Result<(), CutoverError> {
    let (fenced, side) = match way {
        Way::Forward => (blue, "blue"),
        Way::Back => (green, "green"),
    };
    let writing: Vec<String> = fence::direct_sessions(fenced, side, &[])
        .await?
        .into_iter()
        .filter(|s| s.xid.is_some())
        .map(|s| s.to_string())
        .collect();
    let moved = drain::position_of(way, green, blue, slot)
        .await?
        .is_some_and(|p| p > barrier);
    if writing.is_empty() && !moved {
        return Ok(());
    }
    let mut detail = Vec::new();
    if !writing.is_empty() {
        detail.push(format!("sessions writing now: {}", writing.join(", ")));
    }
    if moved {
        let rows = fence::late_writes(fenced, side, publication, fence_xid).await?;
        detail.push(if rows.is_empty() {
            "the drained direction's origins moved past the fence (a committed change; deleted rows leave no xid to name)".to_owned()
        } else {
            format!("committed after the fence: {}", rows.join(", "))
        });
    }
    Err(CutoverError::LateWrite {
        side,
        detail: detail.join("; "),
    })
}
