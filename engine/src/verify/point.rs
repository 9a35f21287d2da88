//! The consistent point L and the two snapshots at it.
//!
//! **Blue.** A temporary logical slot created with `EXPORT_SNAPSHOT` on a replication connection
//! of verify's own: its consistent point is L and its snapshot holds exactly the transactions
//! whose commit record ends at or before L. The snapshot lives while the replication connection
//! stays idle, so it is kept open until every worker has imported it (the slot goes with it).
//!
//! **Green, with the sidecar running** (blue's slot of the sync is active): a hold through the
//! control channel ([`crate::control`]), armed before blue's slot is created (green's commits
//! wait, so green cannot pass the L to come) and located at L once it is; once the sidecar says
//! `held`, green's
//! snapshot is exported from a `REPEATABLE READ` transaction and the hold released. A release
//! that finds the request expired refuses that snapshot; a request the sidecar answers `passed`
//! (green was past L) is retried at a new L; up to [`ATTEMPTS`].
//!
//! **Green, with no sidecar** (the slot exists and is idle): the pair must be quiet and caught
//! up. Green's applied position P (its origins' progress) is read before and after green's
//! snapshot and must not move; the sync's slot is peeked up to L (`pg_logical_slot_peek_binary_
//! changes`, which consumes nothing) and must hold no data change in a transaction committed
//! after P; and the slot must still be idle at the end. Otherwise verify refuses and says why.

use std::sync::Arc;
use std::time::{Duration, Instant};

use blueshift_decoder::connection::{CreateSlotOptions, ReplicationConnection, SnapshotAction};
use blueshift_decoder::Lsn;
use tokio_postgres::Client;

use super::{PointMode, VerifyConfig, VerifyError};
use crate::control::{self, HoldState, BUSY_POLL};
use crate::schema::quote_ident;

/// Attempts at a consistent point before giving up.
const ATTEMPTS: u32 = 10;

/// How long a request may wait for the sidecar to take it.
const TAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The snapshots at L, alive until [`Point::close`].
pub(crate) struct Point {
    pub(crate) lsn: Lsn,
    pub(crate) mode: PointMode,
    pub(crate) blue_snapshot: String,
    pub(crate) green_snapshot: String,
    /// Keeps blue's snapshot (and the temporary slot) alive.
    repl: Option<ReplicationConnection>,
    /// The transaction that exported green's snapshot.
    green: Option<(Client, tokio::task::JoinHandle<()>)>,
}

/// The names of the snapshots at L, to import (while the [`Point`] holds them open).
#[derive(Debug, Clone)]
pub(crate) struct Snapshots {
    pub(crate) blue: String,
    pub(crate) green: String,
}

impl Point {
    /// The snapshots' names.
    pub(crate) fn snapshots(&self) -> Snapshots {
        Snapshots {
            blue: self.blue_snapshot.clone(),
            green: self.green_snapshot.clone(),
        }
    }

    /// Ends both snapshots (once every session that needs them has imported them).
    pub(crate) async fn release_exporters(&mut self) {
        if let Some(repl) = self.repl.take() {
            let _ = repl.close().await;
        }
        if let Some((client, conn)) = self.green.take() {
            crate::client::close(client, conn).await;
        }
    }

    /// Ends everything.
    pub(crate) async fn close(mut self) {
        self.release_exporters().await;
    }
}

/// Whether the sync's slot exists on blue, and whether a process streams from it.
async fn slot_state(blue: &Client, slot: &str) -> Result<Option<bool>, VerifyError> {
    let row = blue
        .query_opt(
            "SELECT active FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| VerifyError::sql("blue", "look up the sync's replication slot", e))?;
    Ok(row.map(|r| r.get(0)))
}

/// A replication connection to blue (for verify's temporary slot).
async fn replication(config: &VerifyConfig) -> Result<ReplicationConnection, VerifyError> {
    ReplicationConnection::connect(&config.source)
        .await
        .map_err(VerifyError::Replication)
}

/// Creates verify's temporary slot on `repl`: its consistent point L and the snapshot at L.
async fn create_slot(repl: &mut ReplicationConnection) -> Result<(Lsn, String), VerifyError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = format!("blueshift_verify_{}_{nanos}", std::process::id());
    let created = repl
        .create_slot(
            &name,
            CreateSlotOptions {
                temporary: true,
                snapshot: SnapshotAction::Export,
                two_phase: false,
            },
        )
        .await
        .map_err(VerifyError::Replication)?;
    let snapshot = created.snapshot_name.ok_or_else(|| {
        VerifyError::NoPoint(
            "blue answered CREATE_REPLICATION_SLOT … EXPORT_SNAPSHOT without a snapshot".to_owned(),
        )
    })?;
    check_snapshot_name(&snapshot)?;
    Ok((created.consistent_point, snapshot))
}

