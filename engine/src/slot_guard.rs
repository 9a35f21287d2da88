//! The slot guard: blueshift resumes only the slot it left, where it left it.
//!
//! A logical slot does not remember who consumes it. Dropped and created again under the same
//! name, it starts at its new consistent point; acknowledged by another consumer
//! (`pg_replication_slot_advance`, `pg_recvlogical`, `blueshift tail --slot`), it starts past
//! what green holds. `START_REPLICATION` then silently forwards to the slot's
//! `confirmed_flush_lsn` ("… has been already streamed, forwarding to …") and every change in
//! between is missing on green. Green, which already holds blueshift's progress, holds the guard
//! too:
//!
//! ```text
//!  green: blueshift.slot_guard (slot, system_identifier, timeline, database, acknowledged, created_lsn)
//!            ▲ 1. durably recorded (synchronous_commit = local)      │
//!            │                                                        │ 3. compared before and after
//!  durable positions ── acknowledger ── 2. only then ──► slot "flushed"  START_REPLICATION
//! ```
//!
//! - **Record before telling.** Every position blueshift reports to blue as flushed is first
//!   written to `acknowledged` in a green transaction committed with `synchronous_commit =
//!   local` ([`Guard::advance`]); only the recorded position is then handed to the stream. So
//!   the slot's `confirmed_flush_lsn` can never legitimately be past `acknowledged`: the record
//!   is an upper bound of everything blueshift ever said. The writes are batched (the sync's
//!   acknowledger records at most once per status interval), and they carry the idle keepalive
//!   positions too, which move the slot when nothing is published.
//! - **Record at creation.** When blueshift creates the slot (sync, or the backfill with its
//!   exported snapshot) it records blue's identity (`IDENTIFY_SYSTEM`: system identifier,
//!   timeline, database) and the consistent point as the first `acknowledged`: a slot created
//!   again before any acknowledgement starts at a later consistent point and is caught.
//! - **Check before and after `START_REPLICATION`.** Before: the slot must exist when green holds
//!   anything streamed through it (origin progress, a backfill, this record); it must not be
//!   invalidated (`wal_status = lost`); blue must be the recorded system and database; and its
//!   `confirmed_flush_lsn` must not be past `acknowledged`. After: the slot is held by our
//!   walsender (`active_pid` is its pid), so nobody else can move it any more; its
//!   `confirmed_flush_lsn` is where the server really starts, and is checked again — a slot
//!   dropped, re-created or advanced between the two checks is caught here.
//! - **Fail closed.** Any mismatch is a definite [`SlotError`] naming the slot, the gap (`green
//!   holds up to X, the slot starts at Y: changes in between are lost`) and how to start over.
//!   A slot that is merely *behind* the record is fine (blue crashed before its checkpoint saved
//!   the slot; blueshift crashed between recording and telling): green's origins say where to
//!   resume and the stream skips what green holds.
//!
//! Existing installs have no record: the first sync adopts the slot's `confirmed_flush_lsn`,
//! with one warning, and guards from then on. A timeline change (blue promoted from a standby
//! that carries the slot) is logged and recorded; the positions are still checked. `blueshift
//! cleanup` forgets the record with the slot, and `blueshift status` shows the same checks.
//!
//! What the guard cannot see: a consumer that acknowledged *no further than* green holds (that
//! loses nothing), or a slot re-created and acknowledged back to below the record (PostgreSQL
//! never moves `confirmed_flush_lsn` backwards on request).

use std::fmt;

use blueshift_applier::client::SqlError;
use blueshift_decoder::connection::IdentifySystem;
use blueshift_decoder::ident::quote_ident;
use blueshift_decoder::Lsn;
use tokio_postgres::{Client, GenericClient};

use crate::status::slot::{self, SlotInfo};

/// The table, created when missing (idempotent; under the advisory lock the backfill's state
/// tables use, so concurrent `CREATE SCHEMA IF NOT EXISTS` never race).
const SCHEMA: &str = "\
SELECT pg_catalog.pg_advisory_xact_lock(7235342165031183718);
CREATE SCHEMA IF NOT EXISTS blueshift;
CREATE TABLE IF NOT EXISTS blueshift.slot_guard (
    slot text PRIMARY KEY,
    system_identifier text NOT NULL,
    timeline bigint NOT NULL,
    database text NOT NULL,
    acknowledged pg_lsn NOT NULL,
    created_lsn pg_lsn,
    recorded_at timestamptz NOT NULL DEFAULT pg_catalog.now()
)";

