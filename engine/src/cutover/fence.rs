//! The fence on blue: blue read-only for every role but blueshift's, the sessions that bypass
//! PgBouncer listed (and, when asked, terminated), and a marker in blue's WAL whose LSN (L) is
//! what green must reach before traffic moves.
//!
//! - **Read-only**: `ALTER DATABASE … SET default_transaction_read_only = on`. New sessions
//!   (PgBouncer's, once `PAUSE` closed its server connections) start read-only; blueshift's own
//!   sessions turn it off for themselves (`set_config(…, false)`), as its appliers do.
//! - **Marker**: `pg_logical_emit_message(true, 'blueshift.fence', <slot>)` in a transaction of
//!   its own: a transactional message goes through the sync's stream as a transaction, so
//!   green's origins record a commit at or past L once everything blue committed before it is
//!   on green.
//! - **Late writes**: a transaction that writes blue after the fence (a session that bypasses
//!   the pooler and was already read-write) is found by green's origins moving past the fence,
//!   by the xid an open session holds, and named with its session, xids and tables.

use std::fmt;

use blueshift_decoder::ident::quote_ident;
use blueshift_decoder::Lsn;
use tokio_postgres::Client;

use super::error::CutoverError;

/// The prefix of the fence marker in blue's WAL.
pub const FENCE_PREFIX: &str = "blueshift.fence";

/// A session on blue that does not come through PgBouncer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectSession {
    /// Its backend pid.
    pub pid: i32,
    /// Its role.
    pub user: String,
    /// Its `application_name`.
    pub application: String,
    /// Its client address.
    pub client: String,
    /// The xid it holds, when it is writing.
    pub xid: Option<String>,
}

impl fmt::Display for DirectSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pid {} (user {:?}, application {:?}, from {}",
            self.pid, self.user, self.application, self.client
        )?;
        if let Some(xid) = &self.xid {
            write!(f, ", writing in xid {xid}")?;
        }
        f.write_str(")")
    }
}

/// Turns the read-only fence off for this session (blueshift writes on a fenced database).
pub(crate) async fn exempt(client: &Client, side: &'static str) -> Result<(), CutoverError> {
    client
        .execute(
            "SELECT pg_catalog.set_config('default_transaction_read_only', 'off', false)",
            &[],
        )
        .await
        .map(|_| ())
        .map_err(CutoverError::query(
            side,
            "set default_transaction_read_only off for blueshift's session",
        ))
}

/// Whether `dbname` already has a database-wide `default_transaction_read_only` setting.
pub(crate) async fn read_only_setting(
    client: &Client,
    side: &'static str,
) -> Result<Option<String>, CutoverError> {
    let row = client
        .query_opt(
            "SELECT s.setting FROM pg_catalog.pg_db_role_setting r
               JOIN pg_catalog.pg_database d ON d.oid = r.setdatabase,
                    LATERAL pg_catalog.unnest(r.setconfig) s(setting)
              WHERE d.datname = pg_catalog.current_database() AND r.setrole = 0
                AND pg_catalog.starts_with(s.setting, 'default_transaction_read_only=')",
            &[],
        )
        .await
        .map_err(CutoverError::query(side, "read the database's settings"))?;
    Ok(row.map(|r| r.get(0)))
}

/// `ALTER DATABASE <current> SET default_transaction_read_only = on` (idempotent).
pub(crate) async fn make_read_only(
    client: &Client,
    side: &'static str,
) -> Result<(), CutoverError> {
    let db = current_database(client, side).await?;
    client
        .batch_execute(&format!(
            "ALTER DATABASE {} SET default_transaction_read_only = on",
            quote_ident(&db)
        ))
        .await
        .map_err(CutoverError::query(
            side,
            format!("make database {db:?} read-only (ALTER DATABASE … SET default_transaction_read_only = on; needs its owner or a superuser)"),
        ))
}

/// `ALTER DATABASE <current> RESET default_transaction_read_only` (idempotent).
pub(crate) async fn make_writable(client: &Client, side: &'static str) -> Result<(), CutoverError> {
    let db = current_database(client, side).await?;
    client
        .batch_execute(&format!(
            "ALTER DATABASE {} RESET default_transaction_read_only",
            quote_ident(&db)
        ))
        .await
        .map_err(CutoverError::query(
            side,
            format!("make database {db:?} writable again"),
        ))
}

