//! `status`: where a blue → green sync stands, read from the two servers alone (no running
//! `blueshift sync` needed).
//!
//! ```text
//!   blue                                          green
//!   pg_replication_slots (slot)  ──┐      ┌── pg_replication_origin (blueshift_<slot>_<n>)
//!   pg_current_wal_lsn()         ──┴ Status ┴── pg_replication_origin_progress(name, true)
//! ```
//!
//! - [`slot`]: the slot on blue (active? plugin, `confirmed_flush_lsn`, `restart_lsn`,
//!   `wal_status`, `safe_wal_size`) and blue's current WAL position; the WAL retained is
//!   `pg_current_wal_lsn() - restart_lsn`.
//! - [`origin`]: the appliers' origins on green; their maximum progress is green's durable
//!   position.
//! - the slot guard's record on green ([`crate::slot_guard`]): the slot must not be past what
//!   blueshift acknowledged, nor invalidated; either is listed under *problems*, with the text
//!   `blueshift sync` would stop with (a slot gone while green holds changes streamed through it
//!   is an error, as sync's would be).
//!
//! The lag is computed as the running sync computes `blueshift_lag_seconds` and
//! `blueshift_lag_bytes`:
//! - in bytes, blue's current position minus what green durably holds: the origins' progress,
//!   or the slot's `confirmed_flush_lsn` when it is further (the sync confirms an idle stream's
//!   position, which no transaction of green's records, and never confirms more than green
//!   holds);
//! - in seconds, from the heartbeat the sync records on green (`blueshift.sync_lag`, see
//!   [`crate::sync::heartbeat`]): the age of the oldest commit green does not hold, which keeps
//!   growing while the sync is stopped or cut off. Blue keeps no map from LSN to time, so
//!   without a heartbeat (a sync of an older version, or a green that refused the table) the
//!   seconds are unknown.

pub mod origin;
pub mod slot;

use std::fmt;

use blueshift_decoder::config::ConnectConfig;
use blueshift_decoder::ident::quote_ident;
use blueshift_decoder::Lsn;
use serde_json::{json, Value};

pub use origin::{durable_position, origin_name, origin_worker, OriginProgress, ORIGIN_PREFIX};
pub use slot::SlotInfo;

use crate::client::{self, ClientError, SqlError};
use crate::slot_guard::{self, Record, SlotError};

pub use crate::sync::DEFAULT_SLOT;

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The source.
    Blue,
    /// The target.
    Green,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Blue => "blue",
            Side::Green => "green",
        })
    }
}

/// What to look at.
#[derive(Debug, Clone)]
pub struct StatusOptions {
    /// Blue's connection settings.
    pub source: ConnectConfig,
    /// Green's connection settings.
    pub target: ConnectConfig,
    /// The slot on blue; its appliers' origins on green are `blueshift_<slot>_<n>`.
    pub slot: String,
}

/// Why `status` could not tell.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// Privileges are missing on green (each named with the GRANT that fixes it).
    #[error(transparent)]
    Privileges(crate::privileges::MissingPrivileges),
    /// The slot name is not one PostgreSQL accepts.
    #[error("invalid replication slot name {slot:?}: slot names may contain only lower case letters, digits and underscores, at most 63 of them")]
    InvalidSlotName {
        /// The name given.
        slot: String,
    },
    /// A server could not be reached.
    #[error("cannot reach {side}")]
    Connect {
        /// Which one.
        side: Side,
        /// Why.
        #[source]
        source: ClientError,
    },
    /// A catalog query failed.
    #[error("cannot read {what} on {side} ({target}) — if permission was denied, connect as a superuser (the replication origin functions are superuser-only by default)")]
    Query {
        /// Which server.
        side: Side,
        /// Where, without the password.
        target: String,
        /// What was being read.
        what: &'static str,
        /// Why.
        #[source]
        source: SqlError,
    },
    /// The slot does not exist on blue.
    #[error("replication slot {slot:?} does not exist on blue ({target}) — start the sync with `blueshift sync --source … --target … --slot {slot}`, or pass the --slot it uses")]
    NoSlot {
        /// The slot.
        slot: String,
        /// Blue, without the password.
        target: String,
    },
    /// The slot is gone although green holds changes streamed through it.
    #[error(transparent)]
    Slot(SlotError),
    /// No origin of the slot exists on green.
    #[error("green ({target}) has no replication origin of slot {slot:?} (named {ORIGIN_PREFIX}{slot}_<n>) — no applier of this slot has started yet; start them with `blueshift sync --source … --target … --slot {slot}`")]
    NoOrigins {
        /// The slot.
        slot: String,
        /// Green, without the password.
        target: String,
    },
}

