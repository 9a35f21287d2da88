//! The migration lock and the DDL lock timeout.
//!
//! Concurrent `blueshift migrate` runs on one database are serialized by a session-level
//! advisory lock on a fixed key (xxh3-64 of `"blueshift.migrate"`): a second run waits for the
//! first (by default), or waits a bounded time, or fails at once, naming the holder's pid when
//! `pg_locks` shows it. Once the lock is held, `lock_timeout` is set for the migration statements
//! so that DDL never queues long behind production traffic.

use std::time::Duration;

use tokio_postgres::Client;
use tracing::{debug, info};
use xxhash_rust::xxh3::xxh3_64;

use super::MigrateError;
use crate::client::SqlError;

/// The name the lock key is derived from.
pub const LOCK_NAME: &str = "blueshift.migrate";

/// SQLSTATE `lock_not_available`: `lock_timeout` expired.
pub(crate) const LOCK_NOT_AVAILABLE: &str = "55P03";

/// How long to wait for another run's migration lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LockWait {
    /// Wait as long as it takes (the default).
    #[default]
    Forever,
    /// Wait at most this long; zero fails at once.
    Bounded(Duration),
}

/// The advisory lock key: xxh3-64 of [`LOCK_NAME`], as PostgreSQL's `bigint`.
pub fn lock_key() -> i64 {
    i64::from_ne_bytes(xxh3_64(LOCK_NAME.as_bytes()).to_ne_bytes())
}

/// Takes the migration lock for this session, waiting as `wait` says.
pub(crate) async fn acquire(client: &Client, wait: LockWait) -> Result<(), MigrateError> {
    let key = lock_key();
    let query = |what: &str| {
        let what = what.to_owned();
        move |source: tokio_postgres::Error| MigrateError::Query {
            what,
            source: source.into(),
        }
    };
    let got: bool = client
        .query_one("SELECT pg_catalog.pg_try_advisory_lock($1)", &[&key])
        .await
        .map_err(query("take the migration lock"))?
        .get(0);
    if got {
        debug!(key, "migration lock taken");
        return Ok(());
    }
    let holder = holder(client).await;
    let timeout = match wait {
        LockWait::Bounded(d) if d.is_zero() => {
            return Err(MigrateError::LockBusy {
                holder,
                waited: Duration::ZERO,
            })
        }
        LockWait::Bounded(d) => d,
        LockWait::Forever => Duration::ZERO,
    };
    info!(
        holder_pid = holder.as_ref().map(|h| h.pid),
        "another blueshift migrate run holds the migration lock; waiting"
    );
    set_lock_timeout(client, timeout)
        .await
        .map_err(|source| MigrateError::Query {
            what: "set lock_timeout".to_owned(),
            source,
        })?;
    match client
        .execute("SELECT pg_catalog.pg_advisory_lock($1)", &[&key])
        .await
    {
        Ok(_) => {
            debug!(key, "migration lock taken");
            Ok(())
        }
        Err(e) => {
            let e = SqlError::from(e);
            if e.sqlstate() == Some(LOCK_NOT_AVAILABLE) {
                Err(MigrateError::LockBusy {
                    holder: holder_or(client, holder).await,
                    waited: timeout,
                })
            } else {
                Err(MigrateError::Query {
                    what: "take the migration lock".to_owned(),
                    source: e,
                })
            }
        }
    }
}

/// Releases the migration lock of this session.
pub(crate) async fn release(client: &Client) -> Result<(), SqlError> {
    client
        .execute("SELECT pg_catalog.pg_advisory_unlock($1)", &[&lock_key()])
        .await?;
    debug!("migration lock released");
    Ok(())
}

/// Sets this session's `lock_timeout` (zero: no timeout).
pub(crate) async fn set_lock_timeout(client: &Client, timeout: Duration) -> Result<(), SqlError> {
    let ms = format!("{}ms", timeout.as_millis());
    client
        .execute(
            "SELECT pg_catalog.set_config('lock_timeout', $1, false)",
            &[&ms],
        )
        .await?;
    Ok(())
}

/// The session holding the migration lock, as `pg_locks` and `pg_stat_activity` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolder {
    /// Its backend pid.
    pub pid: i32,
    /// Its `application_name`, if set.
    pub application_name: Option<String>,
}

async fn holder_or(client: &Client, earlier: Option<LockHolder>) -> Option<LockHolder> {
    match holder(client).await {
        Some(h) => Some(h),
        None => earlier,
    }
}

/// Who holds the lock now, if anyone can be seen holding it.
async fn holder(client: &Client) -> Option<LockHolder> {
    let key = u64::from_ne_bytes(lock_key().to_ne_bytes());
    // An advisory lock on a bigint key shows as classid = high half, objid = low half,
    // objsubid = 1.
    let high = u32::try_from(key >> 32).expect("the high half of a u64 fits in u32");
    let low = u32::try_from(key & 0xffff_ffff).expect("the low half of a u64 fits in u32");
    let row = client
        .query_opt(
            "SELECT l.pid, nullif(a.application_name, '') \
               FROM pg_catalog.pg_locks l LEFT JOIN pg_catalog.pg_stat_activity a \
                 ON a.pid OPERATOR(pg_catalog.=) l.pid \
              WHERE l.locktype OPERATOR(pg_catalog.=) 'advisory' AND l.granted \
                AND l.database OPERATOR(pg_catalog.=) (SELECT oid FROM pg_catalog.pg_database \
                     WHERE datname OPERATOR(pg_catalog.=) pg_catalog.current_database()) \
                AND l.classid OPERATOR(pg_catalog.=) $1 AND l.objid OPERATOR(pg_catalog.=) $2 \
                AND l.objsubid OPERATOR(pg_catalog.=) 1 \
                AND l.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid() \
              LIMIT 1",
            &[&high, &low],
        )
        .await
        .ok()??;
    Some(LockHolder {
        pid: row.get(0),
        application_name: row.get(1),
    })
}
