//! Checks before any data moves, each failure naming the object and the fix:
//! `wal_level = logical` on blue; every privilege both roles need ([`crate::privileges`]: all
//! the missing ones at once, each with its GRANT); the publication (created when asked);
//! a free replication slot when the slot must be created; the schema plan (with the configured
//! mapping): every published table present on green and nothing blocked — a blue column green
//! lacks that is not declared excluded, a green-only `NOT NULL` column without a default, a key
//! column green lacks (or excluded), a type green cannot take or would take with a loss not
//! declared acceptable, a rename or exclusion naming a column either side lacks; tables whose
//! UPDATE and DELETE cannot be replicated (no usable replica identity) reported as warnings.

use blueshift_decoder::ident::quote_ident;
use tokio_postgres::Client;

use super::SyncConfig;
use crate::client;
use crate::schema::{self, SchemaError, Verdict};

/// The comment `blueshift sync` puts on a publication it creates; `blueshift cleanup` drops
/// only a publication carrying it.
pub const PUBLICATION_COMMENT: &str = "blueshift: created by blueshift sync";

/// A preflight check failed.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// A SQL connection failed.
    #[error("could not connect to {side} ({target})")]
    Connect {
        /// `blue` or `green`.
        side: &'static str,
        /// The redacted target.
        target: String,
        /// Why.
        #[source]
        source: client::ClientError,
    },
    /// A catalog query failed.
    #[error("preflight query on {side} failed: {what}")]
    Query {
        /// `blue` or `green`.
        side: &'static str,
        /// What was asked.
        what: &'static str,
        /// Why.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A check failed.
    #[error("{problem} — {fix}")]
    Failed {
        /// What is wrong.
        problem: String,
        /// What to do.
        fix: String,
    },
    /// Comparing the schemas failed.
    #[error("could not compare blue's and green's schemas")]
    Schema(#[source] SchemaError),
    /// Another process streams from the slot.
    #[error(
        "replication slot {} on blue is in use: blue's process {pid} streams it{holder} — another `blueshift sync` \
         (or another consumer) is streaming from it: stop that one first, or give this sync its \
         own --slot. If that process is gone, blue frees the slot within wal_sender_timeout, or \
         at once with SELECT pg_terminate_backend({pid}) on blue",
        quote_ident(slot)
    )]
    SlotInUse {
        /// The slot.
        slot: String,
        /// `pg_replication_slots.active_pid`: blue's walsender serving the other process.
        pid: i32,
        /// Who the other process is, as ` (to "blueshift sync bs (pid 12 on db1)", from host …)`.
        holder: String,
    },
    /// Blue and green are one database.
    #[error("--source and --target reach the same database ({}) of the same server — green must be another database than blue: check the connection strings", quote_ident(database))]
    SameDatabase {
        /// The database.
        database: String,
    },
    /// Privileges are missing on blue or green (each named with the GRANT that fixes it).
    #[error(transparent)]
    Privileges(#[from] crate::privileges::MissingPrivileges),
    /// The slot is lost, invalidated, or not where blueshift left it.
    #[error(transparent)]
    Slot(#[from] crate::slot_guard::SlotError),
}

fn failed(problem: impl Into<String>, fix: impl Into<String>) -> PreflightError {
    PreflightError::Failed {
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// Runs every check; creates the publication when `create_publication` is set.
pub(crate) async fn check(config: &SyncConfig) -> Result<(), PreflightError> {
    let (blue, blue_conn) = connect("blue", &config.source).await?;
    let (green, green_conn) = match connect("green", &config.target).await {
        Ok(connected) => connected,
        Err(e) => {
            client::close(blue, blue_conn).await;
            return Err(e);
        }
    };
    let result = run_checks(config, &blue, &green).await;
    // Closed with a Terminate: a dropped socket makes blue log "could not send data to client".
    client::close(blue, blue_conn).await;
    client::close(green, green_conn).await;
    result
}

async fn connect(
    side: &'static str,
    target: &blueshift_decoder::config::ConnectConfig,
) -> Result<(Client, tokio::task::JoinHandle<()>), PreflightError> {
    client::connect(target, "blueshift preflight")
        .await
        .map_err(|source| PreflightError::Connect {
            side,
            target: target.to_string(),
            source,
        })
}

async fn one(
    c: &Client,
    side: &'static str,
    what: &'static str,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Option<tokio_postgres::Row>, PreflightError> {
    c.query_opt(sql, params)
        .await
        .map_err(|source| PreflightError::Query { side, what, source })
}

async fn run_checks(
    config: &SyncConfig,
    blue: &Client,
    green: &Client,
) -> Result<(), PreflightError> {
    // wal_level.
    let row = one(
        blue,
        "blue",
        "wal_level",
        "SELECT pg_catalog.current_setting('wal_level')",
        &[],
    )
    .await?;
    let wal_level: String = row.map(|r| r.get(0)).unwrap_or_default();
    if wal_level != "logical" {
        return Err(failed(
            format!("blue has wal_level = {wal_level}, logical replication needs logical"),
            "run ALTER SYSTEM SET wal_level = logical on blue and restart it",
        ));
    }

    // Two-way mode tells conflicts apart by commit timestamps and origins.
    if config.bidirectional {
        super::direction::preflight::check(config, blue, green).await?;
    }

    // Every privilege both roles need, before anything is created.
    crate::privileges::check_sync(config, blue, green).await?;

    // The publication.
    let exists = one(
        blue,
        "blue",
        "publication",
        "SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1",
        &[&config.publication],
    )
    .await?
    .is_some();
    if !exists {
        let Some(tables) = &config.create_publication else {
            return Err(failed(
                format!("publication {} does not exist on blue", quote_ident(&config.publication)),
                "create it (CREATE PUBLICATION … FOR ALL TABLES, or FOR TABLE …) or pass --create-publication",
            ));
        };
        let name = quote_ident(&config.publication);
        let scope = if tables.is_empty() {
            "ALL TABLES".to_owned()
        } else {
            let list: Vec<String> = tables
                .iter()
                .map(|t| match t.split_once('.') {
                    Some((schema, table)) => {
                        format!("{}.{}", quote_ident(schema), quote_ident(table))
                    }
                    None => quote_ident(t),
                })
                .collect();
            format!("TABLE {}", list.join(", "))
        };
        blue.batch_execute(&format!(
            "CREATE PUBLICATION {name} FOR {scope}; COMMENT ON PUBLICATION {name} IS '{PUBLICATION_COMMENT}'"
        ))
        .await
        .map_err(|source| PreflightError::Query {
            side: "blue",
            what: "CREATE PUBLICATION",
            source,
        })?;
        tracing::info!(publication = %config.publication, scope = %scope, "created the publication");
    }

    // Blue and green must be two databases (a sync onto itself would apply every change twice).
    same_database(blue, green).await?;

    // Our slot, when it exists, must be free: another sync streaming from it would take turns
    // with this one. A process that just died may hold it for a moment: wait a little.
    slot_free(blue, &config.slot).await?;

    // A free slot, when ours must be created.
    let row = one(
        blue,
        "blue",
        "replication slots",
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots WHERE slot_name = $1),
                (SELECT pg_catalog.count(*) FROM pg_catalog.pg_replication_slots),
                pg_catalog.current_setting('max_replication_slots')::pg_catalog.int8",
        &[&config.slot],
    )
    .await?;
    if let Some(row) = row {
        let (exists, used, max): (bool, i64, i64) = (row.get(0), row.get(1), row.get(2));
        if !exists && used >= max {
            return Err(failed(
                format!("blue has no free replication slot ({used} of max_replication_slots = {max} in use)"),
                "drop an unused slot (pg_drop_replication_slot) or raise max_replication_slots and restart blue",
            ));
        }
    }

    // The slot, before anything decides to copy: a slot that is gone while green holds changes
    // streamed through it, invalidated, or moved past what blueshift acknowledged is named as
    // such (not as, say, a green table that already has rows).
    crate::slot_guard::preflight(blue, green, &config.slot).await?;

    // Green: every published table, and nothing the plan (renames applied) blocks.
    let plan = schema::plan(blue, green, Some(&config.publication), &config.mapping)
        .await
        .map_err(PreflightError::Schema)?;
    let mut problems = Vec::new();
    for table in &plan.tables {
        if !table.on_green {
            problems.push(format!("table {} does not exist on green", table.table));
            continue;
        }
        for note in table.notes.iter().filter(|n| n.verdict == Verdict::Blocked) {
            problems.push(note.message.clone());
        }
        for column in table
            .columns
            .iter()
            .filter(|c| c.verdict == Verdict::Blocked)
        {
            problems.push(format!(
                "column {} of table {}: {}",
                column.label(),
                table.table,
                column.note
            ));
        }
        // The plan's notes carry the replica identity warnings (and their fixes).
        for note in table.notes.iter().filter(|n| n.verdict == Verdict::Warning) {
            tracing::warn!(table = %table.table, "{}", note.message);
        }
        for column in table
            .columns
            .iter()
            .filter(|c| c.verdict == Verdict::Warning)
        {
            tracing::warn!(table = %table.table, column = %column.label(), "{}", column.note);
        }
    }
    if config.binary {
        for table in &plan.tables {
            for column in &table.columns {
                let (Some(b), Some(g)) = (&column.blue, &column.green) else {
                    continue;
                };
                if !column.same_builtin_type() {
                    problems.push(format!(
                        "--binary needs the same built-in type on both sides, but column {} of table {} is {} on blue and {} on green",
                        column.label(),
                        table.table,
                        b.type_name,
                        g.type_name
                    ));
                }
            }
        }
    }
    if !problems.is_empty() {
        return Err(failed(
            problems.join("; "),
            "fix green's schema (blueshift migrate) or the mapping (--rename, --exclude, --lossy-cast), then start sync again; `blueshift plan` shows every difference",
        ));
    }

    Ok(())
}

/// Refuses blue and green being the same database. Two clusters can share a system
/// identifier (a green made from a physical copy of blue), so the check is by sight: blue's
/// session takes a unique `application_name`, and green looks for it in its own
/// `pg_stat_activity`, in its own database.
async fn same_database(blue: &Client, green: &Client) -> Result<(), PreflightError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let token = format!("blueshift preflight {} {nanos}", std::process::id());
    let set = "SELECT pg_catalog.set_config('application_name', $1, false)";
    let Ok(previous) = blue
        .query_one("SELECT pg_catalog.current_setting('application_name')", &[])
        .await
    else {
        return Ok(());
    };
    let previous: String = previous.get(0);
    if blue.execute(set, &[&token]).await.is_err() {
        return Ok(());
    }
    let seen = green
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity
                             WHERE application_name = $1 AND datname = pg_catalog.current_database())",
            &[&token],
        )
        .await;
    let _ = blue.execute(set, &[&previous]).await;
    match seen {
        Ok(row) if row.get::<_, bool>(0) => {
            let name = green
                .query_one("SELECT pg_catalog.current_database()::text", &[])
                .await
                .map(|r| r.get::<_, String>(0))
                .unwrap_or_default();
            Err(PreflightError::SameDatabase { database: name })
        }
        _ => Ok(()),
    }
}