/// A snapshot name comes from the server (`[0-9A-F-]`); checked before it goes into SQL.
pub(crate) fn check_snapshot_name(name: &str) -> Result<(), VerifyError> {
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        Ok(())
    } else {
        Err(VerifyError::NoPoint(format!(
            "unexpected snapshot name {name:?} from the server"
        )))
    }
}

/// Green's snapshot, exported from a transaction of its own on `green` (a session opened
/// beforehand, so that taking the snapshot is one round trip while green's commits wait).
async fn export_green(green: &Client) -> Result<String, VerifyError> {
    let messages = green
        .simple_query(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; \
             SELECT pg_catalog.pg_export_snapshot()",
        )
        .await
        .map_err(|e| VerifyError::sql("green", "export a snapshot", e))?;
    let name = messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .ok_or_else(|| VerifyError::NoPoint("green exported no snapshot".to_owned()))?;
    check_snapshot_name(&name)?;
    Ok(name)
}

/// A green session for [`export_green`], settings pinned.
async fn green_session(
    config: &VerifyConfig,
) -> Result<(Client, tokio::task::JoinHandle<()>), VerifyError> {
    super::connect(&config.target, "green").await
}

/// Takes the consistent point (see the module docs).
pub(crate) async fn take(
    config: &VerifyConfig,
    records: &Arc<Client>,
) -> Result<Point, VerifyError> {
    let (blue, blue_conn) = super::connect(&config.source, "blue").await?;
    let result = take_with(config, &blue, records).await;
    crate::client::close(blue, blue_conn).await;
    result
}

async fn take_with(
    config: &VerifyConfig,
    blue: &Client,
    records: &Client,
) -> Result<Point, VerifyError> {
    let Some(active) = slot_state(blue, &config.slot).await? else {
        return Err(VerifyError::NoPoint(format!(
            "blue has no replication slot \"{}\": verify learns what green holds from the sync's \
             slot and its running sidecar — start `blueshift sync` (or pass its --slot)",
            config.slot
        )));
    };
    if active {
        sidecar(config, records).await
    } else {
        quiet(config, blue, records).await
    }
}

