//! The control channel between a CLI command (today `verify`) and the running sidecar
//! (`blueshift sync`), through green, which both can reach and which already holds the sync's
//! state: no port to open, it works wherever the sidecar runs, and it survives restarts of
//! either side.
//!
//! One request kind exists: a **hold at L**. The table `blueshift.control_hold` holds one row per
//! request, and each side moves it forward (rows are never deleted by the protocol).
//!
//! L is the consistent point of a slot verify creates on blue, so it is known only once that
//! slot exists — and a sidecar at the head of blue's stream commits past any L it learns of
//! after the fact (under steady writes, always). So the hold is set in two steps: verify first
//! **arms** it (a row with `lsn = 0/0`): the sidecar stops committing, which keeps green at or
//! before every position blue reaches from then on; only then does verify create its slot and
//! **locate** the hold at its consistent point L; the sidecar commits what ends at or before L
//! and holds the next commit.
//!
//! ```text
//!  verify                         green: blueshift.control_hold              sidecar (sync::hold)
//!  INSERT (slot, lsn = 0/0) ────► requested
//!                                 requested ─────────────────────────────► polls every 100 ms
//!                                 armed ◄────────────────────────────────── takes it; commits
//!  polls every 1 ms; sees armed,                                            wait from now on
//!  creates its slot on blue (L),
//!  UPDATE … lsn = L WHERE state = 'armed' ► located ───────────────────────► polls every 1 ms
//!                                 waiting ◄──────────────────────────────── commits what ends
//!                                                                          ≤ L, holds the next
//!                                 held (held_at) ◄───────────────────────── or passed / lagging
//!  sees held, opens green's
//!  snapshot,
//!  UPDATE … WHERE state = 'held' ► released ─────────────────────────────► lets commits go;
//!                                 pause_us ◄─────────────────────────────── records the pause
//! ```
//!
//! - `passed`: green had committed a transaction ending after L (a group commit formed before the
//!   arm straddled L): verify retries.
//! - `lagging`: the sidecar did not reach L within [`REACH_TIMEOUT`].
//! - `expired`: verify did not locate or release within [`HOLD_TIMEOUT`] (it died, it stalled,
//!   or creating its slot on blue waited on a long transaction): the sidecar marks the row first,
//!   then lets commits go, so verify's conditional `UPDATE … WHERE state = 'armed'` / `'held'`
//!   finds 0 rows and verify retries. A verify killed while holding never stops green's commits
//!   for longer than that.
//! - `abandoned`: verify gave up waiting.
//!
//! A request with a real L from the start (no arm) is still served: green holds at L if it is not
//! past it yet.
//!
//! Polling rather than `LISTEN`/`NOTIFY`: the SQL client in use does not surface
//! notifications; the sidecar's idle poll is one indexed query every 100 ms, and both sides poll
//! fast only while a hold is being set up, so green's commits pause for a few tens of
//! milliseconds: the arm lasts as long as blue takes to create a slot.

use std::time::Duration;

use blueshift_decoder::Lsn;
use tokio_postgres::Client;

/// The requests table, in green's `blueshift` schema.
pub const HOLD_TABLE: &str = "blueshift.control_hold";

/// How long the sidecar holds green's commits at most — armed, or held at L — before letting
/// them go (`expired`).
pub const HOLD_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the sidecar may take to have committed everything before L (`lagging` after).
pub const REACH_TIMEOUT: Duration = Duration::from_secs(60);

/// How often the sidecar looks for a request while idle.
pub const IDLE_POLL: Duration = Duration::from_millis(100);

/// How often either side polls while a hold is being set up or held.
pub const BUSY_POLL: Duration = Duration::from_millis(1);

