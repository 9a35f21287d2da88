//! Green's indexes and constraints on the tables being loaded: read, dropped before the load
//! (their definitions recorded on green in the same transaction), and rebuilt after it, in
//! parallel.
//!
//! Restoring is in two phases. First the keys — the primary key, and the replica identity index
//! with its `REPLICA IDENTITY USING INDEX` — which applying changes needs to find rows (and a
//! resumed copy needs for `ON CONFLICT`). Then the rest: other unique and exclusion
//! constraints, plain indexes, and last the foreign keys, added `NOT VALID` and then validated in
//! a transaction of their own, which checks every row once without blocking writes. A foreign
//! key that was `NOT VALID` (or `NOT ENFORCED`) on green before the load is put back as it was.

use std::collections::VecDeque;
use std::sync::Arc;

use blueshift_decoder::config::ConnectConfig;
use tokio::sync::Mutex;
use tokio_postgres::Client;

use super::state::{self, Ddl};
use super::BackfillError;
use crate::client;
use crate::schema::{quote_ident, QualifiedName};

/// What a recorded definition is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `ALTER TABLE … ADD CONSTRAINT name PRIMARY KEY …`.
    PrimaryKey,
    /// A unique or exclusion constraint.
    Constraint,
    /// `CREATE INDEX …` not backing a constraint.
    Index,
    /// `REPLICA IDENTITY USING INDEX name`.
    ReplicaIdentity,
    /// A foreign key from or to a loaded table.
    ForeignKey,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::PrimaryKey => "primary_key",
            Kind::Constraint => "constraint",
            Kind::Index => "index",
            Kind::ReplicaIdentity => "replica_identity",
            Kind::ForeignKey => "foreign_key",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "primary_key" => Kind::PrimaryKey,
            "constraint" => Kind::Constraint,
            "index" => Kind::Index,
            "replica_identity" => Kind::ReplicaIdentity,
            "foreign_key" => Kind::ForeignKey,
            _ => return None,
        })
    }
}

/// The foreign keys from or to the tables, their primary, unique and exclusion constraints, and
/// their other indexes (not those of partitions attached to a parent's index). `$1` and `$2`
/// are the tables' schemas and names.
const READ: &str = "\
WITH t AS (
  SELECT c.oid FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  JOIN unnest($1::text[], $2::text[]) AS u(s, r) ON u.s = n.nspname AND u.r = c.relname
)
SELECT 'foreign_key', n.nspname::text, r.relname::text, k.conname::text,
       pg_catalog.pg_get_constraintdef(k.oid)
  FROM pg_catalog.pg_constraint k
  JOIN pg_catalog.pg_class r ON r.oid = k.conrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace
 WHERE k.contype = 'f' AND k.conparentid = 0
   AND (k.conrelid IN (SELECT oid FROM t) OR k.confrelid IN (SELECT oid FROM t))
UNION ALL
SELECT CASE k.contype WHEN 'p' THEN 'primary_key' ELSE 'constraint' END,
       n.nspname::text, r.relname::text, k.conname::text, pg_catalog.pg_get_constraintdef(k.oid)
  FROM pg_catalog.pg_constraint k
  JOIN pg_catalog.pg_class r ON r.oid = k.conrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace
 WHERE k.contype IN ('p', 'u', 'x') AND k.conparentid = 0 AND k.conrelid IN (SELECT oid FROM t)
UNION ALL
SELECT 'index', n.nspname::text, r.relname::text, i.relname::text,
       -- A partitioned table's index prints as `ON ONLY parent`: rebuilt that way it would
       -- stay invalid, with no index on the partitions.
       CASE WHEN r.relkind = 'p'
            THEN pg_catalog.regexp_replace(pg_catalog.pg_get_indexdef(i.oid), ' ON ONLY ', ' ON ')
            ELSE pg_catalog.pg_get_indexdef(i.oid) END
  FROM pg_catalog.pg_index x
  JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
  JOIN pg_catalog.pg_class r ON r.oid = x.indrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace
 WHERE x.indrelid IN (SELECT oid FROM t)
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.conindid = x.indexrelid
                    AND k.conrelid = x.indrelid AND k.contype IN ('p', 'u', 'x'))
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_inherits h WHERE h.inhrelid = x.indexrelid)
UNION ALL
SELECT 'replica_identity', n.nspname::text, r.relname::text, i.relname::text, ''
  FROM pg_catalog.pg_index x
  JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
  JOIN pg_catalog.pg_class r ON r.oid = x.indrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace
 WHERE x.indrelid IN (SELECT oid FROM t) AND x.indisreplident";

