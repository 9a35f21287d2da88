//! The bookkeeping tables in schema `blueshift` on the migrated database:
//! `blueshift.schema_version`, one row per applied migration (or baseline), and
//! `blueshift.schema_history`, an append-only audit of every up, down, repair and baseline,
//! failed attempts included.
//!
//! The tables are created on the first command that writes, under the migration lock, and never
//! by a read-only command (`status`, `validate`, dry runs).

use std::fmt;

use tokio_postgres::GenericClient;

use super::script::Version;
use crate::client::SqlError;

/// Creates the schema, both tables and the trigger that keeps the history append-only.
const CREATE: &str = r#"
CREATE SCHEMA IF NOT EXISTS blueshift;
CREATE TABLE IF NOT EXISTS blueshift.schema_version (
    version      bigint PRIMARY KEY CHECK (version OPERATOR(pg_catalog.>) 0),
    description  text NOT NULL,
    script       text NOT NULL,
    checksum     text NOT NULL,
    kind         text NOT NULL DEFAULT 'migration' CHECK (kind IN ('migration', 'baseline')),
    applied_at   timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    applied_by   text NOT NULL DEFAULT current_user,
    execution_ms bigint NOT NULL DEFAULT 0,
    success      boolean NOT NULL
);
COMMENT ON TABLE blueshift.schema_version IS
    'Migrations applied by blueshift migrate; success = false marks one that failed outside a transaction';
CREATE TABLE IF NOT EXISTS blueshift.schema_history (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version      bigint,
    description  text,
    script       text,
    checksum     text,
    action       text NOT NULL CHECK (action IN ('up', 'down', 'repair', 'baseline')),
    outcome      text NOT NULL CHECK (outcome IN ('success', 'failed')),
    detail       text,
    performed_by text NOT NULL DEFAULT current_user,
    client       text,
    performed_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    execution_ms bigint
);
COMMENT ON TABLE blueshift.schema_history IS
    'Append-only audit of blueshift migrate: every up, down, repair and baseline, failed ones included';
CREATE OR REPLACE FUNCTION blueshift.schema_history_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION 'blueshift.schema_history is append-only'
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'it is the audit of blueshift migrate; nothing may change or remove its rows';
END
$fn$;
DROP TRIGGER IF EXISTS append_only ON blueshift.schema_history;
CREATE TRIGGER append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON blueshift.schema_history
    FOR EACH STATEMENT EXECUTE FUNCTION blueshift.schema_history_append_only();
"#;

/// Whether a row of `schema_version` is a migration or a baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A script that was applied.
    Migration,
    /// A baseline: the database was adopted at this version; nothing was run.
    Baseline,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Migration => "migration",
            Kind::Baseline => "baseline",
        }
    }
}

/// One row of `blueshift.schema_version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    /// The version.
    pub version: Version,
    /// The description when it was applied.
    pub description: String,
    /// The script's file name when it was applied (empty for a baseline).
    pub script: String,
    /// The script's checksum when it was applied (empty for a baseline).
    pub checksum: String,
    /// Migration or baseline.
    pub kind: Kind,
    /// When, in UTC (`2024-05-01 12:00:00Z`).
    pub applied_at: String,
    /// The database role that applied it.
    pub applied_by: String,
    /// How long it ran.
    pub execution_ms: i64,
    /// False when it failed outside a transaction and may be partly applied.
    pub success: bool,
}

/// What a history row records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A migration was applied.
    Up,
    /// A migration was reverted.
    Down,
    /// `repair` changed a row of `schema_version`.
    Repair,
    /// The database was adopted at a version.
    Baseline,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Up => "up",
            Action::Down => "down",
            Action::Repair => "repair",
            Action::Baseline => "baseline",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of `blueshift.schema_history`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    /// Its position in the audit.
    pub id: i64,
    /// The version concerned.
    pub version: Option<i64>,
    /// Its description.
    pub description: Option<String>,
    /// Its script.
    pub script: Option<String>,
    /// What was done: `up`, `down`, `repair`, `baseline`.
    pub action: String,
    /// `success` or `failed`.
    pub outcome: String,
    /// The error of a failed attempt, or what a repair changed.
    pub detail: Option<String>,
    /// The database role.
    pub performed_by: String,
    /// The operating-system user and host that ran blueshift.
    pub client: Option<String>,
    /// When, in UTC.
    pub performed_at: String,
    /// How long it ran.
    pub execution_ms: Option<i64>,
}

/// A history row to append.
#[derive(Debug, Clone)]
pub(crate) struct Entry<'a> {
    pub(crate) version: Option<Version>,
    pub(crate) description: Option<&'a str>,
    pub(crate) script: Option<&'a str>,
    pub(crate) checksum: Option<&'a str>,
    pub(crate) action: Action,
    pub(crate) success: bool,
    pub(crate) detail: Option<String>,
    pub(crate) execution_ms: Option<i64>,
}

