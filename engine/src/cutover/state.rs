//! The persisted state machine on green: `blueshift.cutover` (one row per slot: the state and
//! what the steps recorded) and `blueshift.cutover_event` (append-only: every transition with
//! its detail). Both are written in one statement, so the log never disagrees with the row.
//!
//! ```text
//! replicating → ready → fenced → drained → switched → watching → cut-over
//!                  └───────┴────────┴─────────┴─► rolled-back (automatic, before RESUME)
//! ```

use std::fmt;
use std::str::FromStr;

use blueshift_decoder::Lsn;
use tokio_postgres::Client;

use super::error::CutoverError;

/// The tables, created when missing (under the advisory lock blueshift's other state tables
/// use, so concurrent `CREATE SCHEMA IF NOT EXISTS` never race).
const SCHEMA: &str = "\
SELECT pg_catalog.pg_advisory_xact_lock(7235342165031183718);
CREATE SCHEMA IF NOT EXISTS blueshift;
CREATE TABLE IF NOT EXISTS blueshift.cutover (
    slot text PRIMARY KEY,
    state text NOT NULL,
    fence_lsn pg_lsn,
    fence_end pg_lsn,
    fence_xid bigint,
    drained_lsn pg_lsn,
    paused_at timestamptz,
    resumed_at timestamptz,
    pause_ms double precision,
    blue_entry text,
    green_entry text,
    direction text NOT NULL DEFAULT 'forward',
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE TABLE IF NOT EXISTS blueshift.cutover_event (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slot text NOT NULL,
    at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    state text NOT NULL,
    detail text NOT NULL
)";

/// A state of the cutover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The sync runs; no cutover is under way.
    Replicating,
    /// Preflight passed; nothing changed yet.
    Ready,
    /// PgBouncer paused, blue read-only, the fence marker written at `fence_lsn`.
    Fenced,
    /// Green holds everything up to the fence; sequences copied.
    Drained,
    /// PgBouncer's entry (or the switch command) points at green.
    Switched,
    /// Traffic resumed on green; the watch runs.
    Watching,
    /// Done: green takes the traffic.
    CutOver,
    /// Traffic went back to blue (automatically before RESUME).
    RolledBack,
    /// The operator finalized the cutover.
    Finalized,
}

impl State {
    /// Every state, in the machine's order (the `state` label values of
    /// `blueshift_cutover_state`).
    pub const ALL: [State; 9] = [
        State::Replicating,
        State::Ready,
        State::Fenced,
        State::Drained,
        State::Switched,
        State::Watching,
        State::CutOver,
        State::RolledBack,
        State::Finalized,
    ];

    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Replicating => "replicating",
            State::Ready => "ready",
            State::Fenced => "fenced",
            State::Drained => "drained",
            State::Switched => "switched",
            State::Watching => "watching",
            State::CutOver => "cut-over",
            State::RolledBack => "rolled-back",
            State::Finalized => "finalized",
        }
    }

    /// Whether a cutover is half done here (it must be resumed, not started again).
    pub fn in_progress(self) -> bool {
        matches!(
            self,
            State::Fenced | State::Drained | State::Switched | State::Watching
        )
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for State {
    type Err = String;

    fn from_str(s: &str) -> Result<State, String> {
        Ok(match s {
            "replicating" => State::Replicating,
            "ready" => State::Ready,
            "fenced" => State::Fenced,
            "drained" => State::Drained,
            "switched" => State::Switched,
            "watching" => State::Watching,
            "cut-over" => State::CutOver,
            "rolled-back" => State::RolledBack,
            "finalized" => State::Finalized,
            other => return Err(format!("unknown cutover state {other:?}")),
        })
    }
}

/// Which way traffic is moving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// Blue → green (`cutover`).
    Forward,
    /// Green → blue (`rollback`).
    Back,
}

impl Way {
    /// The name stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Way::Forward => "forward",
            Way::Back => "back",
        }
    }
}

