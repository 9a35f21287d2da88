//! Where the reverse direction stands, for `blueshift status`: the `blueshift.reverse` row and
//! the reverse slot on green, the reverse origins on blue.
//!
//! ```text
//!   green                                         blue
//!   blueshift.reverse (armed_lsn, armed_at)  ┐    ┌ pg_replication_origin blueshift_<slot>_r<n>
//!   pg_replication_slots (<slot>_reverse)    ┴────┴ pg_replication_origin_progress(name, true)
//!   pg_current_wal_lsn()
//! ```

use std::time::SystemTime;

use blueshift_decoder::config::ConnectConfig;
use blueshift_decoder::ident::quote_ident;
use blueshift_decoder::Lsn;
use serde_json::{json, Value};

use super::{connect, read_reverse, reverse_origin_worker, DirectionError, Reverse};
use crate::client;
use crate::status::slot::{self, SlotInfo};
use crate::sync::ORIGIN_PREFIX;

/// The reverse direction of one forward slot, as read from both servers.
#[derive(Debug, Clone, PartialEq)]
pub struct ReverseStatus {
    /// The `blueshift.reverse` row.
    pub armed: Reverse,
    /// The reverse slot on green; `None` when it is gone (see [`Self::problems`]).
    pub slot: Option<SlotInfo>,
    /// Green's `pg_current_wal_lsn()`.
    pub green_current_lsn: Lsn,
    /// The reverse appliers' origins on blue: (name, durable progress).
    pub origins: Vec<(String, Option<Lsn>)>,
    /// What blue durably holds of green's writes (the origins' maximum progress, or the slot's
    /// confirmed position when further).
    pub blue_durable_lsn: Option<Lsn>,
    /// Green's current position minus what blue durably holds.
    pub lag_bytes: Option<u64>,
    /// What stops the reverse direction, with the fix.
    pub problems: Vec<String>,
}

/// Reads the reverse direction of forward slot `slot`; `None` when it is not armed.
pub async fn reverse_status(
    blue: &ConnectConfig,
    green: &ConnectConfig,
    slot: &str,
) -> Result<Option<ReverseStatus>, DirectionError> {
    let (green_sql, green_conn) = connect(green, "green").await?;
    let read = read_green(&green_sql, slot).await;
    client::close(green_sql, green_conn).await;
    let Some((armed, info, green_current_lsn)) = read? else {
        return Ok(None);
    };
    let (blue_sql, blue_conn) = connect(blue, "blue").await?;
    let origins = read_origins(&blue_sql, slot).await;
    client::close(blue_sql, blue_conn).await;
    let origins = origins?;
    let mut problems = Vec::new();
    if info.is_none() {
        problems.push(
            DirectionError::SlotLost {
                slot: armed.slot.clone(),
                reverse_slot: armed.reverse_slot.clone(),
                armed_lsn: armed.armed_lsn,
            }
            .to_string(),
        );
    }
    let applied = origins.iter().filter_map(|(_, p)| *p).max();
    let confirmed = info.as_ref().and_then(|s| s.confirmed_flush_lsn);
    let blue_durable_lsn = match (applied, confirmed) {
        (Some(a), Some(c)) => Some(a.max(c)),
        (a, c) => a.or(c),
    };
    Ok(Some(ReverseStatus {
        lag_bytes: blue_durable_lsn.map(|d| green_current_lsn.bytes_since(d)),
        armed,
        slot: info,
        green_current_lsn,
        origins,
        blue_durable_lsn,
        problems,
    }))
}