/// Reads what to drop, in drop order: foreign keys, then constraints, then indexes; the
/// replica identity marker last (it is restored after its index).
pub(crate) async fn read(
    green: &Client,
    tables: &[QualifiedName],
) -> Result<Vec<Ddl>, BackfillError> {
    let schemas: Vec<&str> = tables.iter().map(|t| t.schema.as_str()).collect();
    let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    let rows = green
        .query(READ, &[&schemas, &names])
        .await
        .map_err(|e| BackfillError::green("read green's indexes and constraints", e))?;
    let mut ddl: Vec<Ddl> = rows
        .iter()
        .filter_map(|r| {
            let kind = Kind::parse(r.get(0))?;
            Some(Ddl {
                table: QualifiedName::new(r.get::<_, String>(1), r.get::<_, String>(2)),
                ordinal: 0,
                kind,
                name: r.get(3),
                definition: r.get(4),
                restored: false,
            })
        })
        .collect();
    let rank = |k: Kind| match k {
        Kind::ForeignKey => 0,
        Kind::Constraint => 1,
        Kind::PrimaryKey => 2,
        Kind::Index => 3,
        Kind::ReplicaIdentity => 4,
    };
    ddl.sort_by(|a, b| (rank(a.kind), &a.table, &a.name).cmp(&(rank(b.kind), &b.table, &b.name)));
    // The same foreign key can be found from both of its tables.
    ddl.dedup_by(|a, b| a.kind == b.kind && a.table == b.table && a.name == b.name);
    for (n, d) in ddl.iter_mut().enumerate() {
        d.ordinal = i32::try_from(n).unwrap_or(i32::MAX);
    }
    Ok(ddl)
}

/// Drops what `read` found and records it, in one transaction: a crash leaves either both or
/// neither.
pub(crate) async fn drop_all(
    green: &mut Client,
    slot: &str,
    ddl: &[Ddl],
) -> Result<(), BackfillError> {
    let tx = green
        .transaction()
        .await
        .map_err(|e| BackfillError::green("open a transaction", e))?;
    for d in ddl {
        let sql = match d.kind {
            Kind::ForeignKey | Kind::Constraint | Kind::PrimaryKey => format!(
                "ALTER TABLE {} DROP CONSTRAINT {}",
                d.table,
                quote_ident(&d.name)
            ),
            Kind::Index => format!(
                "DROP INDEX {}.{}",
                quote_ident(&d.table.schema),
                quote_ident(&d.name)
            ),
            Kind::ReplicaIdentity => continue,
        };
        tx.batch_execute(&sql).await.map_err(|e| {
            BackfillError::green(
                &format!(
                    "drop {} {} on {}",
                    d.kind.as_str(),
                    quote_ident(&d.name),
                    d.table
                ),
                e,
            )
        })?;
    }
    state::add_ddl(&tx, slot, ddl).await?;
    tx.commit()
        .await
        .map_err(|e| BackfillError::green("commit the dropped indexes", e))?;
    tracing::info!(
        dropped = ddl.len(),
        "dropped green's indexes and constraints for the load"
    );
    Ok(())
}

/// Which definitions a phase restores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Primary keys and the replica identity index.
    Keys,
    /// Everything else.
    Rest,
}

/// The definitions of the keys phase: primary keys, replica identity markers and the indexes
/// or constraints they name.
fn in_phase(ddl: &[Ddl], d: &Ddl, phase: Phase) -> bool {
    let key = match d.kind {
        Kind::PrimaryKey | Kind::ReplicaIdentity => true,
        Kind::Constraint | Kind::Index => ddl
            .iter()
            .any(|r| r.kind == Kind::ReplicaIdentity && r.table == d.table && r.name == d.name),
        Kind::ForeignKey => false,
    };
    key == (phase == Phase::Keys)
}