/// Where a sync stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// The slot on blue.
    pub slot: SlotInfo,
    /// Blue's `pg_current_wal_lsn()`.
    pub blue_current_lsn: Lsn,
    /// `pg_current_wal_lsn() - restart_lsn`: WAL blue keeps for the slot; `None` when the slot
    /// has no `restart_lsn` (its WAL was lost).
    pub retained_wal_bytes: Option<u64>,
    /// The slot's origins on green, by applier number.
    pub origins: Vec<OriginProgress>,
    /// The maximum of the origins' progress: what green durably holds; `None` before the first
    /// applied transaction.
    pub green_lsn: Option<Lsn>,
    /// Blue's current position minus green's durable one (or the slot's confirmed position
    /// when further); `None` before the first applied transaction.
    pub lag_bytes: Option<u64>,
    /// The lag in seconds, computed from the sync's heartbeat; `None` when none was recorded.
    pub lag_seconds: Option<f64>,
    /// Whether the sync recorded its heartbeat lately (it runs and reaches green); `None` when
    /// none was ever recorded.
    pub sync_recording: Option<bool>,
    /// Green's record of the slot (`blueshift.slot_guard`); `None` before sync first ran with
    /// the slot guard.
    pub guard: Option<Record>,
    /// What stops (or will stop) sync, each with its fix: a slot past what blueshift
    /// acknowledged, an invalidated slot, one about to be.
    pub problems: Vec<String>,
    /// The reverse direction (green → blue), when armed (see [`crate::sync::direction`]).
    pub reverse: Option<crate::sync::direction::ReverseStatus>,
}

/// Reads the slot on blue, then its origins and guard on green.
pub async fn status(options: &StatusOptions) -> Result<Status, StatusError> {
    let slot_name = options.slot.as_str();
    if blueshift_decoder::connection::validate_slot_name(slot_name).is_err() {
        return Err(StatusError::InvalidSlotName {
            slot: slot_name.to_owned(),
        });
    }
    // Blue first, then green: sync records a position in green's slot guard before it tells
    // the slot, so a guard read after the slot is never behind it. Read at once, a sync
    // acknowledging in between would show as a slot "past what blueshift acknowledged".
    let blue = read_blue(&options.source, slot_name).await;
    let green = read_green(&options.target, slot_name).await;
    let (slot, blue_current_lsn, blue_major) = blue?;
    let (origins, guard, heartbeat) = green?;
    let green_lsn = durable_position(&origins);
    let Some(slot) = slot else {
        if guard.is_some() || green_lsn.is_some() {
            return Err(StatusError::Slot(SlotError::Lost {
                slot: slot_name.to_owned(),
            }));
        }
        return Err(StatusError::NoSlot {
            slot: slot_name.to_owned(),
            target: options.source.to_string(),
        });
    };
    if origins.is_empty() {
        return Err(StatusError::NoOrigins {
            slot: slot_name.to_owned(),
            target: options.target.to_string(),
        });
    }
    let mut problems = Vec::new();
    match slot.wal_status.as_deref() {
        Some("lost") => problems.push(
            SlotError::Invalidated {
                slot: slot.name.clone(),
                reason: slot.invalidation.clone(),
                idle_timeout_known: blue_major >= 18,
            }
            .to_string(),
        ),
        Some("unreserved") => problems.push(format!(
            "replication slot {} is past max_slot_wal_keep_size (wal_status = unreserved): blue \
             removes its WAL at the next checkpoint unless sync catches up first — raise \
             max_slot_wal_keep_size on blue now",
            quote_ident(&slot.name)
        )),
        _ => {}
    }
    if let Some(record) = &guard {
        if let Err(e) = slot_guard::verify(slot_name, record, slot.confirmed_flush_lsn) {
            problems.push(e.to_string());
        }
    }
    let now = std::time::SystemTime::now();
    let (lag_seconds, sync_recording) = match heartbeat {
        Some((recorded_at, basis)) => (
            Some(crate::sync::heartbeat::lag_seconds(now, recorded_at, basis)),
            Some(
                now.duration_since(recorded_at)
                    .map_or(true, |age| age <= crate::sync::heartbeat::STALE_AFTER),
            ),
        ),
        None => (None, None),
    };
    let confirmed = green_lsn.map(|green| green.max(slot.confirmed_flush_lsn.unwrap_or(green)));
    let reverse =
        match crate::sync::direction::reverse_status(&options.source, &options.target, slot_name)
            .await
        {
            Ok(reverse) => reverse,
            Err(e) => {
                problems.push(format!("could not read the reverse direction: {e}"));
                None
            }
        };
    if let Some(r) = &reverse {
        problems.extend(r.problems.iter().cloned());
    }
    Ok(Status {
        reverse,
        retained_wal_bytes: slot
            .restart_lsn
            .map(|restart| blue_current_lsn.bytes_since(restart)),
        lag_bytes: confirmed.map(|green| blue_current_lsn.bytes_since(green)),
        lag_seconds,
        sync_recording,
        slot,
        blue_current_lsn,
        origins,
        green_lsn,
        guard,
        problems,
    })
}