async fn read_green(
    green: &tokio_postgres::Client,
    slot: &str,
) -> Result<Option<(Reverse, Option<SlotInfo>, Lsn)>, DirectionError> {
    let sql = |what: &'static str| {
        move |source| DirectionError::Sql {
            side: "green",
            what: what.to_owned(),
            source,
        }
    };
    let Some(armed) = read_reverse(green, slot)
        .await
        .map_err(sql("read blueshift.reverse"))?
    else {
        return Ok(None);
    };
    let info = slot::read(green, &armed.reverse_slot)
        .await
        .map_err(sql("read pg_replication_slots"))?;
    let current = slot::current_wal_lsn(green)
        .await
        .map_err(sql("read pg_current_wal_lsn()"))?;
    Ok(Some((armed, info, current)))
}

async fn read_origins(
    blue: &tokio_postgres::Client,
    slot: &str,
) -> Result<Vec<(String, Option<Lsn>)>, DirectionError> {
    let prefix = format!("{ORIGIN_PREFIX}{slot}_r");
    let rows = blue
        .query(
            "SELECT roname::pg_catalog.text, \
                    pg_catalog.pg_replication_origin_progress(roname, true)::pg_catalog.text \
               FROM pg_catalog.pg_replication_origin \
              WHERE pg_catalog.starts_with(roname, $1)",
            &[&prefix],
        )
        .await
        .map_err(DirectionError::sql(
            "blue",
            "read the reverse replication origins",
        ))?;
    let mut origins: Vec<(usize, String, Option<Lsn>)> = rows
        .iter()
        .filter_map(|r| {
            let name: String = r.get(0);
            let n = reverse_origin_worker(slot, &name)?;
            Some((n, name, slot::parse_lsn(r.get(1))))
        })
        .collect();
    origins.sort_by_key(|o| o.0);
    Ok(origins.into_iter().map(|(_, n, p)| (n, p)).collect())
}

impl ReverseStatus {
    /// As JSON (LSNs as `X/Y` strings).
    pub fn to_json(&self) -> Value {
        let lsn = |l: Option<Lsn>| l.map(|l| l.to_string());
        let armed_at = self
            .armed
            .armed_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        json!({
            "direction": "reverse",
            "slot": self.armed.reverse_slot,
            "publication": self.armed.reverse_publication,
            "armed_lsn": self.armed.armed_lsn.to_string(),
            "armed_at_epoch": armed_at,
            "slot_active": self.slot.as_ref().map(|s| s.active),
            "confirmed_flush_lsn": lsn(self.slot.as_ref().and_then(|s| s.confirmed_flush_lsn)),
            "green_current_lsn": self.green_current_lsn.to_string(),
            "blue": {
                "origins": self.origins.iter().map(|(name, progress)| json!({
                    "name": name,
                    "progress": lsn(*progress),
                })).collect::<Vec<_>>(),
                "durable_lsn": lsn(self.blue_durable_lsn),
            },
            "lag_bytes": self.lag_bytes,
            "problems": self.problems,
        })
    }

    /// Readable lines, one fact each (`row` formats a label and a value).
    pub fn lines(&self) -> Vec<(String, String)> {
        let lsn = |l: Option<Lsn>| l.map_or_else(|| "-".to_owned(), |l| l.to_string());
        let mut lines = vec![
            (
                "slot on green".to_owned(),
                quote_ident(&self.armed.reverse_slot),
            ),
            (
                "publication on green".to_owned(),
                quote_ident(&self.armed.reverse_publication),
            ),
            ("armed at".to_owned(), self.armed.armed_lsn.to_string()),
        ];
        let state = match &self.slot {
            None => "GONE".to_owned(),
            Some(s) if s.active => "active".to_owned(),
            Some(_) => "inactive (no sidecar runs the reverse direction)".to_owned(),
        };
        lines.push(("state".to_owned(), state));
        lines.push((
            "green current WAL LSN".to_owned(),
            self.green_current_lsn.to_string(),
        ));
        for (name, progress) in &self.origins {
            lines.push((format!("origin {name} (blue)"), lsn(*progress)));
        }
        lines.push((
            "behind green".to_owned(),
            self.lag_bytes
                .map_or_else(|| "-".to_owned(), crate::status::bytes),
        ));
        lines
    }
}
