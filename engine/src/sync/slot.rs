//! Opening blue's stream under the slot guard ([`crate::slot_guard`]):
//!
//! ```text
//!  replication connection: IDENTIFY_SYSTEM (identity, our walsender's pid), SHOW wal_sender_timeout
//!  slot guard, before:     slot lost? invalidated? another server? confirmed_flush_lsn > record?
//!                          absent and unused → CREATE_REPLICATION_SLOT, recorded on green
//!  START_REPLICATION        status every min(--status-interval, wal_sender_timeout / 3)
//!  slot guard, after:      held by our walsender; confirmed_flush_lsn (where the server really
//!                          starts) still ≤ record
//! ```

use std::time::Duration;

use blueshift_decoder::connection::{
    validate_slot_name, CreateSlotOptions, ReplicationConnection, ReplicationError, SnapshotAction,
};
use blueshift_decoder::stream::{
    OriginFilter, ReplicationStream, StartOptions, StatusOptions, Streaming,
};
use blueshift_decoder::Lsn;
use tokio::task::JoinHandle;
use tokio_postgres::Client;

use super::{SyncConfig, SyncError};
use crate::client;
use crate::slot_guard::{self, Before, BlueIdentity, Record, SlotError};

/// SQLSTATE `object_not_in_prerequisite_state`: what `START_REPLICATION` of an invalidated slot
/// reports.
const NOT_IN_PREREQUISITE_STATE: &str = "55000";

/// A stream whose slot passed the guard.
#[derive(Debug)]
pub(crate) struct Opened {
    pub(crate) stream: ReplicationStream,
    /// Green's record of the slot, as checked.
    pub(crate) record: Record,
    /// A SQL connection to blue (the monitor's, afterwards).
    pub(crate) blue_sql: Client,
    pub(crate) blue_sql_conn: JoinHandle<()>,
    /// The standby status interval in use (fitted to `wal_sender_timeout`).
    pub(crate) status_interval: Duration,
}

/// Connects to blue, runs the slot guard's checks (creating and recording the slot when it is
/// absent and nothing depends on it), starts streaming at `resume_after` (the spool's end when
/// one is replayed first) and checks again.
/// `green` is the slot guard's connection; `in_use`: green holds changes streamed through the
/// slot.
pub(crate) async fn open(
    config: &SyncConfig,
    green: &mut Client,
    resume_after: Lsn,
    in_use: bool,
) -> Result<Opened, SyncError> {
    let slot = config.slot.as_str();
    validate_slot_name(slot).map_err(SyncError::Source)?;
    let mut blue = ReplicationConnection::connect(&config.source)
        .await
        .map_err(SyncError::Source)?;
    let identity = BlueIdentity::from(&blue.identify_system().await.map_err(SyncError::Source)?);
    let walsender = blue.backend_key().map(|k| k.process_id());
    let timeout = blue.wal_sender_timeout().await.map_err(SyncError::Source)?;
    let (blue_sql, blue_sql_conn) = client::connect(&config.source, "blueshift sync")
        .await
        .map_err(|source| SyncError::Sql {
            what: format!("could not connect to blue ({})", config.source),
            source,
        })?;
    let record = match slot_guard::before_start(&blue_sql, green, slot, &identity, in_use).await? {
        Before::Resume(record) => record,
        Before::Create => {
            let created = blue
                .create_slot(
                    slot,
                    CreateSlotOptions {
                        temporary: false,
                        snapshot: SnapshotAction::NoExport,
                        two_phase: false,
                    },
                )
                .await
                .map_err(SyncError::Source)?;
            tracing::info!(slot, consistent_point = %created.consistent_point, "created the replication slot");
            slot_guard::record(green, slot, &identity, created.consistent_point, true).await?
        }
    };
    let status = StatusOptions {
        interval: config.status_interval,
    }
    .within(timeout);
    if status.interval < config.status_interval {
        tracing::info!(
            wal_sender_timeout = ?timeout,
            status_interval = ?status.interval,
            "standby status goes out within a third of blue's wal_sender_timeout"
        );
    }
    let start = start_options(config, blue.server_major());
    let stream = match blue
        .start_replication(slot, resume_after, start, status)
        .await
    {
        Ok(stream) => stream,
        Err(e) => return Err(explain_start_error(&blue_sql, slot, e).await),
    };
    // Nothing was acknowledged yet (the stream reports 0/0 until told otherwise), so the
    // position read now is the one the server chose at START_REPLICATION.
    slot_guard::after_start(&blue_sql, slot, &record, walsender).await?;
    Ok(Opened {
        stream,
        record,
        blue_sql,
        blue_sql_conn,
        status_interval: status.interval,
    })
}

/// What sync asks blue to stream (the spool's outage asks the same, so its frames read alike).
pub(crate) fn start_options(config: &SyncConfig, major: u32) -> StartOptions {
    StartOptions {
        publication_names: vec![config.publication.clone()],
        proto_version: None,
        binary: config.binary,
        // Transactional logical messages come through as transactions of their own: the
        // cutover's fence marker (`pg_logical_emit_message(true, 'blueshift.fence', …)`) then
        // moves green's origins past it once everything committed before it is on green.
        messages: true,
        streaming: Streaming::On,
        origin: (major >= 16).then_some(OriginFilter::None),
        two_phase: false,
    }
}

/// A refused `START_REPLICATION`: an invalidated slot gets the guard's message (which setting,
/// how to start over) rather than the server's bare text.
async fn explain_start_error(blue: &Client, slot: &str, e: ReplicationError) -> SyncError {
    if e.sqlstate() == Some(NOT_IN_PREREQUISITE_STATE) {
        if let Ok(Some(info)) = slot_guard::read_slot(blue, slot).await {
            if let Err(invalid @ SlotError::Invalidated { .. }) =
                slot_guard::check_wal(blue, &info).await
            {
                return SyncError::Slot(invalid);
            }
        }
    }
    SyncError::Source(e)
}