async fn read_blue(
    config: &ConnectConfig,
    slot: &str,
) -> Result<(Option<SlotInfo>, Lsn, u32), StatusError> {
    let (client, connection) = connect(Side::Blue, config).await?;
    let result = read_slot(&client, config, slot).await;
    client::close(client, connection).await;
    result
}

async fn read_slot(
    client: &tokio_postgres::Client,
    config: &ConnectConfig,
    slot: &str,
) -> Result<(Option<SlotInfo>, Lsn, u32), StatusError> {
    let query_error = |what| {
        move |source| StatusError::Query {
            side: Side::Blue,
            target: config.to_string(),
            what,
            source,
        }
    };
    let info = slot::read(client, slot)
        .await
        .map_err(query_error("pg_replication_slots"))?;
    let current = slot::current_wal_lsn(client)
        .await
        .map_err(query_error("pg_current_wal_lsn()"))?;
    let version = crate::client::server_version_num(client)
        .await
        .map_err(|e| query_error("server_version_num")(SqlError::from(e)))?;
    Ok((info, current, u32::try_from(version / 10_000).unwrap_or(0)))
}

/// A heartbeat row: when it was recorded, and the lag's basis then.
type Heartbeat = (std::time::SystemTime, Option<std::time::SystemTime>);

async fn read_green(config: &ConnectConfig, slot: &str) -> Result<GreenState, StatusError> {
    let (client, connection) = connect(Side::Green, config).await?;
    let result = read_green_with(&client, config, slot).await;
    client::close(client, connection).await;
    result
}

/// What status reads on green: the origins, the slot guard's record, the lag heartbeat.
type GreenState = (Vec<OriginProgress>, Option<Record>, Option<Heartbeat>);

async fn read_green_with(
    client: &tokio_postgres::Client,
    config: &ConnectConfig,
    slot: &str,
) -> Result<GreenState, StatusError> {
    let missing = crate::privileges::green_for_origins(client, false)
        .await
        .map_err(|source| StatusError::Query {
            side: Side::Green,
            target: config.to_string(),
            what: "privileges",
            source: source.into(),
        })?;
    if !missing.is_empty() {
        return Err(StatusError::Privileges(
            crate::privileges::MissingPrivileges { missing },
        ));
    }
    let query_error = |what| {
        move |source| StatusError::Query {
            side: Side::Green,
            target: config.to_string(),
            what,
            source,
        }
    };
    let origins = origin::read(client, slot)
        .await
        .map_err(query_error("the replication origins"))?;
    let guard = slot_guard::read(client, slot)
        .await
        .map_err(|e| query_error("blueshift.slot_guard")(SqlError::from(e)))?;
    Ok((origins, guard, read_heartbeat(client, slot).await))
}

/// The sync's heartbeat row of `slot`, when the table and the row exist.
async fn read_heartbeat(client: &tokio_postgres::Client, slot: &str) -> Option<Heartbeat> {
    let row = client
        .query_opt(
            "SELECT recorded_at, lag_basis FROM blueshift.sync_lag WHERE slot = $1",
            &[&slot],
        )
        .await;
    match row {
        Ok(Some(row)) => Some((row.try_get(0).ok()?, row.try_get(1).ok()?)),
        Ok(None) => None,
        // 42P01: no table, no heartbeat yet.
        Err(e) => {
            tracing::debug!(error = %e, "no lag heartbeat on green");
            None
        }
    }
}