/// With the sidecar running: a hold at L through the control channel.
async fn sidecar(config: &VerifyConfig, records: &Client) -> Result<Point, VerifyError> {
    let ctl = |what: &str| {
        let what = what.to_owned();
        move |e| VerifyError::sql("green", what, e)
    };
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        // Both sessions are open (at once) before the arm: while armed, green's commits wait.
        let ((green, green_conn), mut repl) =
            tokio::try_join!(green_session(config), replication(config))?;
        let id = control::request(records, &config.slot, Lsn::INVALID)
            .await
            .map_err(ctl("request a hold from the sidecar"))?;
        let asked = Instant::now();
        let state = loop {
            let (state, _) = control::state(records, id)
                .await
                .map_err(ctl("read the hold request"))?;
            match state {
                Some(HoldState::Requested) if asked.elapsed() > TAKE_TIMEOUT => {
                    control::transition(records, id, HoldState::Requested, HoldState::Abandoned)
                        .await
                        .map_err(ctl("abandon the hold request"))?;
                    return Err(VerifyError::NoPoint(format!(
                        "the process streaming from slot \"{}\" did not take verify's hold \
                         request within {}s: it is not a blueshift sync that serves verify, or \
                         it cannot reach green — upgrade or restart the sync, or stop it to \
                         verify a quiet pair",
                        config.slot,
                        TAKE_TIMEOUT.as_secs()
                    )));
                }
                Some(HoldState::Requested) => tokio::time::sleep(BUSY_POLL).await,
                other => break other,
            }
        };
        if state != Some(HoldState::Armed) {
            last = format!("the hold request ended as {state:?} before it was armed");
            crate::client::close(green, green_conn).await;
            continue;
        }
        // Green's commits wait from here on: L is at or after every position green holds.
        let started = Instant::now();
        let created = create_slot(&mut repl).await;
        let (lsn, blue_snapshot) = match created {
            Ok(created) => created,
            Err(e) => {
                // Let green's commits go at once rather than after the sidecar's timeout.
                let _ =
                    control::transition(records, id, HoldState::Armed, HoldState::Abandoned).await;
                crate::client::close(green, green_conn).await;
                return Err(e);
            }
        };
        if !control::locate(records, id, lsn)
            .await
            .map_err(ctl("place the hold at L"))?
        {
            last = format!(
                "blue took {} ms to create verify's slot, longer than the sidecar holds green's \
                 commits ({} s): a long transaction open on blue delays it — let it finish",
                started.elapsed().as_millis(),
                control::HOLD_TIMEOUT.as_secs()
            );
            tracing::debug!(attempt, lsn = %lsn, "the armed hold expired; taking a new point");
            crate::client::close(green, green_conn).await;
            drop(repl);
            continue;
        }
        // The sidecar answers within REACH_TIMEOUT while it runs; one that restarted meanwhile
        // never does.
        let located = Instant::now();
        let state = loop {
            let (state, _) = control::state(records, id)
                .await
                .map_err(ctl("read the hold request"))?;
            match state {
                Some(from @ (HoldState::Located | HoldState::Waiting))
                    if located.elapsed() > control::REACH_TIMEOUT + TAKE_TIMEOUT =>
                {
                    control::transition(records, id, from, HoldState::Abandoned)
                        .await
                        .map_err(ctl("abandon the hold request"))?;
                    return Err(VerifyError::NoPoint(format!(
                        "the sync streaming from slot \"{}\" stopped answering verify's hold \
                         request at L = {lsn} (it restarted, or lost green) — run verify again",
                        config.slot
                    )));
                }
                Some(HoldState::Located | HoldState::Waiting) => {
                    tokio::time::sleep(BUSY_POLL).await;
                }
                other => break other,
            }
        };
        match state {
            Some(HoldState::Held) => {}
            Some(HoldState::Passed) => {
                tracing::debug!(attempt, lsn = %lsn, "green was past the point; taking a new one");
                last = format!("green was past L = {lsn}");
                crate::client::close(green, green_conn).await;
                drop(repl);
                continue;
            }
            Some(HoldState::Lagging) => {
                return Err(VerifyError::NoPoint(format!(
                    "the sync did not reach L = {lsn} within {}s: green is too far behind blue — \
                     let it catch up, then verify",
                    control::REACH_TIMEOUT.as_secs()
                )))
            }
            other => {
                last = format!("the hold request ended as {other:?}");
                crate::client::close(green, green_conn).await;
                drop(repl);
                continue;
            }
        }
        let taken = export_green(&green).await;
        let released = control::transition(records, id, HoldState::Held, HoldState::Released)
            .await
            .map_err(ctl("release the hold"))?;
        let green_snapshot = taken?;
        if !released {
            // The sidecar let commits go before the snapshot was certainly taken.
            last = "the hold expired before green's snapshot was taken".to_owned();
            crate::client::close(green, green_conn).await;
            drop(repl);
            continue;
        }
        // The sidecar records the pause right after it lets commits go.
        let mut pause = None;
        let deadline = Instant::now() + Duration::from_secs(2);
        while pause.is_none() && Instant::now() < deadline {
            pause = control::state(records, id)
                .await
                .map_err(ctl("read the hold's pause"))?
                .1;
            if pause.is_none() {
                tokio::time::sleep(BUSY_POLL).await;
            }
        }
        let pause = pause.map(|us| Duration::from_micros(u64::try_from(us).unwrap_or(0)));
        tracing::info!(lsn = %lsn, attempt, pause_ms = ?pause.map(|p| p.as_secs_f64() * 1000.0), "green held at the point");
        return Ok(Point {
            lsn,
            mode: PointMode::Sidecar {
                pause,
                attempts: attempt,
            },
            blue_snapshot,
            green_snapshot,
            repl: Some(repl),
            green: Some((green, green_conn)),
        });
    }
    Err(VerifyError::NoPoint(format!(
        "no consistent point after {ATTEMPTS} attempts ({last}) — try again when green's \
         commits are less bursty"
    )))
}

/// Green's applied position: the maximum of the sync's origins' progress (not only the flushed).
async fn applied(green: &Client, slot: &str) -> Result<Lsn, VerifyError> {
    let prefix = format!("{}{slot}_", crate::sync::ORIGIN_PREFIX);
    let rows = green
        .query(
            "SELECT roname::pg_catalog.text, \
                    pg_catalog.pg_replication_origin_progress(roname, false)::pg_catalog.text \
               FROM pg_catalog.pg_replication_origin \
              WHERE pg_catalog.starts_with(roname, $1)",
            &[&prefix],
        )
        .await
        .map_err(|e| VerifyError::sql("green", "read the sync's replication origins", e))?;
    let mut applied = Lsn::INVALID;
    for row in rows {
        let name: String = row.get(0);
        if crate::status::origin::origin_worker(slot, &name).is_none() {
            continue;
        }
        if let Some(lsn) = row.get::<_, Option<String>>(1).and_then(|t| t.parse().ok()) {
            applied = applied.max(lsn);
        }
    }
    Ok(applied)
}