/// Blue as `IDENTIFY_SYSTEM` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlueIdentity {
    pub(crate) system_identifier: String,
    pub(crate) timeline: u32,
    pub(crate) database: String,
}

impl From<&IdentifySystem> for BlueIdentity {
    fn from(id: &IdentifySystem) -> Self {
        BlueIdentity {
            system_identifier: id.systemid.clone(),
            timeline: id.timeline,
            database: id.dbname.clone().unwrap_or_default(),
        }
    }
}

/// What green holds about one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Blue's system identifier when the slot was recorded.
    pub system_identifier: String,
    /// Blue's timeline, last seen.
    pub timeline: u32,
    /// The database the slot decodes.
    pub database: String,
    /// The highest position blueshift has told (or was about to tell) blue is flushed.
    pub acknowledged: Lsn,
    /// The slot's consistent point, when blueshift created it (`None`: adopted).
    pub created_lsn: Option<Lsn>,
}

/// Why the slot cannot be resumed.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    /// The slot is gone while green holds changes streamed through it.
    #[error(
        "replication slot {} does not exist on blue, but green holds changes streamed through it: \
         the slot was lost, and the changes committed since green's last one went with it. {}",
        quote_ident(slot),
        start_over(slot)
    )]
    Lost {
        /// The slot.
        slot: String,
    },
    /// The slot starts past what blueshift ever acknowledged.
    #[error(
        "replication slot {} on blue is not the one blueshift left: green holds up to {acknowledged}, \
         the slot starts at {confirmed}: changes in between are lost — the slot was dropped and \
         created again, or another consumer (pg_replication_slot_advance, pg_recvlogical, \
         `blueshift tail --slot {slot}`) acknowledged past green. {}",
        quote_ident(slot),
        start_over(slot)
    )]
    Moved {
        /// The slot.
        slot: String,
        /// What green recorded as acknowledged.
        acknowledged: Lsn,
        /// The slot's `confirmed_flush_lsn`.
        confirmed: Lsn,
    },
    /// Blue is not the server (or database) the slot was recorded on.
    #[error(
        "replication slot {} was recorded on blue with {what} {recorded}, but blue now reports \
         {found}: this is another server or database, whose changes green does not hold — point \
         --source at the original blue, or start over into a fresh green. {}",
        quote_ident(slot),
        start_over(slot)
    )]
    OtherServer {
        /// The slot.
        slot: String,
        /// `system identifier` or `database`.
        what: &'static str,
        /// What green recorded.
        recorded: String,
        /// What blue reports.
        found: String,
    },
    /// Blue invalidated the slot.
    #[error(
        "replication slot {} on blue was invalidated (wal_status = lost{}): {} The changes it \
         held are gone. {}",
        quote_ident(slot),
        reason.as_deref().map_or_else(String::new, |r| format!(", invalidation_reason = {r}")),
        invalidation_cause(reason.as_deref(), *idle_timeout_known),
        start_over(slot)
    )]
    Invalidated {
        /// The slot.
        slot: String,
        /// `invalidation_reason` (17+), `conflict with recovery` (16), `None` before.
        reason: Option<String>,
        /// Whether blue is 18 or later (`idle_replication_slot_timeout` exists).
        idle_timeout_known: bool,
    },
    /// After `START_REPLICATION`, the slot is held by another process than our walsender.
    #[error(
        "replication slot {} on blue is held by {}, not by blueshift's walsender (process \
         {expected}); its position cannot be trusted — stop the other consumer, then start sync \
         again",
        quote_ident(slot),
        active.map_or_else(|| "no process".to_owned(), |p| format!("process {p}"))
    )]
    NotHeld {
        /// The slot.
        slot: String,
        /// Our walsender's pid.
        expected: i32,
        /// `active_pid`.
        active: Option<i32>,
    },
    /// The slot guard's record vanished from green while sync ran.
    #[error(
        "the slot guard record of replication slot {} vanished from green \
         (blueshift.slot_guard): did `blueshift cleanup` run during sync? Start sync again",
        quote_ident(slot)
    )]
    RecordGone {
        /// The slot.
        slot: String,
    },
    /// A query on blue or green failed.
    #[error("could not {what} on {side}")]
    Sql {
        /// `blue` or `green`.
        side: &'static str,
        /// What was being done.
        what: &'static str,
        /// Why.
        #[source]
        source: SqlError,
    },
}

