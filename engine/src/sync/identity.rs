//! Whether each loaded table on blue is still the table green was loaded from.
//!
//! Green holds a table's rows as of the copy (or the declaration) plus every change the stream
//! brought since. Two things on blue break that silently, because the stream just carries on:
//!
//! - **the table was dropped and created again under the same name**: its changes arrive under a
//!   new relation OID, and applying them on top of the old table's rows makes green hold rows blue
//!   no longer has;
//! - **the table left the publication** (`ALTER PUBLICATION … DROP TABLE`, or its schema
//!   dropped from a `TABLES IN SCHEMA` publication): pgoutput stops sending its changes. Added
//!   back later, it streams again, and every change made in between is missing on green.
//!
//! So green records, per loaded table, blue's relation OID and a *membership token*: how the
//! publication holds the table — `all` for `FOR ALL TABLES`, else the OIDs of the
//! `pg_publication_rel` rows naming it or an ancestor partition (`r<oid>`) and, from
//! PostgreSQL 15, of the `pg_publication_namespace` rows of their schemas (`n<oid>`). Those
//! rows are created afresh when a table or schema is added, so a removal and a re-addition
//! change the token even when blueshift never saw the table out of the publication.
//!
//! Checked at every start before streaming (a table without a record gets one: the first start
//! after its copy), on every `Relation` message of a loaded table (its OID, see
//! `sync::loaded`), and every few seconds while sync runs ([`watch`]). On a mismatch, green
//! forgets that it holds the table (its rows stay) and sync stops naming the table, the cause and
//! the fix: empty the table on green and start sync again, which copies it afresh as a table
//! added to the publication (and refuses while green's table still has rows).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::time::Duration;

use tokio_postgres::{Client, GenericClient};

use super::{SyncConfig, SyncError};
use crate::backfill;
use crate::client;
use crate::schema::QualifiedName;

/// How often a running sync compares the identities again.
const EVERY: Duration = Duration::from_secs(5);

const DDL: &str = "CREATE SCHEMA IF NOT EXISTS blueshift; \
    CREATE TABLE IF NOT EXISTS blueshift.source_identity (\
        slot text NOT NULL, \
        schema_name text NOT NULL, \
        table_name text NOT NULL, \
        relid oid NOT NULL, \
        membership text NOT NULL, \
        recorded_at timestamptz NOT NULL DEFAULT pg_catalog.now(), \
        PRIMARY KEY (slot, schema_name, table_name))";

/// A table on blue as the publication holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    /// `pg_class.oid`.
    pub(crate) relid: u32,
    /// How the publication holds it (see the module doc); empty when it does not.
    pub(crate) membership: String,
}

/// Why a loaded table is no longer the one green was loaded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// No table of that name on blue any more.
    Dropped,
    /// A table of that name with another OID: dropped and created again.
    Recreated,
    /// The table is not in the publication any more.
    Unpublished,
    /// The table (or its schema) left the publication and came back: changes in between were
    /// not streamed.
    Republished,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Change::Dropped => "was dropped on blue",
            Change::Recreated => {
                "was dropped and created again on blue (another relation OID): green still holds the old table's rows"
            }
            Change::Unpublished => {
                "is no longer in the publication: its changes are not streamed, so green's copy stopped following blue"
            }
            Change::Republished => {
                "left the publication and was added back: the changes made in between were not streamed"
            }
        })
    }
}

/// The tables that changed, for the error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed(pub Vec<(QualifiedName, Change)>);

impl fmt::Display for Changed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, (table, change)) in self.0.iter().enumerate() {
            if n > 0 {
                f.write_str("; ")?;
            }
            write!(f, "table {table} {change}")?;
        }
        Ok(())
    }
}

/// Compares `recorded` with `current`.
pub(crate) fn compare(recorded: &Identity, current: Option<&Identity>) -> Option<Change> {
    match current {
        None => Some(Change::Dropped),
        Some(c) if c.relid != recorded.relid => Some(Change::Recreated),
        Some(c) if c.membership.is_empty() => Some(Change::Unpublished),
        Some(c) if c.membership != recorded.membership => Some(Change::Republished),
        Some(_) => None,
    }
}

