//! The outage: blue's stream into the spool while green does not answer (see the parent
//! module's doc for the design and what is checked without green).

use std::time::Duration;

use blueshift_decoder::connection::ReplicationConnection;
use blueshift_decoder::stream::{ReplicationFrame, StatusOptions};

use super::{discard, scan, Header, Writer};
use crate::client;
use crate::metrics::Metrics;
use crate::slot_guard;
use crate::sync::{slot, Shutdown, SyncConfig, SyncError};

/// How often green is tried while spooling: a refused connection costs next to nothing, and
/// the sooner green is seen back, the sooner the spool is applied.
const PROBE_EVERY: Duration = Duration::from_millis(250);

/// How often the loop wakes up besides frames: to fsync and to try green.
const TICK: Duration = Duration::from_millis(50);

/// How long one try of green may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether green accepts a session now.
pub(in crate::sync) async fn green_answers(config: &SyncConfig) -> bool {
    match tokio::time::timeout(
        PROBE_TIMEOUT,
        client::connect(&config.target, "blueshift spool probe"),
    )
    .await
    {
        Ok(Ok((green, conn))) => {
            client::close(green, conn).await;
            true
        }
        _ => false,
    }
}

/// Reads blue's stream into the spool until green answers again, shutdown, or blue fails.
/// `Ok(false)`: nothing could be spooled (no slot yet, or it moved: the caller backs off as
/// without a spool).
pub(in crate::sync) async fn spool_while_green_down(
    config: &SyncConfig,
    metrics: &Metrics,
    shutdown: &Shutdown,
) -> Result<bool, SyncError> {
    let folder = super::folder(&crate::sync::spill_folder(config));
    let slot_name = config.slot.as_str();
    let mut blue = ReplicationConnection::connect(&config.source)
        .await
        .map_err(SyncError::Source)?;
    let system_identifier = blue
        .identify_system()
        .await
        .map_err(SyncError::Source)?
        .systemid;
    let timeout = blue.wal_sender_timeout().await.map_err(SyncError::Source)?;
    let (blue_sql, blue_sql_conn) = client::connect(&config.source, "blueshift spool")
        .await
        .map_err(|source| SyncError::Sql {
            what: format!("could not connect to blue ({})", config.source),
            source,
        })?;
    let result = async {
        let Some(confirmed) = slot_guard::read_slot(&blue_sql, slot_name)
            .await?
            .and_then(|info| info.confirmed_flush_lsn)
        else {
            tracing::warn!(
                slot = slot_name,
                "green is unreachable and blue has no usable slot to spool from: waiting"
            );
            return Ok(false);
        };
        let existing = match scan(&folder).map_err(SyncError::Spool)? {
            Some(c) if c.header.system_identifier != system_identifier => {
                discard(&folder, "another blue system wrote it");
                None
            }
            Some(c) if c.end < confirmed => {
                discard(
                    &folder,
                    "the slot's confirmed position is past its end: green holds all of it",
                );
                None
            }
            other => other,
        };
        let start = existing.as_ref().map_or(confirmed, |c| c.end);
        let status = StatusOptions {
            interval: config.status_interval,
        }
        .within(timeout);
        let options = slot::start_options(config, blue.server_major());
        let mut stream = blue
            .start_replication(slot_name, start, options, status)
            .await
            .map_err(SyncError::Source)?;
        // Where the server really starts: a slot advanced (or re-created) past the position
        // asked for would leave a gap in the spool.
        let really = slot_guard::read_slot(&blue_sql, slot_name)
            .await?
            .and_then(|info| info.confirmed_flush_lsn);
        if really.is_none_or(|at| at > start) {
            tracing::warn!(slot = slot_name, start = %start, confirmed_flush = ?really.map(|l| l.to_string()), "the slot moved past where the spool continues: not spooling from it");
            if existing.is_some() {
                discard(&folder, "the slot starts past its end");
            }
            let _ = stream.close().await;
            return Ok(false);
        }
        let proto_version = stream.proto_version();
        let mut writer = match existing {
            Some(c) if c.header.proto_version == proto_version => {
                Writer::append(&folder, &c).map_err(SyncError::Spool)?
            }
            existing => {
                if existing.is_some() {
                    discard(&folder, "blue streams another protocol version now");
                    let _ = stream.close().await;
                    return Ok(false);
                }
                let header = Header {
                    proto_version,
                    start,
                    system_identifier: system_identifier.clone(),
                };
                Writer::create(&folder, &header).map_err(SyncError::Spool)?
            }
        };
        metrics.set_spool_bytes(writer.len());
        tracing::warn!(
            slot = slot_name,
            from = %start,
            file = ?super::file(&folder),
            limit = config.spool_limit,
            "green is unreachable: spooling blue's stream until it is back (the slot is not \
             acknowledged meanwhile)"
        );
        let mut tick = tokio::time::interval(TICK);
        let mut last_probe = std::time::Instant::now();
        let mut full = false;
        let outcome = loop {
            let at_limit = writer.len() >= config.spool_limit;
            if at_limit != full {
                full = at_limit;
                metrics.set_spool_full(full);
                if full {
                    writer.sync().map_err(SyncError::Spool)?;
                    tracing::warn!(
                        bytes = writer.len(),
                        limit = config.spool_limit,
                        "the spool is full: reading from blue waits until green is back \
                         (nothing is lost, the slot keeps the rest)"
                    );
                }
            }
            tokio::select! {
                biased;
                () = shutdown.clone().wait() => break Ok(true),
                _ = tick.tick() => {
                    if writer.synced_before(super::SYNC_EVERY) {
                        writer.sync().map_err(SyncError::Spool)?;
                    }
                    if last_probe.elapsed() >= PROBE_EVERY {
                        last_probe = std::time::Instant::now();
                        if green_answers(config).await {
                            tracing::info!(bytes = writer.len(), end = %writer.end(), "green answers again: applying from the spool");
                            break Ok(true);
                        }
                    }
                }
                frame = stream.next(), if !full => match frame {
                    Ok(Some(ReplicationFrame::XLogData { wal_start, data, .. })) => {
                        writer.frame(wal_start, &data).map_err(SyncError::Spool)?;
                        metrics.set_spool_bytes(writer.len());
                    }
                    Ok(Some(ReplicationFrame::Keepalive { .. })) => {}
                    Ok(None) => break Err(SyncError::SourceEnded),
                    Err(e) => break Err(SyncError::Source(e)),
                },
            }
        };
        writer.sync().map_err(SyncError::Spool)?;
        metrics.set_spool_full(false);
        if let Err(e) = stream.close().await {
            tracing::debug!(error = %e, "the spool's replication stream did not end cleanly");
        }
        outcome
    }
    .await;
    client::close(blue_sql, blue_sql_conn).await;
    result
}