/// Creates the table when missing, without the server's "already exists" notices.
const CREATE: &str = "
BEGIN;
SET LOCAL client_min_messages = warning;
CREATE SCHEMA IF NOT EXISTS blueshift;
CREATE TABLE IF NOT EXISTS blueshift.control_hold (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slot text NOT NULL,
    lsn pg_catalog.pg_lsn NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    state text NOT NULL DEFAULT 'requested',
    held_at timestamptz,
    released_at timestamptz,
    pause_us bigint
);
CREATE INDEX IF NOT EXISTS control_hold_requested ON blueshift.control_hold (slot)
    WHERE state = 'requested';
COMMIT;";

/// Where a hold request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldState {
    /// Waiting for the sidecar.
    Requested,
    /// The sidecar took an armed request (`lsn = 0/0`): green's commits wait until verify
    /// locates the hold.
    Armed,
    /// Verify wrote L into an armed request.
    Located,
    /// The sidecar took it and commits what ends at or before L.
    Waiting,
    /// Green holds exactly the transactions committed on blue before L; its next commit waits.
    Held,
    /// Green was already past L.
    Passed,
    /// The sidecar did not reach L in time.
    Lagging,
    /// Verify released the hold.
    Released,
    /// The sidecar let commits go before verify released.
    Expired,
    /// Verify gave up.
    Abandoned,
}

impl HoldState {
    /// The text stored in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            HoldState::Requested => "requested",
            HoldState::Armed => "armed",
            HoldState::Located => "located",
            HoldState::Waiting => "waiting",
            HoldState::Held => "held",
            HoldState::Passed => "passed",
            HoldState::Lagging => "lagging",
            HoldState::Released => "released",
            HoldState::Expired => "expired",
            HoldState::Abandoned => "abandoned",
        }
    }

    fn parse(text: &str) -> Option<HoldState> {
        Some(match text {
            "requested" => HoldState::Requested,
            "armed" => HoldState::Armed,
            "located" => HoldState::Located,
            "waiting" => HoldState::Waiting,
            "held" => HoldState::Held,
            "passed" => HoldState::Passed,
            "lagging" => HoldState::Lagging,
            "released" => HoldState::Released,
            "expired" => HoldState::Expired,
            "abandoned" => HoldState::Abandoned,
            _ => return None,
        })
    }
}

/// Creates the table when missing.
pub(crate) async fn ensure(green: &Client) -> Result<(), tokio_postgres::Error> {
    green.batch_execute(CREATE).await
}

/// Whether the table exists (without creating it).
pub(crate) async fn exists(green: &Client) -> Result<bool, tokio_postgres::Error> {
    crate::client::relation_exists(green, "blueshift.control_hold").await
}

/// Verify's side: asks the sidecar of `slot` to hold at `lsn` — or, with [`Lsn::INVALID`], to arm
/// a hold that [`locate`] places later; returns the request's id.
pub(crate) async fn request(
    green: &Client,
    slot: &str,
    lsn: Lsn,
) -> Result<i64, tokio_postgres::Error> {
    let row = green
        .query_one(
            "INSERT INTO blueshift.control_hold (slot, lsn) \
             VALUES ($1, $2::pg_catalog.text::pg_catalog.pg_lsn) RETURNING id",
            &[&slot, &lsn.to_string()],
        )
        .await?;
    Ok(row.get(0))
}

/// Verify's side: places armed request `id` at `lsn`; false when it is not armed any more (the
/// sidecar expired it).
pub(crate) async fn locate(
    green: &Client,
    id: i64,
    lsn: Lsn,
) -> Result<bool, tokio_postgres::Error> {
    let n = green
        .execute(
            "UPDATE blueshift.control_hold \
                SET state = 'located', lsn = $2::pg_catalog.text::pg_catalog.pg_lsn \
              WHERE id = $1 AND state = 'armed'",
            &[&id, &lsn.to_string()],
        )
        .await?;
    Ok(n == 1)
}