/// How long a slot held by a process that just went away may stay active.
const SLOT_RELEASE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Refuses a slot another process streams from, naming its pid and where it connects from.
async fn slot_free(blue: &Client, slot: &str) -> Result<(), PreflightError> {
    const SQL: &str =
        "SELECT s.active_pid, a.application_name, a.client_addr::text, a.client_hostname
                         FROM pg_catalog.pg_replication_slots s
                         LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = s.active_pid
                        WHERE s.slot_name = $1 AND s.active";
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&slot];
    let row = crate::status::slot::after_release_grace(
        SLOT_RELEASE_GRACE,
        || one(blue, "blue", "replication slots", SQL, &params),
        Option::is_some,
    )
    .await?;
    let Some(row) = row else { return Ok(()) };
    let pid: Option<i32> = row.get(0);
    let application: Option<String> = row.get(1);
    let addr: Option<String> = row.get(2);
    let hostname: Option<String> = row.get(3);
    let mut parts = Vec::new();
    if let Some(app) = application.filter(|a| !a.is_empty()) {
        parts.push(format!("to {app:?}"));
    }
    match (hostname, addr) {
        (Some(host), Some(addr)) => parts.push(format!("from host {host} ({addr})")),
        (None, Some(addr)) => parts.push(format!("from host {addr}")),
        (Some(host), None) => parts.push(format!("from host {host}")),
        (None, None) => parts.push("over a local socket".to_owned()),
    }
    Err(PreflightError::SlotInUse {
        slot: slot.to_owned(),
        pid: pid.unwrap_or(0),
        holder: format!(" ({})", parts.join(", ")),
    })
}