async fn current_database(client: &Client, side: &'static str) -> Result<String, CutoverError> {
    Ok(client
        .query_one("SELECT pg_catalog.current_database()::pg_catalog.text", &[])
        .await
        .map_err(CutoverError::query(side, "read current_database()"))?
        .get(0))
}

/// How often, and how long apart, the sessions that seem to bypass PgBouncer are looked at
/// again before they are reported: see [`bypassing_sessions`].
const RECHECKS: u32 = 3;
const RECHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// The sessions on this database that bypass PgBouncer: [`direct_sessions`] outside PgBouncer's
/// server connections (`SHOW SERVERS` of `admin`, when there is one).
///
/// `PAUSE` makes PgBouncer close its server connections, and a backend whose client went away
/// stays in `pg_stat_activity` until it has exited; PgBouncer may also open a connection
/// between its `SHOW SERVERS` and our look at `pg_stat_activity`. Either would be reported as
/// a session bypassing it. So a session is reported only if it is still there, and still not
/// one of PgBouncer's, when looked at again: up to [`RECHECKS`] more times, [`RECHECK_EVERY`]
/// apart, while any is left. A real direct session stays, and is reported; one that ended
/// meanwhile can no longer write.
pub(crate) async fn bypassing_sessions(
    client: &Client,
    side: &'static str,
    admin: Option<&super::bouncer::Admin>,
) -> Result<Vec<DirectSession>, CutoverError> {
    let mut pooled = match admin {
        Some(admin) => admin.server_pids().await?,
        None => Vec::new(),
    };
    let mut sessions = direct_sessions(client, side, &pooled).await?;
    for _ in 0..RECHECKS {
        if sessions.is_empty() {
            break;
        }
        tokio::time::sleep(RECHECK_EVERY).await;
        if let Some(admin) = admin {
            pooled.extend(admin.server_pids().await?);
        }
        let again = direct_sessions(client, side, &pooled).await?;
        sessions.retain(|s| again.iter().any(|a| a.pid == s.pid));
    }
    Ok(sessions)
}

/// Client sessions on this database other than this one, blueshift's own and PgBouncer's
/// server connections (`pooled`).
pub(crate) async fn direct_sessions(
    client: &Client,
    side: &'static str,
    pooled: &[i32],
) -> Result<Vec<DirectSession>, CutoverError> {
    let rows = client
        .query(
            "SELECT pid, COALESCE(usename::pg_catalog.text, ''),
                    COALESCE(application_name, ''),
                    COALESCE(pg_catalog.host(client_addr), 'a local socket'),
                    backend_xid::pg_catalog.text
               FROM pg_catalog.pg_stat_activity
              WHERE datname = pg_catalog.current_database()
                AND backend_type = 'client backend'
                AND pid <> pg_catalog.pg_backend_pid()
                AND NOT pg_catalog.starts_with(COALESCE(application_name, ''), 'blueshift')
                AND pid <> ALL ($1::pg_catalog.int4[])
              ORDER BY pid",
            &[&pooled],
        )
        .await
        .map_err(CutoverError::query(
            side,
            "list the sessions (pg_stat_activity)",
        ))?;
    Ok(rows
        .iter()
        .map(|r| DirectSession {
            pid: r.get(0),
            user: r.get(1),
            application: r.get(2),
            client: r.get(3),
            xid: r.get(4),
        })
        .collect())
}

/// Terminates the sessions `pids`.
pub(crate) async fn terminate(
    client: &Client,
    side: &'static str,
    pids: &[i32],
) -> Result<(), CutoverError> {
    for pid in pids {
        client
            .execute("SELECT pg_catalog.pg_terminate_backend($1)", &[pid])
            .await
            .map_err(CutoverError::query(
                side,
                format!("terminate session {pid}"),
            ))?;
    }
    Ok(())
}