impl SlotError {
    /// Only a failed query may go away by retrying; every other case needs an operator.
    pub fn is_transient(&self) -> bool {
        match self {
            SlotError::Sql { source, .. } => source.is_transient(),
            _ => false,
        }
    }

    fn green(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> SlotError {
        move |e| SlotError::Sql {
            side: "green",
            what,
            source: SqlError::from(e),
        }
    }

    fn blue(what: &'static str) -> impl FnOnce(SqlError) -> SlotError {
        move |source| SlotError::Sql {
            side: "blue",
            what,
            source,
        }
    }
}

/// How to start over, for the error texts.
pub(crate) fn start_over(slot: &str) -> String {
    format!(
        "To start over: stop every consumer of the slot; run `blueshift cleanup --source … \
         --target … --slot {slot} --yes` (drops the slot, green's origins and blueshift's records \
         of it); TRUNCATE the published tables on green; then run `blueshift sync --source … \
         --target … --slot {slot}` again, which copies blue's rows afresh (backfill) and streams \
         from a new slot"
    )
}

fn invalidation_cause(reason: Option<&str>, idle_timeout_known: bool) -> String {
    match reason {
        Some("idle_timeout") => "it stayed unused longer than idle_replication_slot_timeout. \
             Raise idle_replication_slot_timeout on blue (or set it to 0) so it does not happen again."
            .to_owned(),
        Some("rows_removed" | "wal_level_insufficient" | "conflict with recovery") => {
            "blue is a standby and the slot conflicted with recovery (rows it needed were \
             removed on the primary, or the primary's wal_level dropped below logical). Set \
             hot_standby_feedback = on with a physical slot on the primary, and keep wal_level = \
             logical there."
                .to_owned()
        }
        _ => {
            let idle = if idle_timeout_known {
                " (or, if it sat unused, idle_replication_slot_timeout)"
            } else {
                ""
            };
            format!(
                "blue removed WAL the slot still needed, because the slot fell more than \
                 max_slot_wal_keep_size behind{idle}. Raise max_slot_wal_keep_size on blue (-1 \
                 keeps all WAL a slot needs) and watch blueshift_slot_retained_wal_bytes so it \
                 does not happen again."
            )
        }
    }
}

/// Whether green has the table at all (without creating it).
async fn table_exists(green: &impl GenericClient) -> Result<bool, tokio_postgres::Error> {
    crate::client::relation_exists(green, "blueshift.slot_guard").await
}

/// Green's record of `slot`, if any.
pub(crate) async fn read(
    green: &impl GenericClient,
    slot: &str,
) -> Result<Option<Record>, tokio_postgres::Error> {
    if !table_exists(green).await? {
        return Ok(None);
    }
    let row = green
        .query_opt(
            "SELECT system_identifier, timeline, database, acknowledged::text, created_lsn::text \
               FROM blueshift.slot_guard WHERE slot = $1",
            &[&slot],
        )
        .await?;
    Ok(row.map(|r| Record {
        system_identifier: r.get(0),
        timeline: u32::try_from(r.get::<_, i64>(1)).unwrap_or(0),
        database: r.get(2),
        acknowledged: slot::parse_lsn(r.get(3)).unwrap_or(Lsn::INVALID),
        created_lsn: slot::parse_lsn(r.get(4)),
    }))
}

/// Deletes green's record of `slot` (with the slot: `blueshift cleanup`).
pub(crate) async fn forget(
    green: &impl GenericClient,
    slot: &str,
) -> Result<(), tokio_postgres::Error> {
    if table_exists(green).await? {
        green
            .execute("DELETE FROM blueshift.slot_guard WHERE slot = $1", &[&slot])
            .await?;
    }
    Ok(())
}

/// Records `slot` as created (`created` true: at its consistent point `at`) or adopted (at its
/// `confirmed_flush_lsn`) on blue `identity`, durably.
pub(crate) async fn record(
    green: &mut Client,
    slot: &str,
    identity: &BlueIdentity,
    at: Lsn,
    created: bool,
) -> Result<Record, SlotError> {
    let tx = green
        .transaction()
        .await
        .map_err(SlotError::green("open a transaction"))?;
    tx.batch_execute(SCHEMA)
        .await
        .map_err(SlotError::green("create blueshift.slot_guard"))?;
    tx.batch_execute("SET LOCAL synchronous_commit = local")
        .await
        .map_err(SlotError::green("set synchronous_commit"))?;
    let at_text = at.to_string();
    let created_lsn = created.then(|| at_text.clone());
    tx.execute(
        "INSERT INTO blueshift.slot_guard \
             (slot, system_identifier, timeline, database, acknowledged, created_lsn) \
         VALUES ($1, $2, $3, $4, $5::text::pg_lsn, $6::text::pg_lsn)",
        &[
            &slot,
            &identity.system_identifier,
            &i64::from(identity.timeline),
            &identity.database,
            &at_text,
            &created_lsn,
        ],
    )
    .await
    .map_err(SlotError::green(
        "record the replication slot in blueshift.slot_guard",
    ))?;
    blueshift_applier::failpoint::hit("slot-guard-write");
    tx.commit()
        .await
        .map_err(SlotError::green("record the replication slot"))?;
    tracing::info!(slot, at = %at, created, "replication slot recorded on green (blueshift.slot_guard)");
    Ok(Record {
        system_identifier: identity.system_identifier.clone(),
        timeline: identity.timeline,
        database: identity.database.clone(),
        acknowledged: at,
        created_lsn: created.then_some(at),
    })
}

/// Raises the acknowledged position of `slot` to `to` (never lowers it), durably; returns the
/// recorded position. Only this position may then be reported to blue.
pub(crate) async fn advance(green: &mut Client, slot: &str, to: Lsn) -> Result<Lsn, SlotError> {
    let tx = green
        .transaction()
        .await
        .map_err(SlotError::green("open a transaction"))?;
    tx.batch_execute("SET LOCAL synchronous_commit = local")
        .await
        .map_err(SlotError::green("set synchronous_commit"))?;
    let row = tx
        .query_opt(
            "UPDATE blueshift.slot_guard \
                SET acknowledged = GREATEST(acknowledged, $2::text::pg_lsn), \
                    recorded_at = pg_catalog.now() \
              WHERE slot = $1 RETURNING acknowledged::text",
            &[&slot, &to.to_string()],
        )
        .await
        .map_err(SlotError::green("record the acknowledged position"))?;
    let Some(row) = row else {
        return Err(SlotError::RecordGone {
            slot: slot.to_owned(),
        });
    };
    blueshift_applier::failpoint::hit("slot-guard-write");
    tx.commit()
        .await
        .map_err(SlotError::green("record the acknowledged position"))?;
    Ok(slot::parse_lsn(row.get(0)).unwrap_or(to))
}

/// Notes blue's new timeline in the record.
async fn update_timeline(green: &Client, slot: &str, timeline: u32) -> Result<(), SlotError> {
    green
        .execute(
            "UPDATE blueshift.slot_guard SET timeline = $2 WHERE slot = $1",
            &[&slot, &i64::from(timeline)],
        )
        .await
        .map_err(SlotError::green("record blue's timeline"))?;
    Ok(())
}

/// Reads the slot on blue (`None`: it does not exist).
pub(crate) async fn read_slot(blue: &Client, slot: &str) -> Result<Option<SlotInfo>, SlotError> {
    slot::read(blue, slot)
        .await
        .map_err(SlotError::blue("read pg_replication_slots"))
}

/// The server major of a SQL connection.
async fn server_major(blue: &Client) -> Result<u32, SlotError> {
    let version = crate::client::server_version_num(blue)
        .await
        .map_err(|e| SlotError::blue("read the server version")(SqlError::from(e)))?;
    Ok(u32::try_from(version / 10_000).unwrap_or(0))
}

/// Refuses an invalidated slot; warns about one about to be.
pub(crate) async fn check_wal(blue: &Client, info: &SlotInfo) -> Result<(), SlotError> {
    match info.wal_status.as_deref() {
        Some("lost") => Err(SlotError::Invalidated {
            slot: info.name.clone(),
            reason: info.invalidation.clone(),
            idle_timeout_known: server_major(blue).await? >= 18,
        }),
        Some("unreserved") => {
            tracing::warn!(
                slot = %info.name,
                "replication slot's WAL is past max_slot_wal_keep_size (wal_status = unreserved): \
                 blue removes it at its next checkpoint unless sync catches up first, and the slot \
                 is then lost — raise max_slot_wal_keep_size on blue now"
            );
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The guard's verdict on an existing slot against green's record.
pub(crate) fn verify(slot: &str, record: &Record, confirmed: Option<Lsn>) -> Result<(), SlotError> {
    match confirmed {
        Some(confirmed) if confirmed > record.acknowledged => Err(SlotError::Moved {
            slot: slot.to_owned(),
            acknowledged: record.acknowledged,
            confirmed,
        }),
        _ => Ok(()),
    }
}

/// Checks blue's identity against the record (a new timeline is noted, not refused).
async fn verify_identity(
    green: &Client,
    slot: &str,
    record: &mut Record,
    identity: &BlueIdentity,
) -> Result<(), SlotError> {
    let other = |what, recorded: &str, found: &str| SlotError::OtherServer {
        slot: slot.to_owned(),
        what,
        recorded: recorded.to_owned(),
        found: found.to_owned(),
    };
    if record.system_identifier != identity.system_identifier {
        return Err(other(
            "system identifier",
            &record.system_identifier,
            &identity.system_identifier,
        ));
    }
    if !identity.database.is_empty() && record.database != identity.database {
        return Err(other(
            "database",
            &quote_ident(&record.database),
            &quote_ident(&identity.database),
        ));
    }
    if record.timeline != identity.timeline {
        tracing::warn!(
            slot,
            recorded = record.timeline,
            now = identity.timeline,
            "blue's timeline changed since the slot was recorded (a promoted standby?); the slot's \
             position is still checked against green's record"
        );
        update_timeline(green, slot, identity.timeline).await?;
        record.timeline = identity.timeline;
    }
    Ok(())
}

/// What [`before_start`] found.
#[derive(Debug)]
pub(crate) enum Before {
    /// The slot exists and may be resumed; green's record of it.
    Resume(Record),
    /// The slot does not exist and nothing on green depends on it: create it, then
    /// [`record`] it.
    Create,
}

/// The checks before `START_REPLICATION` (see the module docs). `in_use`: green holds changes
/// streamed through the slot (origin progress, a backfill). Adopts a slot green has no record
/// of, with a warning.
pub(crate) async fn before_start(
    blue: &Client,
    green: &mut Client,
    slot: &str,
    identity: &BlueIdentity,
    in_use: bool,
) -> Result<Before, SlotError> {
    let recorded = read(&*green, slot)
        .await
        .map_err(SlotError::green("read blueshift.slot_guard"))?;
    let Some(info) = read_slot(blue, slot).await? else {
        if in_use || recorded.is_some() {
            return Err(SlotError::Lost {
                slot: slot.to_owned(),
            });
        }
        return Ok(Before::Create);
    };
    check_wal(blue, &info).await?;
    match recorded {
        Some(mut record) => {
            verify_identity(&*green, slot, &mut record, identity).await?;
            verify(slot, &record, info.confirmed_flush_lsn)?;
            Ok(Before::Resume(record))
        }
        None => {
            let at = info.confirmed_flush_lsn.unwrap_or(Lsn::INVALID);
            tracing::warn!(
                slot,
                confirmed_flush_lsn = %at,
                "green has no record of this replication slot (an install from before the slot \
                 guard, or a slot created outside blueshift): taking its confirmed_flush_lsn as \
                 what green holds. From now on a slot dropped, re-created or advanced behind \
                 blueshift's back is refused"
            );
            Ok(Before::Resume(
                record(green, slot, identity, at, false).await?,
            ))
        }
    }
}

/// The check after `START_REPLICATION`: the slot is held by our walsender (`pid`), so its
/// `confirmed_flush_lsn` is where the server really streams from and nobody else can move it.
pub(crate) async fn after_start(
    blue: &Client,
    slot: &str,
    record: &Record,
    pid: Option<i32>,
) -> Result<(), SlotError> {
    let Some(info) = read_slot(blue, slot).await? else {
        return Err(SlotError::Lost {
            slot: slot.to_owned(),
        });
    };
    if let Some(pid) = pid {
        if info.active_pid != Some(pid) {
            return Err(SlotError::NotHeld {
                slot: slot.to_owned(),
                expected: pid,
                active: info.active_pid,
            });
        }
    }
    verify(slot, record, info.confirmed_flush_lsn)
}

/// The checks `sync` runs at preflight, before any backfill decision: a lost, invalidated or
/// moved slot is named first (not, say, "green table already has rows"). Identity is checked
/// on the replication connection later.
pub(crate) async fn preflight(blue: &Client, green: &Client, slot: &str) -> Result<(), SlotError> {
    let record = read(green, slot)
        .await
        .map_err(SlotError::green("read blueshift.slot_guard"))?;
    let Some(info) = read_slot(blue, slot).await? else {
        if record.is_some() || streamed_through(green, slot).await? {
            return Err(SlotError::Lost {
                slot: slot.to_owned(),
            });
        }
        return Ok(());
    };
    check_wal(blue, &info).await?;
    if let Some(record) = &record {
        verify(slot, record, info.confirmed_flush_lsn)?;
    }
    Ok(())
}

/// Whether green holds changes streamed through `slot`: an origin of it with progress, or a
/// backfill record. (A role that may not read origin progress is checked by the appliers.)
async fn streamed_through(green: &Client, slot: &str) -> Result<bool, SlotError> {
    let progress = match crate::status::origin::read(green, slot).await {
        Ok(origins) => crate::status::durable_position(&origins).is_some(),
        Err(e) => {
            tracing::debug!(error = %e, "could not read the replication origins at preflight");
            false
        }
    };
    let backfill = crate::backfill::recorded(green, slot)
        .await
        .map_err(SlotError::green("read the backfill record"))?
        .is_some();
    Ok(progress || backfill)
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "acknowledged {} (system {}, timeline {}, database {})",
            self.acknowledged,
            self.system_identifier,
            self.timeline,
            quote_ident(&self.database)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(acknowledged: u64) -> Record {
        Record {
            system_identifier: "7".into(),
            timeline: 1,
            database: "app".into(),
            acknowledged: Lsn(acknowledged),
            created_lsn: None,
        }
    }

    #[test]
    fn a_slot_past_the_record_is_refused_and_one_behind_is_not() {
        assert!(verify("s", &record(0x200), Some(Lsn(0x200))).is_ok());
        assert!(verify("s", &record(0x200), Some(Lsn(0x100))).is_ok());
        assert!(verify("s", &record(0x200), None).is_ok());
        let err = verify("s", &record(0x195F730), Some(Lsn(0x1968FD8))).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("green holds up to 0/195F730, the slot starts at 0/1968FD8: changes in between are lost"),
            "{text}"
        );
        assert!(text.contains("blueshift cleanup"), "{text}");
        assert!(!err.is_transient());
    }

    #[test]
    fn invalidation_messages_name_the_setting() {
        let text = |reason: Option<&str>, v18| {
            SlotError::Invalidated {
                slot: "s".into(),
                reason: reason.map(str::to_owned),
                idle_timeout_known: v18,
            }
            .to_string()
        };
        assert!(text(None, false).contains("max_slot_wal_keep_size"));
        assert!(!text(None, false).contains("idle_replication_slot_timeout"));
        assert!(text(Some("wal_removed"), true).contains("max_slot_wal_keep_size"));
        assert!(text(Some("idle_timeout"), true).contains("idle_replication_slot_timeout"));
        assert!(text(Some("rows_removed"), false).contains("hot_standby_feedback"));
        assert!(text(None, false).contains("To start over"));
    }
}