async fn connect(
    side: Side,
    config: &ConnectConfig,
) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), StatusError> {
    client::connect(config, "blueshift status")
        .await
        .map_err(|source| StatusError::Connect { side, source })
}

impl Status {
    /// The status as one JSON object (LSNs as `X/Y` strings, sizes in bytes, absent values as
    /// `null`).
    pub fn to_json(&self) -> Value {
        let lsn = |l: Option<Lsn>| l.map(|l| l.to_string());
        json!({
            "slot": {
                "name": self.slot.name,
                "plugin": self.slot.plugin,
                "slot_type": self.slot.slot_type,
                "database": self.slot.database,
                "active": self.slot.active,
                "active_pid": self.slot.active_pid,
                "confirmed_flush_lsn": lsn(self.slot.confirmed_flush_lsn),
                "restart_lsn": lsn(self.slot.restart_lsn),
                "wal_status": self.slot.wal_status,
                "safe_wal_size": self.slot.safe_wal_size,
                "invalidation_reason": self.slot.invalidation,
            },
            "blue": {
                "current_lsn": self.blue_current_lsn.to_string(),
                "retained_wal_bytes": self.retained_wal_bytes,
            },
            "green": {
                "origins": self.origins.iter().map(|o| json!({
                    "name": o.name,
                    "worker": o.worker,
                    "progress": lsn(o.progress),
                })).collect::<Vec<_>>(),
                "durable_lsn": lsn(self.green_lsn),
            },
            "lag_bytes": self.lag_bytes,
            "lag_seconds": self.lag_seconds,
            "sync_recording": self.sync_recording,
            "slot_guard": self.guard.as_ref().map(|g| json!({
                "acknowledged": g.acknowledged.to_string(),
                "created_lsn": lsn(g.created_lsn),
                "system_identifier": g.system_identifier,
                "timeline": g.timeline,
                "database": g.database,
            })),
            "problems": self.problems,
            "direction": "forward",
            "reverse": self.reverse.as_ref().map(crate::sync::direction::ReverseStatus::to_json),
        })
    }
}

impl fmt::Display for Status {
    /// A readable table, one fact per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.slot;
        let lsn = |l: Option<Lsn>| l.map_or_else(|| "-".to_owned(), |l| l.to_string());
        for problem in &self.problems {
            writeln!(f, "PROBLEM: {problem}")?;
        }
        if !self.problems.is_empty() {
            writeln!(f)?;
        }
        writeln!(f, "blue")?;
        row(f, "slot", &quote_ident(&s.name))?;
        let kind = match (&s.plugin, &s.database) {
            (Some(plugin), Some(db)) => format!("{} ({plugin}, database {db})", s.slot_type),
            _ => s.slot_type.clone(),
        };
        row(f, "type", &kind)?;
        let state = match (s.active, s.active_pid) {
            (true, Some(pid)) => format!("active (pid {pid})"),
            (true, None) => "active".to_owned(),
            (false, _) => "inactive".to_owned(),
        };
        row(f, "state", &state)?;
        row(f, "current WAL LSN", &self.blue_current_lsn.to_string())?;
        row(f, "confirmed_flush_lsn", &lsn(s.confirmed_flush_lsn))?;
        row(f, "restart_lsn", &lsn(s.restart_lsn))?;
        let retained = self
            .retained_wal_bytes
            .map_or_else(|| "- (the slot has no restart_lsn)".to_owned(), bytes);
        row(f, "WAL retained", &retained)?;
        if let Some(wal_status) = &s.wal_status {
            row(f, "wal_status", wal_status)?;
        }
        if s.wal_status.is_some() {
            let safe = match s.safe_wal_size {
                Some(n) => bytes(u64::try_from(n).unwrap_or(0)),
                None => "unlimited".to_owned(),
            };
            row(f, "safe_wal_size", &safe)?;
        }
        writeln!(f, "green")?;
        for o in &self.origins {
            let progress = o
                .progress
                .map_or_else(|| "- (nothing applied yet)".to_owned(), |l| l.to_string());
            row(f, &format!("origin {}", o.name), &progress)?;
        }
        let durable = self
            .green_lsn
            .map_or_else(|| "- (nothing applied yet)".to_owned(), |l| l.to_string());
        row(f, "durable position", &durable)?;
        let guard = self.guard.as_ref().map_or_else(
            || "- (no record yet: the next `blueshift sync` records the slot)".to_owned(),
            |g| g.acknowledged.to_string(),
        );
        row(f, "slot guard: acknowledged", &guard)?;
        writeln!(f, "lag")?;
        let lag = self
            .lag_bytes
            .map_or_else(|| "- (green has applied nothing yet)".to_owned(), bytes);
        row(f, "behind blue", &lag)?;
        let seconds = match (self.lag_seconds, self.sync_recording) {
            (Some(s), Some(true)) => format!("{s:.1} s"),
            (Some(s), _) => format!(
                "{s:.1} s (and growing: the sync is not recording its heartbeat on green — stopped, or cut off)"
            ),
            (None, _) => "- (no heartbeat on green: the sync has not run yet, or could not record it)"
                .to_owned(),
        };
        row(f, "seconds", &seconds)?;
        if let Some(reverse) = &self.reverse {
            writeln!(f, "reverse (green → blue)")?;
            for (label, value) in reverse.lines() {
                row(f, &label, &value)?;
            }
        }
        Ok(())
    }
}