/// Sessions whose transaction is older than `seconds` (PgBouncer's PAUSE would wait for them).
pub(crate) async fn long_transactions(
    client: &Client,
    side: &'static str,
    seconds: f64,
) -> Result<Vec<String>, CutoverError> {
    let rows = client
        .query(
            "SELECT pid, COALESCE(usename::pg_catalog.text, ''),
                    COALESCE(application_name, ''),
                    pg_catalog.date_part('epoch', pg_catalog.now() - xact_start)
               FROM pg_catalog.pg_stat_activity
              WHERE datname = pg_catalog.current_database()
                AND backend_type = 'client backend'
                AND pid <> pg_catalog.pg_backend_pid()
                AND xact_start < pg_catalog.now() - pg_catalog.make_interval(secs => $1)
              ORDER BY xact_start",
            &[&seconds],
        )
        .await
        .map_err(CutoverError::query(
            side,
            "list long transactions (pg_stat_activity)",
        ))?;
    Ok(rows
        .iter()
        .map(|r| {
            format!(
                "pid {} (user {:?}, application {:?}) has been in a transaction for {:.1} s",
                r.get::<_, i32>(0),
                r.get::<_, String>(1),
                r.get::<_, String>(2),
                r.get::<_, f64>(3)
            )
        })
        .collect())
}

/// What the marker recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Marker {
    /// The message's LSN (L).
    pub(crate) lsn: Lsn,
    /// Blue's insert position once it committed.
    pub(crate) end: Lsn,
    /// Its transaction's xid.
    pub(crate) xid: i64,
}

/// Writes the fence marker into the WAL of `side` in a transaction of its own.
pub(crate) async fn mark(
    blue: &mut Client,
    side: &'static str,
    slot: &str,
) -> Result<Marker, CutoverError> {
    let tx = blue
        .transaction()
        .await
        .map_err(CutoverError::query(side, "begin the fence transaction"))?;
    let row = tx
        .query_one(
            "SELECT pg_catalog.pg_current_xact_id()::pg_catalog.text::pg_catalog.int8,
                    pg_catalog.pg_logical_emit_message(true, $1, $2)::pg_catalog.text",
            &[&FENCE_PREFIX, &slot],
        )
        .await
        .map_err(CutoverError::query(
            side,
            "write the fence marker (pg_logical_emit_message; needs a superuser or EXECUTE on it)",
        ))?;
    tx.commit()
        .await
        .map_err(CutoverError::query(side, "commit the fence marker"))?;
    let end: String = blue
        .query_one(
            "SELECT pg_catalog.pg_current_wal_insert_lsn()::pg_catalog.text",
            &[],
        )
        .await
        .map_err(CutoverError::query(side, "read the WAL position"))?
        .get(0);
    let lsn: String = row.get(1);
    Ok(Marker {
        lsn: parse(&lsn)?,
        end: parse(&end)?,
        xid: row.get(0),
    })
}

pub(crate) fn parse(text: &str) -> Result<Lsn, CutoverError> {
    text.parse().map_err(|_| {
        CutoverError::State(format!(
            "the server returned an LSN blueshift cannot read: {text:?}"
        ))
    })
}

/// Rows of the published tables written by transactions newer than `fence_xid`: the xids and
/// tables, e.g. `xid 812 on "public"."t"`. Reads each published table (a failure path only).
pub(crate) async fn late_writes(
    blue: &Client,
    side: &'static str,
    publication: &str,
    fence_xid: i64,
) -> Result<Vec<String>, CutoverError> {
    let tables = blue
        .query(
            "SELECT schemaname::pg_catalog.text, tablename::pg_catalog.text
               FROM pg_catalog.pg_publication_tables WHERE pubname = $1 ORDER BY 1, 2",
            &[&publication],
        )
        .await
        .map_err(CutoverError::query(side, "list the published tables"))?;
    let mut found = Vec::new();
    for t in &tables {
        let table = format!(
            "{}.{}",
            quote_ident(&t.get::<_, String>(0)),
            quote_ident(&t.get::<_, String>(1))
        );
        // xid ages compare across wraparound: newer than the fence = younger than it.
        let rows = blue
            .query(
                &format!(
                    "SELECT DISTINCT xmin::pg_catalog.text FROM {table}
                      WHERE pg_catalog.age(xmin) < pg_catalog.age(
                            pg_catalog.xid($1::pg_catalog.text::pg_catalog.xid8))
                      LIMIT 10"
                ),
                &[&fence_xid.to_string()],
            )
            .await
            .map_err(CutoverError::query(
                side,
                format!("look for late writes in {table}"),
            ))?;
        for r in rows {
            found.push(format!("xid {} on {table}", r.get::<_, String>(0)));
        }
    }
    Ok(found)
}