/// pgoutput message tags (protocol version 1).
const BEGIN: u8 = b'B';
const DATA: &[u8] = b"IUDT";

/// Transactions (by commit LSN) after `after` carrying a data change, in the peeked messages.
fn pending_after(messages: &[Vec<u8>], after: Lsn) -> Vec<Lsn> {
    let mut pending = Vec::new();
    let mut current = None;
    for m in messages {
        match m.first() {
            Some(&BEGIN) => {
                current = m
                    .get(1..9)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(|b| Lsn(u64::from_be_bytes(b)));
            }
            Some(tag) if DATA.contains(tag) => {
                if let Some(lsn) = current.filter(|&l| l > after) {
                    if pending.last() != Some(&lsn) {
                        pending.push(lsn);
                    }
                }
            }
            _ => {}
        }
    }
    pending
}

/// With no sidecar: prove the pair quiet and caught up at L.
async fn quiet(
    config: &VerifyConfig,
    blue: &Client,
    records: &Client,
) -> Result<Point, VerifyError> {
    let (before, (green, green_conn), mut repl) = tokio::try_join!(
        applied(records, &config.slot),
        green_session(config),
        replication(config)
    )?;
    let (lsn, blue_snapshot) = create_slot(&mut repl).await?;
    let green_snapshot = export_green(&green).await?;
    let after = applied(records, &config.slot).await?;
    let refuse = |why: String| VerifyError::NoPoint(why);
    if before != after || after >= lsn {
        crate::client::close(green, green_conn).await;
        return Err(refuse(format!(
            "green's applied position moved while verify took its snapshot ({before} → {after}) \
             though blue's slot \"{}\" is idle: something else writes to green's origins — stop \
             it, or run verify while the sync runs",
            config.slot
        )));
    }
    let publications = quote_ident(&config.publication);
    let peeked = blue
        .query(
            "SELECT data FROM pg_catalog.pg_logical_slot_peek_binary_changes($1, \
                    $2::pg_catalog.text::pg_catalog.pg_lsn, NULL, \
                    'proto_version', '1', 'publication_names', $3)",
            &[&config.slot, &lsn.to_string(), &publications],
        )
        .await;
    let peeked = match peeked {
        Ok(rows) => rows,
        Err(e) => {
            crate::client::close(green, green_conn).await;
            return Err(VerifyError::sql(
                "blue",
                format!("read what slot \"{}\" holds before L = {lsn}", config.slot),
                e,
            ));
        }
    };
    let messages: Vec<Vec<u8>> = peeked.iter().map(|r| r.get(0)).collect();
    let pending = pending_after(&messages, after);
    let still_idle = slot_state(blue, &config.slot).await? == Some(false);
    if !pending.is_empty() || !still_idle {
        crate::client::close(green, green_conn).await;
        return Err(refuse(if still_idle {
            format!(
                "green is not caught up: slot \"{}\" holds {} transaction(s) for green committed \
                 before L = {lsn} that green has not applied (the first at {}) — start \
                 `blueshift sync` and verify while it runs",
                config.slot,
                pending.len(),
                pending[0]
            )
        } else {
            format!(
                "a process started streaming from slot \"{}\" while verify checked the pair was \
                 quiet — run verify again",
                config.slot
            )
        }));
    }
    Ok(Point {
        lsn,
        mode: PointMode::Quiet,
        blue_snapshot,
        green_snapshot,
        repl: Some(repl),
        green: Some((green, green_conn)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn begin(lsn: u64) -> Vec<u8> {
        let mut m = vec![b'B'];
        m.extend_from_slice(&lsn.to_be_bytes());
        m.extend_from_slice(&[0; 12]);
        m
    }

    #[test]
    fn only_data_changes_after_the_applied_position_are_pending() {
        let messages = vec![
            begin(10),
            b"R....".to_vec(),
            b"I....".to_vec(),
            b"C".to_vec(),
            begin(20),
            b"C".to_vec(),
            begin(30),
            b"U..".to_vec(),
            b"D..".to_vec(),
            b"C".to_vec(),
        ];
        assert_eq!(pending_after(&messages, Lsn(5)), vec![Lsn(10), Lsn(30)]);
        assert_eq!(pending_after(&messages, Lsn(10)), vec![Lsn(30)]);
        assert_eq!(pending_after(&messages, Lsn(30)), Vec::<Lsn>::new());
    }

    #[test]
    fn snapshot_names_are_checked() {
        assert!(check_snapshot_name("00000003-00000002-1").is_ok());
        assert!(check_snapshot_name("x'; DROP").is_err());
        assert!(check_snapshot_name("").is_err());
    }
}
