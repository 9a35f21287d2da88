//! Disarming the reverse direction: the `blueshift.reverse` row first, then the slot and
//! publication on green, the guard record, lag heartbeat and origins on blue, and two-way mode's
//! sequence strategy (see the parent module's docs).

use std::time::Duration;

use blueshift_decoder::config::ConnectConfig;
use blueshift_decoder::ident::quote_ident;
use tokio_postgres::Client;

use super::super::{ORIGIN_PREFIX, PUBLICATION_COMMENT};
use super::{
    connect, read_reverse, reverse_origin_worker, reverse_publication_name, reverse_slot_name,
    DirectionError, OBJECT_IN_USE, RELEASE_WAIT,
};
use crate::{client, slot_guard};

/// The reverse slot on green: `Some(active_pid)` when it exists.
pub(super) async fn slot_on(
    green: &Client,
    slot: &str,
) -> Result<Option<Option<i32>>, DirectionError> {
    let row = green
        .query_opt(
            "SELECT active_pid FROM pg_catalog.pg_replication_slots \
              WHERE slot_name OPERATOR(pg_catalog.=) $1",
            &[&slot],
        )
        .await
        .map_err(DirectionError::sql("green", "read pg_replication_slots"))?;
    Ok(row.map(|r| r.get(0)))
}

/// Drops the slot on green when it exists, once no process holds it (waiting up to
/// [`RELEASE_WAIT`] for a sidecar to let go).
pub(super) async fn drop_slot(green: &Client, slot: &str) -> Result<bool, DirectionError> {
    let deadline = tokio::time::Instant::now() + RELEASE_WAIT;
    loop {
        match slot_on(green, slot).await? {
            None => return Ok(false),
            Some(Some(pid)) if tokio::time::Instant::now() >= deadline => {
                return Err(DirectionError::InUse {
                    what: format!("replication slot {}", quote_ident(slot)),
                    side: "green",
                    pid: Some(pid),
                })
            }
            Some(Some(_)) => tokio::time::sleep(Duration::from_millis(200)).await,
            Some(None) => {
                let dropped = green
                    .execute("SELECT pg_catalog.pg_drop_replication_slot($1)", &[&slot])
                    .await;
                match dropped {
                    Ok(_) => {
                        tracing::info!(slot, "reverse replication slot dropped on green");
                        return Ok(true);
                    }
                    // Taken between the two statements: wait again.
                    Err(e) if e.code().is_some_and(|c| c.code() == OBJECT_IN_USE) => {}
                    Err(e) => return Err(DirectionError::sql("green", "drop the reverse slot")(e)),
                }
            }
        }
    }
}

/// Drops the publication on green when it exists and is blueshift's.
pub(super) async fn drop_publication(
    green: &Client,
    publication: &str,
) -> Result<bool, DirectionError> {
    let comment: Option<Option<String>> = green
        .query_opt(
            "SELECT pg_catalog.obj_description(oid, 'pg_publication') FROM pg_catalog.pg_publication \
              WHERE pubname OPERATOR(pg_catalog.=) $1",
            &[&publication],
        )
        .await
        .map_err(DirectionError::sql("green", "read pg_publication"))?
        .map(|r| r.get(0));
    match comment {
        None => Ok(false),
        Some(Some(c)) if c == PUBLICATION_COMMENT => {
            green
                .batch_execute(&format!("DROP PUBLICATION {}", quote_ident(publication)))
                .await
                .map_err(DirectionError::sql("green", "DROP PUBLICATION"))?;
            tracing::info!(publication, "reverse publication dropped on green");
            Ok(true)
        }
        Some(_) => Err(DirectionError::ForeignPublication {
            publication: publication.to_owned(),
        }),
    }
}