fn row(f: &mut fmt::Formatter<'_>, label: &str, value: &str) -> fmt::Result {
    writeln!(f, "  {label:<28} {value}")
}

/// `n bytes`, with a binary-prefixed size beside it from 1 KiB on.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    // Precision loss only past 2^53 bytes, far beyond any WAL.
    let mut size = n as f64 / 1024.0;
    let mut unit = 0;
    while size >= 1024.0 && unit + 1 < UNITS.len() {
        size /= 1024.0;
        unit += 1;
    }
    format!("{n} bytes ({size:.1} {})", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(bytes(0), "0 bytes");
        assert_eq!(bytes(1023), "1023 bytes");
        assert_eq!(bytes(1536), "1536 bytes (1.5 KiB)");
        assert_eq!(bytes(16 << 20), "16777216 bytes (16.0 MiB)");
    }

    #[test]
    fn renders_a_table_and_json() {
        let status = Status {
            slot: SlotInfo {
                name: "s".into(),
                plugin: Some("pgoutput".into()),
                slot_type: "logical".into(),
                database: Some("app".into()),
                active: true,
                active_pid: Some(42),
                restart_lsn: Some(Lsn(0x100)),
                confirmed_flush_lsn: Some(Lsn(0x200)),
                wal_status: Some("reserved".into()),
                safe_wal_size: None,
                invalidation: None,
            },
            blue_current_lsn: Lsn(0x1_0000_0300),
            retained_wal_bytes: Some(0x1_0000_0200),
            origins: vec![OriginProgress {
                name: "blueshift_s_0".into(),
                worker: 0,
                progress: Some(Lsn(0xABC)),
            }],
            green_lsn: Some(Lsn(0xABC)),
            lag_bytes: Some(0x1_0000_0300 - 0xABC),
            lag_seconds: Some(2.5),
            sync_recording: Some(false),
            guard: None,
            problems: vec!["the slot moved".into()],
            reverse: None,
        };
        let text = status.to_string();
        assert!(text.contains("active (pid 42)"), "{text}");
        assert!(text.contains("origin blueshift_s_0"), "{text}");
        assert!(text.contains("0/ABC"), "{text}");
        assert!(text.contains("unlimited"), "{text}");
        assert!(text.contains("2.5 s (and growing"), "{text}");
        assert!(text.starts_with("PROBLEM: the slot moved\n"), "{text}");
        assert!(text.contains("no record yet"), "{text}");
        let v = status.to_json();
        assert_eq!(v["blue"]["current_lsn"], "1/300");
        assert_eq!(v["green"]["durable_lsn"], "0/ABC");
        assert_eq!(v["green"]["origins"][0]["progress"], "0/ABC");
        assert_eq!(v["slot"]["active_pid"], 42);
        assert_eq!(v["lag_bytes"], 0x1_0000_0300u64 - 0xABC);
        assert_eq!(v["problems"][0], "the slot moved");
        assert_eq!(v["slot_guard"], Value::Null);
    }
}