/// Restores the unrestored definitions of `phase` (of `only` tables, when given) with `workers`
/// connections to green; each restore and its record commit together.
pub(crate) async fn restore(
    target: &ConnectConfig,
    slot: &str,
    phase: Phase,
    only: Option<&[QualifiedName]>,
    workers: usize,
    maintenance_work_mem: &str,
) -> Result<usize, BackfillError> {
    let (green, conn) = client::connect(target, "blueshift backfill")
        .await
        .map_err(BackfillError::Connect)?;
    let all = state::ddl(&green, slot).await;
    client::close(green, conn).await;
    let all = all?;
    let todo: Vec<Ddl> = all
        .iter()
        .filter(|d| !d.restored && in_phase(&all, d, phase))
        .filter(|d| only.is_none_or(|tables| tables.contains(&d.table)))
        .cloned()
        .collect();
    if todo.is_empty() {
        return Ok(0);
    }
    // Indexes and constraints in parallel; then replica identity markers (their index exists
    // by then); then foreign keys (their referenced keys exist by then).
    let waves: [&[Kind]; 3] = [
        &[Kind::PrimaryKey, Kind::Constraint, Kind::Index],
        &[Kind::ReplicaIdentity],
        &[Kind::ForeignKey],
    ];
    let mut restored = 0;
    for wave in waves {
        let queue: VecDeque<Ddl> = todo
            .iter()
            .filter(|d| wave.contains(&d.kind))
            .cloned()
            .collect();
        if queue.is_empty() {
            continue;
        }
        let n = queue.len();
        let queue = Arc::new(Mutex::new(queue));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..workers.clamp(1, n) {
            let queue = Arc::clone(&queue);
            let target = target.clone();
            let slot = slot.to_owned();
            let mem = maintenance_work_mem.to_owned();
            tasks.spawn(async move {
                let (mut green, conn) = client::connect(&target, "blueshift backfill")
                    .await
                    .map_err(BackfillError::Connect)?;
                green
                    .execute(
                        "SELECT pg_catalog.set_config('maintenance_work_mem', $1, false)",
                        &[&mem],
                    )
                    .await
                    .map_err(|e| BackfillError::green("set maintenance_work_mem", e))?;
                loop {
                    let Some(d) = queue.lock().await.pop_front() else {
                        break;
                    };
                    restore_one(&mut green, &slot, &d).await?;
                }
                client::close(green, conn).await;
                Ok::<(), BackfillError>(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.map_err(BackfillError::Task)??;
        }
        restored += n;
    }
    tracing::info!(phase = ?phase, restored, "restored green's indexes and constraints");
    Ok(restored)
}

/// Restores one definition, retrying a deadlock between two foreign keys a few times.
async fn restore_one(green: &mut Client, slot: &str, d: &Ddl) -> Result<(), BackfillError> {
    let started = std::time::Instant::now();
    let mut attempt = 0;
    loop {
        attempt += 1;
        match try_restore(green, slot, d).await {
            Err(BackfillError::Green { source, .. })
                if attempt < 5 && source.sqlstate() == Some("40P01") =>
            {
                tracing::debug!(name = %d.name, "deadlock while restoring; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(100 * attempt)).await;
            }
            other => {
                tracing::debug!(name = %d.name, kind = d.kind.as_str(), elapsed = ?started.elapsed(), "restored");
                return other;
            }
        }
    }
}

async fn try_restore(green: &mut Client, slot: &str, d: &Ddl) -> Result<(), BackfillError> {
    let name = quote_ident(&d.name);
    let sql = match d.kind {
        Kind::ForeignKey => return restore_foreign_key(green, slot, d).await,
        Kind::PrimaryKey | Kind::Constraint => format!(
            "ALTER TABLE {} ADD CONSTRAINT {name} {}",
            d.table, d.definition
        ),
        Kind::Index => d.definition.clone(),
        Kind::ReplicaIdentity => format!(
            "ALTER TABLE {} REPLICA IDENTITY USING INDEX {name}",
            d.table
        ),
    };
    run_and_record(green, slot, d, Some(&sql)).await
}

/// Runs `sql` (if any) and records `d` restored, in one transaction.
async fn run_and_record(
    green: &mut Client,
    slot: &str,
    d: &Ddl,
    sql: Option<&str>,
) -> Result<(), BackfillError> {
    let what = || {
        format!(
            "restore {} {} on {}",
            d.kind.as_str(),
            quote_ident(&d.name),
            d.table
        )
    };
    let tx = green
        .transaction()
        .await
        .map_err(|e| BackfillError::green(&what(), e))?;
    if let Some(sql) = sql {
        tx.batch_execute(sql)
            .await
            .map_err(|e| BackfillError::green(&what(), e))?;
    }
    state::ddl_restored(&tx, slot, d.ordinal).await?;
    tx.commit()
        .await
        .map_err(|e| BackfillError::green(&what(), e))
}

/// A foreign key: added `NOT VALID` (a short lock, no scan), then validated in a transaction of
/// its own, which scans without blocking writes. Where `NOT VALID` is not allowed (a
/// partitioned referencing table before PostgreSQL 18) it is added validated. One that was
/// `NOT VALID` or `NOT ENFORCED` on green before the load is put back as it was. A restart
/// between the two steps finds the constraint there and only validates it.
async fn restore_foreign_key(green: &mut Client, slot: &str, d: &Ddl) -> Result<(), BackfillError> {
    let name = quote_ident(&d.name);
    let what = || format!("restore foreign key {name} on {}", d.table);
    let exists = green
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint \
              WHERE conname = $1 AND conrelid = $2::text::regclass)",
            &[&d.name, &d.table.to_string()],
        )
        .await
        .map_err(|e| BackfillError::green(&what(), e))?
        .get::<_, bool>(0);
    let as_it_was = d.definition.contains("NOT VALID") || d.definition.contains("NOT ENFORCED");
    let add = format!(
        "ALTER TABLE {} ADD CONSTRAINT {name} {}",
        d.table, d.definition
    );
    if as_it_was {
        return run_and_record(green, slot, d, (!exists).then_some(add.as_str())).await;
    }
    if !exists {
        match green.batch_execute(&format!("{add} NOT VALID")).await {
            Ok(()) => {}
            // feature_not_supported: NOT VALID on a partitioned table (PostgreSQL 14-17).
            Err(e) if e.code().is_some_and(|c| c.code() == "0A000") => {
                return run_and_record(green, slot, d, Some(&add)).await;
            }
            Err(e) => return Err(BackfillError::green(&what(), e)),
        }
    }
    let validate = format!("ALTER TABLE {} VALIDATE CONSTRAINT {name}", d.table);
    run_and_record(green, slot, d, Some(&validate)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        for k in [
            Kind::PrimaryKey,
            Kind::Constraint,
            Kind::Index,
            Kind::ReplicaIdentity,
            Kind::ForeignKey,
        ] {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        assert_eq!(Kind::parse("trigger"), None);
    }

    #[test]
    fn the_replica_identity_index_is_a_key() {
        let t = QualifiedName::new("public", "t");
        let d = |kind, name: &str| Ddl {
            table: t.clone(),
            ordinal: 0,
            kind,
            name: name.to_owned(),
            definition: String::new(),
            restored: false,
        };
        let all = vec![
            d(Kind::Index, "t_ri"),
            d(Kind::Index, "t_other"),
            d(Kind::ReplicaIdentity, "t_ri"),
            d(Kind::PrimaryKey, "t_pkey"),
            d(Kind::ForeignKey, "t_fk"),
        ];
        let keys: Vec<&str> = all
            .iter()
            .filter(|x| in_phase(&all, x, Phase::Keys))
            .map(|x| x.name.as_str())
            .collect();
        assert_eq!(keys, ["t_ri", "t_ri", "t_pkey"]);
        let rest: Vec<&str> = all
            .iter()
            .filter(|x| in_phase(&all, x, Phase::Rest))
            .map(|x| x.name.as_str())
            .collect();
        assert_eq!(rest, ["t_other", "t_fk"]);
    }
}