/// The sidecar's side: the state of request `id` and its L.
pub(crate) async fn position(
    green: &Client,
    id: i64,
) -> Result<(Option<HoldState>, Lsn), tokio_postgres::Error> {
    let row = green
        .query_opt(
            "SELECT state, lsn::pg_catalog.text FROM blueshift.control_hold WHERE id = $1",
            &[&id],
        )
        .await?;
    Ok(match row {
        Some(row) => (
            HoldState::parse(row.get::<_, &str>(0)),
            row.get::<_, &str>(1).parse().unwrap_or(Lsn::INVALID),
        ),
        None => (None, Lsn::INVALID),
    })
}

/// The state of request `id` and, once recorded, the pause in microseconds.
pub(crate) async fn state(
    green: &Client,
    id: i64,
) -> Result<(Option<HoldState>, Option<i64>), tokio_postgres::Error> {
    let row = green
        .query_opt(
            "SELECT state, pause_us FROM blueshift.control_hold WHERE id = $1",
            &[&id],
        )
        .await?;
    Ok(match row {
        Some(row) => (HoldState::parse(row.get::<_, &str>(0)), row.get(1)),
        None => (None, None),
    })
}

/// Verify's side: moves request `id` from `from` to `to`; false when it was not in `from` any
/// more (the sidecar answered or expired it first).
pub(crate) async fn transition(
    green: &Client,
    id: i64,
    from: HoldState,
    to: HoldState,
) -> Result<bool, tokio_postgres::Error> {
    let released_at = matches!(to, HoldState::Released | HoldState::Abandoned);
    let n = green
        .execute(
            "UPDATE blueshift.control_hold SET state = $3, \
                    released_at = CASE WHEN $4 THEN pg_catalog.clock_timestamp() END \
              WHERE id = $1 AND state = $2",
            &[&id, &from.as_str(), &to.as_str(), &released_at],
        )
        .await?;
    Ok(n == 1)
}

/// The sidecar's side: the oldest request for `slot`, if any.
pub(crate) async fn next_request(
    green: &Client,
    slot: &str,
) -> Result<Option<(i64, Lsn)>, tokio_postgres::Error> {
    let row = green
        .query_opt(
            "SELECT id, lsn::pg_catalog.text FROM blueshift.control_hold \
              WHERE slot = $1 AND state = 'requested' ORDER BY id LIMIT 1",
            &[&slot],
        )
        .await?;
    Ok(row.and_then(|r| {
        let lsn: String = r.get(1);
        lsn.parse().ok().map(|lsn| (r.get(0), lsn))
    }))
}

/// The sidecar's side: answers request `id` (held, passed, lagging, expired) when it is still in
/// state `from`; false otherwise.
pub(crate) async fn answer(
    green: &Client,
    id: i64,
    from: HoldState,
    to: HoldState,
) -> Result<bool, tokio_postgres::Error> {
    let n = green
        .execute(
            "UPDATE blueshift.control_hold SET state = $3, \
                    held_at = CASE WHEN $3 = 'held' THEN pg_catalog.clock_timestamp() ELSE held_at END \
              WHERE id = $1 AND state = $2",
            &[&id, &from.as_str(), &to.as_str()],
        )
        .await?;
    Ok(n == 1)
}

/// The sidecar's side: records how long green's commits waited.
pub(crate) async fn record_pause(
    green: &Client,
    id: i64,
    pause: Duration,
) -> Result<(), tokio_postgres::Error> {
    let us = i64::try_from(pause.as_micros()).unwrap_or(i64::MAX);
    green
        .execute(
            "UPDATE blueshift.control_hold SET pause_us = $2 WHERE id = $1",
            &[&id, &us],
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::HoldState;

    #[test]
    fn states_round_trip() {
        for s in [
            HoldState::Requested,
            HoldState::Armed,
            HoldState::Located,
            HoldState::Waiting,
            HoldState::Held,
            HoldState::Passed,
            HoldState::Lagging,
            HoldState::Released,
            HoldState::Expired,
            HoldState::Abandoned,
        ] {
            assert_eq!(HoldState::parse(s.as_str()), Some(s));
        }
        assert_eq!(HoldState::parse("nonsense"), None);
    }
}