/// The row of one slot's cutover.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The sync's slot.
    pub slot: String,
    /// Where the machine stands.
    pub state: State,
    /// The fence marker's LSN on blue (L).
    pub fence_lsn: Option<Lsn>,
    /// Blue's insert position right after the fence committed.
    pub fence_end: Option<Lsn>,
    /// The fence transaction's xid on blue (64-bit).
    pub fence_xid: Option<i64>,
    /// Green's durable position once drained.
    pub drained_lsn: Option<Lsn>,
    /// When PAUSE was issued (seconds since the epoch).
    pub paused_at: Option<f64>,
    /// When RESUME was issued (seconds since the epoch).
    pub resumed_at: Option<f64>,
    /// The write pause, PAUSE to RESUME, in milliseconds.
    pub pause_ms: Option<f64>,
    /// PgBouncer's entry before the switch (its connection string, pointing at blue).
    pub blue_entry: Option<String>,
    /// The entry written by the switch (pointing at green).
    pub green_entry: Option<String>,
    /// Which way the steps under way move traffic.
    pub way: Way,
    /// The last transition (seconds since the epoch).
    pub updated_at: f64,
}

impl Record {
    /// A fresh record for `slot` in `state`.
    pub fn new(slot: &str, state: State) -> Record {
        Record {
            slot: slot.to_owned(),
            state,
            fence_lsn: None,
            fence_end: None,
            fence_xid: None,
            drained_lsn: None,
            paused_at: None,
            resumed_at: None,
            pause_ms: None,
            blue_entry: None,
            green_entry: None,
            way: Way::Forward,
            updated_at: 0.0,
        }
    }
}

/// One line of the event log.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// When (text, as green prints it).
    pub at: String,
    /// The state entered.
    pub state: String,
    /// What happened.
    pub detail: String,
}

/// Creates the tables when missing.
pub(crate) async fn ensure(green: &Client) -> Result<(), CutoverError> {
    green
        .batch_execute(SCHEMA)
        .await
        .map_err(CutoverError::query("green", "create blueshift.cutover"))
}

const SELECT: &str = "\
SELECT slot, state, fence_lsn::pg_catalog.text, fence_end::pg_catalog.text, fence_xid,
       drained_lsn::pg_catalog.text,
       pg_catalog.date_part('epoch', paused_at), pg_catalog.date_part('epoch', resumed_at),
       pause_ms, blue_entry, green_entry, pg_catalog.date_part('epoch', updated_at),
       direction
  FROM blueshift.cutover WHERE slot = $1";

/// The record of `slot`, if any (and `None` when the table does not exist).
pub async fn load(green: &Client, slot: &str) -> Result<Option<Record>, CutoverError> {
    let exists = crate::client::relation_exists(green, "blueshift.cutover")
        .await
        .map_err(CutoverError::query("green", "look for blueshift.cutover"))?;
    if !exists {
        return Ok(None);
    }
    let Some(row) = green
        .query_opt(SELECT, &[&slot])
        .await
        .map_err(CutoverError::query("green", "read blueshift.cutover"))?
    else {
        return Ok(None);
    };
    let lsn = |i: usize| -> Option<Lsn> {
        row.get::<_, Option<String>>(i)
            .and_then(|s| s.parse::<Lsn>().ok())
    };
    let state: String = row.get(1);
    let state = state.parse::<State>().map_err(|e| {
        CutoverError::State(format!(
            "{e} in blueshift.cutover for slot {slot:?} — was it written by a newer blueshift?"
        ))
    })?;
    Ok(Some(Record {
        slot: row.get(0),
        state,
        fence_lsn: lsn(2),
        fence_end: lsn(3),
        fence_xid: row.get(4),
        drained_lsn: lsn(5),
        paused_at: row.get(6),
        resumed_at: row.get(7),
        pause_ms: row.get(8),
        blue_entry: row.get(9),
        green_entry: row.get(10),
        updated_at: row.get::<_, Option<f64>>(11).unwrap_or_default(),
        way: if row.get::<_, String>(12) == "back" {
            Way::Back
        } else {
            Way::Forward
        },
    }))
}