/// Whether the bookkeeping tables exist (read-only).
pub(crate) async fn exists(client: &impl GenericClient) -> Result<bool, SqlError> {
    let row = client
        .query_one(
            "SELECT pg_catalog.to_regclass('blueshift.schema_version') IS NOT NULL \
                AND pg_catalog.to_regclass('blueshift.schema_history') IS NOT NULL",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// Creates the bookkeeping tables if they are missing. Call it holding the migration lock.
pub(crate) async fn ensure(client: &impl GenericClient) -> Result<(), SqlError> {
    if !exists(client).await? {
        client.batch_execute(CREATE).await?;
    }
    Ok(())
}

/// The rows of `schema_version`, by version; none when the table does not exist.
pub(crate) async fn applied(
    client: &impl GenericClient,
) -> Result<Vec<AppliedMigration>, SqlError> {
    if !exists(client).await? {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            "SELECT version, description, script, checksum, kind, \
                    pg_catalog.to_char(applied_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS\"Z\"'), \
                    applied_by, execution_ms, success \
               FROM blueshift.schema_version ORDER BY version",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            // The CHECK constraint keeps versions positive.
            let version = Version::new(r.get(0))?;
            let kind: &str = r.get(4);
            Some(AppliedMigration {
                version,
                description: r.get(1),
                script: r.get(2),
                checksum: r.get(3),
                kind: if kind == "baseline" {
                    Kind::Baseline
                } else {
                    Kind::Migration
                },
                applied_at: r.get(5),
                applied_by: r.get(6),
                execution_ms: r.get(7),
                success: r.get(8),
            })
        })
        .collect())
}

/// The audit, oldest first (the last `limit` rows); none when the table does not exist.
pub(crate) async fn history(
    client: &impl GenericClient,
    limit: i64,
) -> Result<Vec<HistoryRow>, SqlError> {
    if !exists(client).await? {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            "SELECT * FROM ( \
               SELECT id, version, description, script, action, outcome, detail, performed_by, \
                      client, \
                      pg_catalog.to_char(performed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS\"Z\"'), \
                      execution_ms \
                 FROM blueshift.schema_history ORDER BY id DESC LIMIT $1) h \
             ORDER BY id",
            &[&limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| HistoryRow {
            id: r.get(0),
            version: r.get(1),
            description: r.get(2),
            script: r.get(3),
            action: r.get(4),
            outcome: r.get(5),
            detail: r.get(6),
            performed_by: r.get(7),
            client: r.get(8),
            performed_at: r.get(9),
            execution_ms: r.get(10),
        })
        .collect())
}

/// A row of `schema_version` to write.
#[derive(Debug, Clone)]
pub(crate) struct NewRow<'a> {
    pub(crate) version: Version,
    pub(crate) description: &'a str,
    pub(crate) script: &'a str,
    pub(crate) checksum: &'a str,
    pub(crate) kind: Kind,
    pub(crate) execution_ms: i64,
    pub(crate) success: bool,
}

/// Records a migration as applied (or, with `success` false, as failed part-way), replacing any
/// row of the same version.
pub(crate) async fn record_applied(
    client: &impl GenericClient,
    row: &NewRow<'_>,
) -> Result<(), SqlError> {
    client
        .execute(
            "INSERT INTO blueshift.schema_version \
                 (version, description, script, checksum, kind, execution_ms, success) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (version) DO UPDATE SET \
                 description = excluded.description, script = excluded.script, \
                 checksum = excluded.checksum, kind = excluded.kind, \
                 applied_at = excluded.applied_at, applied_by = excluded.applied_by, \
                 execution_ms = excluded.execution_ms, success = excluded.success",
            &[
                &row.version.get(),
                &row.description,
                &row.script,
                &row.checksum,
                &row.kind.as_str(),
                &row.execution_ms,
                &row.success,
            ],
        )
        .await?;
    Ok(())
}

/// Marks an applied migration as failed part-way (a down script failed outside a transaction).
pub(crate) async fn mark_failed(
    client: &impl GenericClient,
    version: Version,
) -> Result<(), SqlError> {
    client
        .execute(
            "UPDATE blueshift.schema_version SET success = false WHERE version = $1",
            &[&version.get()],
        )
        .await?;
    Ok(())
}

/// Removes a version's row (after its down script, or by `repair`).
pub(crate) async fn remove(client: &impl GenericClient, version: Version) -> Result<(), SqlError> {
    client
        .execute(
            "DELETE FROM blueshift.schema_version WHERE version = $1",
            &[&version.get()],
        )
        .await?;
    Ok(())
}

/// Realigns a row with its file after a reviewed edit (by `repair`).
pub(crate) async fn realign(
    client: &impl GenericClient,
    version: Version,
    description: &str,
    script: &str,
    checksum: &str,
) -> Result<(), SqlError> {
    client
        .execute(
            "UPDATE blueshift.schema_version \
                SET description = $2, script = $3, checksum = $4 WHERE version = $1",
            &[&version.get(), &description, &script, &checksum],
        )
        .await?;
    Ok(())
}

/// Appends a row to the audit.
pub(crate) async fn append(client: &impl GenericClient, entry: &Entry<'_>) -> Result<(), SqlError> {
    client
        .execute(
            "INSERT INTO blueshift.schema_history \
                 (version, description, script, checksum, action, outcome, detail, client, \
                  execution_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &entry.version.map(Version::get),
                &entry.description,
                &entry.script,
                &entry.checksum,
                &entry.action.as_str(),
                &if entry.success { "success" } else { "failed" },
                &entry.detail,
                &client_identity(),
                &entry.execution_ms,
            ],
        )
        .await?;
    Ok(())
}

/// `user@host` of the operating system running blueshift, for the audit (best effort).
fn client_identity() -> Option<String> {
    let user = ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()));
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty());
    match (user, host) {
        (Some(u), Some(h)) => Some(format!("{u}@{h}")),
        (Some(u), None) => Some(u),
        (None, Some(h)) => Some(format!("@{h}")),
        (None, None) => None,
    }
}