/// Drops the reverse origins of forward slot `slot` on blue, once no applier holds them.
pub(super) async fn drop_origins(blue: &Client, slot: &str) -> Result<usize, DirectionError> {
    let prefix = format!("{ORIGIN_PREFIX}{slot}_r");
    let rows = blue
        .query(
            "SELECT roname::pg_catalog.text FROM pg_catalog.pg_replication_origin \
              WHERE pg_catalog.starts_with(roname, $1)",
            &[&prefix],
        )
        .await
        .map_err(DirectionError::sql("blue", "read the replication origins"))?;
    let mut dropped = 0;
    for row in rows {
        let name: String = row.get(0);
        if reverse_origin_worker(slot, &name).is_none() {
            continue;
        }
        let deadline = tokio::time::Instant::now() + RELEASE_WAIT;
        loop {
            match blue
                .execute("SELECT pg_catalog.pg_replication_origin_drop($1)", &[&name])
                .await
            {
                Ok(_) => break,
                Err(e) if e.code().is_some_and(|c| c.code() == OBJECT_IN_USE) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(DirectionError::InUse {
                            what: format!("replication origin {}", quote_ident(&name)),
                            side: "blue",
                            pid: None,
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    return Err(DirectionError::sql(
                        "blue",
                        "drop a reverse replication origin",
                    )(e))
                }
            }
        }
        tracing::info!(origin = %name, "reverse replication origin dropped on blue");
        dropped += 1;
    }
    Ok(dropped)
}

/// What [`disarm_reverse`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Disarmed {
    /// The `blueshift.reverse` row was there.
    pub row: bool,
    /// The reverse slot was dropped on green.
    pub slot: bool,
    /// The reverse publication was dropped on green.
    pub publication: bool,
    /// Reverse origins dropped on blue.
    pub origins: usize,
    /// Sequences whose two-way strategy was reverted (`--sequence-strategy`).
    pub sequences: usize,
}

/// Disarms the reverse direction of forward slot `slot` (see the module docs): the row first,
/// then the slot and publication on green, the guard record and origins on blue. Idempotent;
/// `publication` (the forward one) names the reverse publication when the row is gone already.
pub async fn disarm_reverse(
    blue: &ConnectConfig,
    green: &ConnectConfig,
    slot: &str,
    publication: &str,
) -> Result<Disarmed, DirectionError> {
    let (green_sql, green_conn) = connect(green, "green").await?;
    let (blue_sql, blue_conn) = match connect(blue, "blue").await {
        Ok(c) => c,
        Err(e) => {
            client::close(green_sql, green_conn).await;
            return Err(e);
        }
    };
    let done = disarm(&blue_sql, &green_sql, slot, publication).await;
    client::close(green_sql, green_conn).await;
    client::close(blue_sql, blue_conn).await;
    done
}

/// [`disarm_reverse`] over open connections (`blueshift cleanup`).
pub(crate) async fn disarm_with(
    blue: &Client,
    green: &Client,
    slot: &str,
    publication: &str,
) -> Result<Disarmed, DirectionError> {
    disarm(blue, green, slot, publication).await
}

async fn disarm(
    blue: &Client,
    green: &Client,
    slot: &str,
    publication: &str,
) -> Result<Disarmed, DirectionError> {
    let row = read_reverse(green, slot)
        .await
        .map_err(|source| DirectionError::Sql {
            side: "green",
            what: "read blueshift.reverse".to_owned(),
            source,
        })?;
    let (reverse_slot, reverse_publication) = match &row {
        Some(r) => (r.reverse_slot.clone(), r.reverse_publication.clone()),
        None => (
            reverse_slot_name(slot),
            reverse_publication_name(publication),
        ),
    };
    let mut disarmed = Disarmed::default();
    if row.is_some() {
        green
            .execute("DELETE FROM blueshift.reverse WHERE slot = $1", &[&slot])
            .await
            .map_err(DirectionError::sql(
                "green",
                "delete the blueshift.reverse row",
            ))?;
        disarmed.row = true;
    }
    disarmed.slot = drop_slot(green, &reverse_slot).await?;
    disarmed.publication = drop_publication(green, &reverse_publication).await?;
    slot_guard::forget(blue, &reverse_slot)
        .await
        .map_err(DirectionError::sql(
            "blue",
            "forget the reverse slot guard record",
        ))?;
    let lag_table = crate::client::relation_exists(blue, "blueshift.sync_lag")
        .await
        .map_err(DirectionError::sql("blue", "look up blueshift.sync_lag"))?;
    if lag_table {
        blue.execute(
            "DELETE FROM blueshift.sync_lag WHERE slot = $1",
            &[&reverse_slot],
        )
        .await
        .map_err(DirectionError::sql(
            "blue",
            "forget the reverse lag heartbeat",
        ))?;
    }
    disarmed.origins = drop_origins(blue, slot).await?;
    // Two-way mode's sequence strategy goes with it.
    disarmed.sequences = crate::sequence::two_way::revert(blue, green, slot)
        .await
        .map_err(DirectionError::Sequences)?;
    tracing::info!(slot, ?disarmed, "the reverse direction is disarmed");
    Ok(disarmed)
}