/// The identities on blue of `tables` in `publication`; a table absent from the result does not
/// exist on blue.
pub(crate) async fn current(
    blue: &impl GenericClient,
    publication: &str,
    tables: &BTreeSet<QualifiedName>,
) -> Result<HashMap<QualifiedName, Identity>, tokio_postgres::Error> {
    let version = crate::client::server_version_num(blue).await?;
    // Schemas in publications exist from PostgreSQL 15. `pg_partition_ancestors` lists nothing
    // for a table that is not a partition, hence the table itself beside it.
    let schemas = if version >= 150_000 {
        "(SELECT pg_catalog.string_agg('n' || pn.oid::pg_catalog.text, ',' ORDER BY pn.oid) \
            FROM pg_catalog.pg_publication_namespace pn \
           WHERE pn.pnpubid = p.oid AND (pn.pnnspid = c.relnamespace OR pn.pnnspid IN ( \
                 SELECT ac.relnamespace FROM pg_catalog.pg_class ac \
                  WHERE ac.oid IN (SELECT a.relid FROM pg_catalog.pg_partition_ancestors(c.oid) a))))"
    } else {
        "NULL"
    };
    let sql = format!(
        "SELECT t.s, t.n, c.oid::pg_catalog.int8, \
                CASE WHEN p.oid IS NULL THEN '' WHEN p.puballtables THEN 'all' \
                ELSE pg_catalog.concat_ws(',', \
                  (SELECT pg_catalog.string_agg('r' || pr.oid::pg_catalog.text, ',' ORDER BY pr.oid) \
                     FROM pg_catalog.pg_publication_rel pr \
                    WHERE pr.prpubid = p.oid \
                      AND (pr.prrelid = c.oid OR pr.prrelid IN ( \
                           SELECT a.relid FROM pg_catalog.pg_partition_ancestors(c.oid) a))), \
                  {schemas}) END \
           FROM ROWS FROM (pg_catalog.unnest($2::pg_catalog.text[]), \
                           pg_catalog.unnest($3::pg_catalog.text[])) AS t(s, n) \
           JOIN pg_catalog.pg_namespace ns ON ns.nspname = t.s \
           JOIN pg_catalog.pg_class c ON c.relnamespace = ns.oid AND c.relname = t.n \
           LEFT JOIN pg_catalog.pg_publication p ON p.pubname = $1"
    );
    let (schemas, names): (Vec<&str>, Vec<&str>) = tables
        .iter()
        .map(|t| (t.schema.as_str(), t.name.as_str()))
        .unzip();
    let rows = blue.query(&sql, &[&publication, &schemas, &names]).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let relid: i64 = r.get(2);
            (
                QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)),
                Identity {
                    relid: u32::try_from(relid).unwrap_or(0),
                    membership: r.get(3),
                },
            )
        })
        .collect())
}

async fn recorded(
    green: &impl GenericClient,
    slot: &str,
) -> Result<HashMap<QualifiedName, Identity>, tokio_postgres::Error> {
    let rows = green
        .query(
            "SELECT schema_name, table_name, relid::pg_catalog.int8, membership \
               FROM blueshift.source_identity WHERE slot = $1",
            &[&slot],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let relid: i64 = r.get(2);
            (
                QualifiedName::new(r.get::<_, String>(0), r.get::<_, String>(1)),
                Identity {
                    relid: u32::try_from(relid).unwrap_or(0),
                    membership: r.get(3),
                },
            )
        })
        .collect())
}

/// Green forgets that it holds `tables` (their rows stay) and their identities, in one
/// transaction: the next start copies them again as tables added to the publication.
pub(crate) async fn forget(
    green: &mut Client,
    slot: &str,
    tables: &[QualifiedName],
) -> Result<(), tokio_postgres::Error> {
    let tx = green.transaction().await?;
    for table in tables {
        backfill::forget_loaded(&tx, slot, table).await?;
        tx.execute(
            "DELETE FROM blueshift.source_identity \
              WHERE slot = $1 AND schema_name = $2 AND table_name = $3",
            &[&slot, &table.schema, &table.name],
        )
        .await?;
    }
    tx.commit().await
}

