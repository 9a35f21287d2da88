//! Catalog questions the backfill asks of blue and green: whether the slot exists, whether a
//! table is empty, a table's row filter, row estimate and key.

use tokio_postgres::Client;

use super::BackfillError;
use crate::schema::{quote_ident, QualifiedName};

/// Whether green's `table` has no row.
pub(super) async fn is_empty(green: &Client, table: &QualifiedName) -> Result<bool, BackfillError> {
    let any = green
        .query_one(&format!("SELECT EXISTS (SELECT 1 FROM {table})"), &[])
        .await
        .map_err(|e| BackfillError::green(&format!("check that {table} is empty"), e))?;
    Ok(!any.get::<_, bool>(0))
}

/// Whether `slot` exists on blue.
pub(super) async fn slot_exists(blue: &Client, slot: &str) -> Result<bool, BackfillError> {
    let row = blue
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots WHERE slot_name = $1)",
            &[&slot],
        )
        .await
        .map_err(|e| BackfillError::blue("look up the replication slot", e))?;
    Ok(row.get(0))
}

/// The publication's row filter of `table` (PostgreSQL 15+).
pub(super) async fn row_filter(
    blue: &Client,
    publication: &str,
    table: &QualifiedName,
) -> Result<Option<String>, BackfillError> {
    let version = crate::client::server_version_num(blue)
        .await
        .map_err(|e| BackfillError::blue("read the server version", e))?;
    if version < 150_000 {
        return Ok(None);
    }
    let row = blue
        .query_opt(
            "SELECT rowfilter FROM pg_catalog.pg_publication_tables \
              WHERE pubname = $1 AND schemaname = $2 AND tablename = $3",
            &[&publication, &table.schema, &table.name],
        )
        .await
        .map_err(|e| BackfillError::blue("read the publication's row filter", e))?;
    Ok(row.and_then(|r| r.get(0)))
}

/// Blue's row estimate of `table` (its partitions summed), for the ETA.
pub(super) async fn row_estimate(
    blue: &Client,
    table: &QualifiedName,
) -> Result<u64, BackfillError> {
    let row = blue
        .query_one(
            "SELECT coalesce(pg_catalog.sum(greatest(c.reltuples, 0)), 0)::pg_catalog.int8 \
               FROM pg_catalog.pg_class r \
               JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace \
               JOIN LATERAL (SELECT relid FROM pg_catalog.pg_partition_tree(r.oid) \
                             UNION SELECT r.oid) l ON true \
               JOIN pg_catalog.pg_class c ON c.oid = l.relid \
              WHERE n.nspname = $1 AND r.relname = $2",
            &[&table.schema, &table.name],
        )
        .await
        .map_err(|e| BackfillError::blue("read the row estimate", e))?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}

/// Green's key of `table`, quoted: its primary key, else its replica identity index.
pub(super) async fn green_key(
    green: &Client,
    table: &QualifiedName,
) -> Result<Option<Vec<String>>, BackfillError> {
    let rows = green
        .query(
            "SELECT a.attname::text FROM pg_catalog.pg_index x \
               JOIN pg_catalog.pg_class r ON r.oid = x.indrelid \
               JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace \
               CROSS JOIN LATERAL pg_catalog.unnest(x.indkey::pg_catalog.int2[]) WITH ORDINALITY AS k(attnum, pos) \
               JOIN pg_catalog.pg_attribute a ON a.attrelid = r.oid AND a.attnum = k.attnum \
              WHERE n.nspname = $1 AND r.relname = $2 AND k.pos <= x.indnkeyatts \
                AND x.indexrelid = (SELECT y.indexrelid FROM pg_catalog.pg_index y \
                                     WHERE y.indrelid = r.oid AND y.indisunique \
                                       AND (y.indisprimary OR y.indisreplident) \
                                     ORDER BY y.indisprimary DESC LIMIT 1) \
              ORDER BY k.pos",
            &[&table.schema, &table.name],
        )
        .await
        .map_err(|e| BackfillError::green(&format!("read the key of {table}"), e))?;
    if rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        rows.iter()
            .map(|r| quote_ident(&r.get::<_, String>(0)))
            .collect(),
    ))
}
