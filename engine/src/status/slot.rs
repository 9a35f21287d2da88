//! The replication slot on blue, as `pg_replication_slots` shows it, and blue's WAL position.

use blueshift_decoder::Lsn;
use tokio_postgres::Client;

use crate::client::SqlError;

/// One row of `pg_replication_slots`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotInfo {
    /// `slot_name`.
    pub name: String,
    /// `plugin` (`pgoutput` for blueshift's slots; `None` for a physical slot).
    pub plugin: Option<String>,
    /// `slot_type`: `logical` or `physical`.
    pub slot_type: String,
    /// `database`: the database a logical slot decodes.
    pub database: Option<String>,
    /// `active`: a connection is streaming from it now.
    pub active: bool,
    /// `active_pid`: the backend streaming from it.
    pub active_pid: Option<i32>,
    /// `restart_lsn`: the oldest WAL blue keeps for it (`None` once the slot lost its WAL).
    pub restart_lsn: Option<Lsn>,
    /// `confirmed_flush_lsn`: what the consumer acknowledged as flushed.
    pub confirmed_flush_lsn: Option<Lsn>,
    /// `wal_status` (PostgreSQL 13+): `reserved`, `extended`, `unreserved` or `lost`.
    pub wal_status: Option<String>,
    /// `safe_wal_size` (PostgreSQL 13+): bytes of WAL that can still be written before the slot
    /// risks losing its WAL; `None` means unlimited (`max_slot_wal_keep_size = -1`).
    pub safe_wal_size: Option<i64>,
    /// Why blue invalidated the slot: `invalidation_reason` (PostgreSQL 17+: `wal_removed`,
    /// `rows_removed`, `wal_level_insufficient`, `idle_timeout`), `conflict with recovery` when
    /// 16's `conflicting` is true; `None` when valid or not known (older servers).
    pub invalidation: Option<String>,
}

/// Reads slot `slot`, or `None` when it does not exist.
pub(crate) async fn read(client: &Client, slot: &str) -> Result<Option<SlotInfo>, SqlError> {
    let version = crate::client::server_version_num(client).await?;
    // wal_status and safe_wal_size came in PostgreSQL 13.
    let wal_columns = if version >= 130_000 {
        "wal_status, safe_wal_size"
    } else {
        "NULL::text, NULL::bigint"
    };
    // invalidation_reason came in 17; 16 only says whether the slot conflicted with recovery.
    let invalidation = match version {
        170_000.. => "invalidation_reason",
        160_000.. => "CASE WHEN conflicting THEN 'conflict with recovery' END",
        _ => "NULL::text",
    };
    let sql = format!(
        "SELECT slot_name::text, plugin::text, slot_type, database::text, active, active_pid,
                restart_lsn::text, confirmed_flush_lsn::text, {wal_columns}, {invalidation}
           FROM pg_catalog.pg_replication_slots WHERE slot_name = $1"
    );
    let Some(row) = client.query_opt(&sql, &[&slot]).await? else {
        return Ok(None);
    };
    Ok(Some(SlotInfo {
        name: row.try_get(0)?,
        plugin: row.try_get(1)?,
        slot_type: row.try_get(2)?,
        database: row.try_get(3)?,
        active: row.try_get(4)?,
        active_pid: row.try_get(5)?,
        restart_lsn: parse_lsn(row.try_get(6)?),
        confirmed_flush_lsn: parse_lsn(row.try_get(7)?),
        wal_status: row.try_get(8)?,
        safe_wal_size: row.try_get(9)?,
        invalidation: row.try_get(10)?,
    }))
}

/// Reads a slot with `read` until `held` says no consumer holds it, or `grace` has passed; the
/// last read. A consumer that just went away (a sync killed a moment ago) leaves its slot
/// active until blue's walsender notices, so a caller that refuses a slot in use gives it this
/// moment first.
pub(crate) async fn after_release_grace<T, E, F, Fut>(
    grace: std::time::Duration,
    mut read: F,
    held: impl Fn(&T) -> bool,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        let value = read().await?;
        if !held(&value) || tokio::time::Instant::now() >= deadline {
            return Ok(value);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// `pg_current_wal_lsn()`.
pub(crate) async fn current_wal_lsn(client: &Client) -> Result<Lsn, SqlError> {
    let text: String = client
        .query_one(
            "SELECT pg_catalog.pg_current_wal_lsn()::pg_catalog.text",
            &[],
        )
        .await?
        .try_get(0)?;
    Ok(parse_lsn(Some(text)).unwrap_or(Lsn::INVALID))
}

/// A `pg_lsn` printed as text. The server prints only valid `X/Y`, so a value that does not
/// parse is treated as absent rather than trusted.
pub(crate) fn parse_lsn(text: Option<String>) -> Option<Lsn> {
    text.and_then(|t| t.parse().ok())
}
