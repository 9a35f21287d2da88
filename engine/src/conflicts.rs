//! `conflicts`: the conflicts two-way sync recorded, read back from both sides.
//!
//! Each side keeps the conflicts it detected (`blueshift.conflict`, written by the appliers in
//! the same transaction as the change they resolved: see `blueshift_applier::conflict`): green
//! those of blue's changes (the forward direction), blue those of green's (the reverse one).
//! [`list`] reads both, oldest first.

use blueshift_decoder::config::ConnectConfig;
use serde_json::{json, Value};

use crate::client::{self, ClientError, SqlError};

/// One recorded conflict.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// The side it was detected on (and recorded): `green` or `blue`.
    pub side: &'static str,
    /// Its number on that side.
    pub id: i64,
    /// When it was detected (ISO 8601, UTC).
    pub detected_at: String,
    /// `forward` (blue's change on green) or `reverse` (green's change on blue).
    pub direction: String,
    /// The kind (`insert_exists`, …).
    pub kind: String,
    /// The table, `schema.name`.
    pub relation: String,
    /// The row's key, `{"column": "value"}`, when it has one.
    pub key: Option<Value>,
    /// The local row(s) (an array when the change met several).
    pub local_row: Option<Value>,
    /// The incoming row, as the other side sent it (text values).
    pub remote_row: Option<Value>,
    /// The local row's last commit time.
    pub local_commit_ts: Option<String>,
    /// The incoming change's commit time.
    pub remote_commit_ts: String,
    /// The local row's last writer's origin (`local` for a session on that side).
    pub local_origin: Option<String>,
    /// The incoming transaction's origin on its side (`local` for a session there).
    pub remote_origin: String,
    /// The local side's WAL position when it was detected.
    pub local_lsn: String,
    /// The incoming transaction's commit LSN on its side.
    pub remote_lsn: String,
    /// `apply_remote` or `keep_local`.
    pub resolution: String,
}

impl Conflict {
    /// The conflict as a JSON object.
    pub fn to_json(&self) -> Value {
        json!({
            "side": self.side,
            "id": self.id,
            "detected_at": self.detected_at,
            "direction": self.direction,
            "kind": self.kind,
            "table": self.relation,
            "key": self.key,
            "local_row": self.local_row,
            "remote_row": self.remote_row,
            "local_commit_ts": self.local_commit_ts,
            "remote_commit_ts": self.remote_commit_ts,
            "local_origin": self.local_origin,
            "remote_origin": self.remote_origin,
            "local_lsn": self.local_lsn,
            "remote_lsn": self.remote_lsn,
            "resolution": self.resolution,
        })
    }

    /// `(k)=(v)` of its key, or `(no key)`.
    pub fn key_text(&self) -> String {
        match &self.key {
            Some(Value::Object(map)) if !map.is_empty() => {
                let names: Vec<&str> = map.keys().map(String::as_str).collect();
                let values: Vec<String> = map
                    .values()
                    .map(|v| match v {
                        Value::String(s) => s.clone(),
                        Value::Null => "NULL".to_owned(),
                        other => other.to_string(),
                    })
                    .collect();
                format!("({})=({})", names.join(", "), values.join(", "))
            }
            _ => "(no key)".to_owned(),
        }
    }
}

/// Why the conflicts could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConflictsError {
    /// A connection failed.
    #[error("could not connect to {side}")]
    Connect {
        /// `blue` or `green`.
        side: &'static str,
        /// Why.
        #[source]
        source: ClientError,
    },
    /// The query failed.
    #[error("could not read blueshift.conflict on {side}")]
    Query {
        /// `blue` or `green`.
        side: &'static str,
        /// Why.
        #[source]
        source: SqlError,
    },
}

const QUERY: &str = "\
SELECT id, pg_catalog.to_char(pg_catalog.timezone('UTC', detected_at), \
           'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
       direction, kind, relation, key::pg_catalog.text, local_row::pg_catalog.text, \
       remote_row::pg_catalog.text, local_commit_ts::pg_catalog.text, \
       remote_commit_ts::pg_catalog.text, local_origin, remote_origin, \
       local_lsn::pg_catalog.text, remote_lsn::pg_catalog.text, resolution \
  FROM blueshift.conflict WHERE slot OPERATOR(pg_catalog.=) $1 ORDER BY id";

/// The conflicts of slot `slot` recorded on green and on blue, oldest first (by detection time).
pub async fn list(
    blue: &ConnectConfig,
    green: &ConnectConfig,
    slot: &str,
) -> Result<Vec<Conflict>, ConflictsError> {
    let mut all = Vec::new();
    for (side, config) in [("green", green), ("blue", blue)] {
        all.extend(read(side, config, slot).await?);
    }
    all.sort_by(|a, b| a.detected_at.cmp(&b.detected_at).then(a.id.cmp(&b.id)));
    Ok(all)
}

async fn read(
    side: &'static str,
    config: &ConnectConfig,
    slot: &str,
) -> Result<Vec<Conflict>, ConflictsError> {
    let (c, conn) = client::connect(config, "blueshift conflicts")
        .await
        .map_err(|source| ConflictsError::Connect { side, source })?;
    let rows = match client::relation_exists(&c, "blueshift.conflict").await {
        Ok(false) => Ok(Vec::new()),
        Ok(true) => c.query(QUERY, &[&slot]).await,
        Err(e) => Err(e),
    };
    client::close(c, conn).await;
    let rows = rows.map_err(|e| ConflictsError::Query {
        side,
        source: SqlError::from(e),
    })?;
    let parse = |text: Option<String>| text.and_then(|t| serde_json::from_str(&t).ok());
    Ok(rows
        .iter()
        .map(|r| Conflict {
            side,
            id: r.get(0),
            detected_at: r.get(1),
            direction: r.get(2),
            kind: r.get(3),
            relation: r.get(4),
            key: parse(r.get(5)),
            local_row: parse(r.get(6)),
            remote_row: parse(r.get(7)),
            local_commit_ts: r.get(8),
            remote_commit_ts: r.get(9),
            local_origin: r.get(10),
            remote_origin: r.get(11),
            local_lsn: r.get(12),
            remote_lsn: r.get(13),
            resolution: r.get(14),
        })
        .collect())
}
