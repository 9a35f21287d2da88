//! Checks before any data moves, each failure naming the object and the fix:
//! `wal_level = logical` on blue; the publication (created when asked); replication privileges;
//! a free replication slot when the slot must be created; the schema plan (with the configured
//! renames): every published table present on green and nothing blocked — a green-only
//! `NOT NULL` column without a default, a key column green lacks, a type green cannot take, a
//! rename naming a column either side lacks; tables whose UPDATE and DELETE cannot be
//! replicated (no usable replica identity) reported as warnings.

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
    let (green, green_conn) = connect("green", &config.target).await?;
    let result = run_checks(config, &blue, &green).await;
    blue_conn.abort();
    green_conn.abort();
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
        "SELECT current_setting('wal_level')",
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

    // Replication privilege on blue.
    let row = one(
        blue,
        "blue",
        "role attributes",
        "SELECT rolreplication OR rolsuper, current_user::text FROM pg_catalog.pg_roles WHERE rolname = current_user",
        &[],
    )
    .await?;
    if let Some(row) = row {
        if !row.get::<_, bool>(0) {
            let user: String = row.get(1);
            return Err(failed(
                format!(
                    "role {} on blue may not use replication",
                    quote_ident(&user)
                ),
                format!("ALTER ROLE {} REPLICATION on blue", quote_ident(&user)),
            ));
        }
    }

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

    // A free slot, when ours must be created.
    let row = one(
        blue,
        "blue",
        "replication slots",
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots WHERE slot_name = $1),
                (SELECT count(*) FROM pg_catalog.pg_replication_slots),
                current_setting('max_replication_slots')::int8",
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
    let plan = schema::plan(blue, green, Some(&config.publication), &config.renames)
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
            "fix green's schema (blueshift migrate) or the renames, then start sync again; `blueshift plan` shows every difference",
        ));
    }

    // Green: the appliers need to set session_replication_role and use replication origins.
    let row = one(
        green,
        "green",
        "role attributes",
        "SELECT rolsuper, current_user::text FROM pg_catalog.pg_roles WHERE rolname = current_user",
        &[],
    )
    .await?;
    if let Some(row) = row {
        if !row.get::<_, bool>(0) {
            let user: String = row.get(1);
            let origin_ok = one(
                green,
                "green",
                "function privileges",
                "SELECT has_function_privilege('pg_catalog.pg_replication_origin_xact_setup(pg_lsn, timestamptz)', 'execute')",
                &[],
            )
            .await?
            .is_some_and(|r| r.get::<_, bool>(0));
            if !origin_ok {
                return Err(failed(
                    format!("role {} on green may not use replication origins", quote_ident(&user)),
                    "connect to green as a superuser, or GRANT EXECUTE on the pg_replication_origin_* functions and SET on session_replication_role",
                ));
            }
        }
    }
    Ok(())
}