/// Writes `record` and appends `detail` to the event log, in one statement.
pub(crate) async fn save(
    green: &Client,
    record: &Record,
    detail: &str,
) -> Result<(), CutoverError> {
    let lsn = |l: Option<Lsn>| l.map(|l| l.to_string());
    green
        .execute(
            "WITH saved AS (
                INSERT INTO blueshift.cutover AS c (slot, state, fence_lsn, fence_end, fence_xid,
                       drained_lsn, paused_at, resumed_at, pause_ms, blue_entry, green_entry,
                       direction, updated_at)
                VALUES ($1, $2, $3::pg_catalog.text::pg_catalog.pg_lsn,
                        $4::pg_catalog.text::pg_catalog.pg_lsn, $5,
                        $6::pg_catalog.text::pg_catalog.pg_lsn,
                        pg_catalog.to_timestamp($7), pg_catalog.to_timestamp($8), $9, $10, $11,
                        $13, pg_catalog.clock_timestamp())
                ON CONFLICT (slot) DO UPDATE SET state = excluded.state,
                       fence_lsn = excluded.fence_lsn, fence_end = excluded.fence_end,
                       fence_xid = excluded.fence_xid, drained_lsn = excluded.drained_lsn,
                       paused_at = excluded.paused_at, resumed_at = excluded.resumed_at,
                       pause_ms = excluded.pause_ms, blue_entry = excluded.blue_entry,
                       green_entry = excluded.green_entry, direction = excluded.direction,
                       updated_at = excluded.updated_at
                RETURNING c.slot, c.state)
             INSERT INTO blueshift.cutover_event (slot, state, detail)
             SELECT slot, state, $12 FROM saved",
            &[
                &record.slot,
                &record.state.as_str(),
                &lsn(record.fence_lsn),
                &lsn(record.fence_end),
                &record.fence_xid,
                &lsn(record.drained_lsn),
                &record.paused_at,
                &record.resumed_at,
                &record.pause_ms,
                &record.blue_entry,
                &record.green_entry,
                &detail,
                &record.way.as_str(),
            ],
        )
        .await
        .map_err(CutoverError::query(
            "green",
            format!("record the cutover state {}", record.state),
        ))?;
    tracing::info!(slot = %record.slot, state = %record.state, direction = record.way.as_str(), detail, "cutover state");
    Ok(())
}

/// The last `limit` events of `slot`, oldest first (empty when the table does not exist).
pub async fn events(green: &Client, slot: &str, limit: i64) -> Result<Vec<Event>, CutoverError> {
    let exists = crate::client::relation_exists(green, "blueshift.cutover_event")
        .await
        .map_err(CutoverError::query(
            "green",
            "look for blueshift.cutover_event",
        ))?;
    if !exists {
        return Ok(Vec::new());
    }
    let rows = green
        .query(
            "SELECT at::pg_catalog.text, state, detail FROM (
                 SELECT id, at, state, detail FROM blueshift.cutover_event
                  WHERE slot = $1 ORDER BY id DESC LIMIT $2) e ORDER BY id",
            &[&slot, &limit],
        )
        .await
        .map_err(CutoverError::query("green", "read blueshift.cutover_event"))?;
    Ok(rows
        .iter()
        .map(|r| Event {
            at: r.get(0),
            state: r.get(1),
            detail: r.get(2),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip() {
        for s in State::ALL {
            assert_eq!(s.as_str().parse::<State>().unwrap(), s);
        }
        assert!("cutover".parse::<State>().is_err());
        assert!(State::Fenced.in_progress());
        assert!(!State::Ready.in_progress());
        assert!(!State::CutOver.in_progress());
    }
}