fn green_error(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> SyncError {
    move |source| SyncError::Identity {
        what,
        side: "green",
        source,
    }
}

fn blue_error(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> SyncError {
    move |source| SyncError::Identity {
        what,
        side: "blue",
        source,
    }
}

/// At start, before streaming: records the identity of each loaded table that has none, and
/// compares the others. Returns the loaded tables' identities (their OIDs for the stream's
/// `Relation` messages, all of it for [`watch`]), or — green having forgotten the tables that
/// changed — the error naming them.
pub(crate) async fn check_at_start(
    config: &SyncConfig,
    green: &mut Client,
    tables: &BTreeSet<QualifiedName>,
) -> Result<HashMap<QualifiedName, Identity>, SyncError> {
    if tables.is_empty() {
        return Ok(HashMap::new());
    }
    let (blue, conn) = client::connect(&config.source, "blueshift sync")
        .await
        .map_err(|source| SyncError::Sql {
            what: format!("could not connect to blue ({})", config.source),
            source,
        })?;
    let now = current(&blue, &config.publication, tables).await;
    client::close(blue, conn).await;
    let now = now.map_err(blue_error("read the loaded tables' identities"))?;
    green
        .batch_execute(DDL)
        .await
        .map_err(green_error("create blueshift.source_identity"))?;
    let before = recorded(&*green, &config.slot)
        .await
        .map_err(green_error("read blueshift.source_identity"))?;
    let mut changed = Vec::new();
    let mut identities = HashMap::new();
    for table in tables {
        let found = now.get(table);
        match before.get(table) {
            Some(recorded) => match compare(recorded, found) {
                Some(change) => changed.push((table.clone(), change)),
                None => {
                    identities.insert(table.clone(), recorded.clone());
                }
            },
            None => match found {
                Some(identity) if !identity.membership.is_empty() => {
                    green
                        .execute(
                            "INSERT INTO blueshift.source_identity \
                             (slot, schema_name, table_name, relid, membership) \
                             VALUES ($1, $2, $3, $4::pg_catalog.int8::pg_catalog.oid, $5) \
                             ON CONFLICT DO NOTHING",
                            &[
                                &config.slot,
                                &table.schema,
                                &table.name,
                                &i64::from(identity.relid),
                                &identity.membership,
                            ],
                        )
                        .await
                        .map_err(green_error("record a loaded table's identity"))?;
                    identities.insert(table.clone(), identity.clone());
                }
                Some(_) => changed.push((table.clone(), Change::Unpublished)),
                None => changed.push((table.clone(), Change::Dropped)),
            },
        }
    }
    if changed.is_empty() {
        return Ok(identities);
    }
    Err(forget_and_fail(green, &config.slot, &config.publication, changed).await)
}

/// Forgets `changed` on green and returns the error that names them.
pub(crate) async fn forget_and_fail(
    green: &mut Client,
    slot: &str,
    publication: &str,
    changed: Vec<(QualifiedName, Change)>,
) -> SyncError {
    let tables: Vec<QualifiedName> = changed.iter().map(|(t, _)| t.clone()).collect();
    if let Err(e) = forget(green, slot, &tables).await {
        return green_error("forget the tables that changed on blue")(e);
    }
    SyncError::SourceChanged {
        changed: Changed(changed),
        publication: publication.to_owned(),
    }
}

/// While sync runs: compares the identities every few seconds (a table leaving the publication
/// and coming back sends nothing on the stream). Returns only on a mismatch, green having
/// forgotten the tables; a failed query is logged and tried again (the stream notices a lost
/// server by itself).
pub(crate) async fn watch(
    config: SyncConfig,
    expected: HashMap<QualifiedName, Identity>,
) -> SyncError {
    let tables: BTreeSet<QualifiedName> = expected.keys().cloned().collect();
    if tables.is_empty() {
        return std::future::pending().await;
    }
    let mut tick = tokio::time::interval(EVERY);
    tick.tick().await;
    let mut blue: Option<(Client, tokio::task::JoinHandle<()>)> = None;
    loop {
        tick.tick().await;
        if blue.as_ref().is_none_or(|(c, _)| c.is_closed()) {
            blue = client::connect(&config.source, "blueshift sync").await.ok();
        }
        let Some((client, _)) = &blue else { continue };
        let now = match current(client, &config.publication, &tables).await {
            Ok(now) => now,
            Err(e) => {
                tracing::debug!(error = %e, "could not read the loaded tables' identities on blue");
                continue;
            }
        };
        let changed: Vec<(QualifiedName, Change)> = tables
            .iter()
            .filter_map(|t| {
                let recorded = expected.get(t)?;
                compare(recorded, now.get(t)).map(|c| (t.clone(), c))
            })
            .collect();
        if changed.is_empty() {
            continue;
        }
        if let Some((client, conn)) = blue.take() {
            client::close(client, conn).await;
        }
        let mut green = match client::connect(&config.target, "blueshift sync").await {
            Ok(green) => green,
            Err(source) => {
                return SyncError::Sql {
                    what: format!("could not connect to green ({})", config.target),
                    source,
                }
            }
        };
        let e = forget_and_fail(&mut green.0, &config.slot, &config.publication, changed).await;
        client::close(green.0, green.1).await;
        return e;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(relid: u32, membership: &str) -> Identity {
        Identity {
            relid,
            membership: membership.into(),
        }
    }

    #[test]
    fn every_change_of_identity_is_named() {
        let recorded = id(16384, "r16390");
        assert_eq!(compare(&recorded, Some(&id(16384, "r16390"))), None);
        assert_eq!(compare(&recorded, None), Some(Change::Dropped));
        assert_eq!(
            compare(&recorded, Some(&id(16400, "r16401"))),
            Some(Change::Recreated)
        );
        assert_eq!(
            compare(&recorded, Some(&id(16384, ""))),
            Some(Change::Unpublished)
        );
        assert_eq!(
            compare(&recorded, Some(&id(16384, "r16420"))),
            Some(Change::Republished)
        );
        assert_eq!(
            compare(&id(1, "all"), Some(&id(1, "all"))),
            None,
            "FOR ALL TABLES holds every table the same way"
        );
    }
}
